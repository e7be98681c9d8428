"""Adaptive Misinformation: the paper's loss, synthetic outliers, and the served answers of a
small trained defence (a 4-epoch LeNet-5 victim on mnist5k, detector 2 epochs, misinformation
model 4 epochs: about 15 s in total on one thread)."""

import pytest
import torch
import torch.nn.functional as F

from engines.artifacts import ArtifactStore
from engines.data.base import ImageSet
from engines.defenders import DEFENDERS, DefenderContext
from engines.defenders._outliers import OUTLIER_KINDS, synthesize_outliers
from engines.defenders.adaptive_misinformation import _ComplementLogits
from engines.errors import ArenaError
from engines.models import build_model
from engines.spec import MatchSpec
from engines.training import TrainConfig, fit

CPU = torch.device("cpu")
TRAINED = {"oe_epochs": 2, "misinfo_epochs": 4}
CLEAN_TOLERANCE = 0.03  # served clean accuracy at the default tau vs the victim's (points / 100)


# ----------------------------------------------------------------------------- pieces
def test_complement_wrapper_gives_the_papers_loss_up_to_a_constant():
    torch.manual_seed(0)
    base = torch.nn.Linear(6, 4)
    x, y = torch.randn(5, 6), torch.tensor([0, 1, 2, 3, 0])
    p = torch.softmax(base(x), 1)
    paper = -torch.log(1 - p[torch.arange(5), y] + 1e-7)
    constant = torch.log((1 - p + 1e-7).sum(1))  # = log(C - 1 + C e-7)
    got = F.cross_entropy(_ComplementLogits(base)(x), y, reduction="none")
    assert torch.allclose(got, paper + constant, atol=1e-6)
    assert torch.allclose(constant, torch.full((5,), torch.log(torch.tensor(3 + 4e-7)).item()), atol=1e-6)


def test_outliers_are_deterministic_uint8_and_of_every_kind():
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(20, 1, 32, 32, generator=g) * 255).to(torch.uint8)
    source = ImageSet(images, torch.arange(20) % 4)
    first = synthesize_outliers(source, 10, torch.Generator().manual_seed(3), OUTLIER_KINDS)
    again = synthesize_outliers(source, 10, torch.Generator().manual_seed(3), OUTLIER_KINDS)
    assert first.dtype == torch.uint8 and first.shape == (10, 1, 32, 32)
    assert torch.equal(first, again)
    # shuffled patches keep a source image's pixels, rearranged
    patches = synthesize_outliers(source, 4, torch.Generator().manual_seed(5), ("patches",))
    for img in patches:
        hits = [torch.equal(img.flatten().sort().values, s.flatten().sort().values) for s in images]
        assert any(hits) and not any(torch.equal(img, s) for s in images)
    assert len(synthesize_outliers(source, 0, g)) == 0


def test_bad_parameters_are_one_line_errors():
    for params in ({"tau": 1.5}, {"tau": -0.1}, {"nu": 0}, {"outliers": ["gaussian"]}, {"unknown": 1}):
        with pytest.raises(ArenaError):
            MatchSpec(defender="adaptive-misinformation", defender_params=params).resolve()


# ----------------------------------------------------------------------------- a trained defence
@pytest.fixture(scope="module")
def defence(mnist5k, tmp_path_factory):
    torch.manual_seed(0)
    victim = build_model("lenet5", 1, 10, mnist5k.mean, mnist5k.std)
    cfg = TrainConfig(epochs=4, batch_size=64, lr=0.05)
    fit(
        victim, mnist5k.defender_train.images, mnist5k.defender_train.labels, cfg, CPU, torch.Generator().manual_seed(0)
    )
    victim.eval()
    store = ArtifactStore(tmp_path_factory.mktemp("am-cache"))
    cls = DEFENDERS.get("adaptive-misinformation")

    def make(**params):
        ctx = DefenderContext(
            victim=victim, victim_key={"arch": "lenet5", "test": 1}, splits=mnist5k, device=CPU, store=store, seed=0
        )
        defender = cls(cls.Params.model_validate({**TRAINED, **params}), ctx)
        defender.info = defender.prepare()
        return defender

    return victim, make


def _noise(n=256):
    return torch.rand(n, 1, 32, 32, generator=torch.Generator().manual_seed(11))


def test_in_distribution_images_mostly_get_the_honest_answer(defence, mnist5k):
    victim, make = defence
    defender = make()
    x = mnist5k.test.floats()
    with torch.inference_mode():
        alpha = defender.ood_alpha(x)
        served, honest = defender.serve(x), torch.softmax(victim(x), 1)
    untouched = alpha == 0
    assert untouched.float().mean() >= 0.9
    assert torch.equal(served[untouched], honest[untouched])  # bit for bit


def test_noise_images_mostly_get_misinformation(defence):
    victim, make = defence
    defender = make()
    x = _noise()
    with torch.inference_mode():
        alpha = defender.ood_alpha(x)
        served, honest = defender.serve(x), torch.softmax(victim(x), 1)
    assert (alpha > 0.5).float().mean() >= 0.9
    assert (served.argmax(1) != honest.argmax(1)).float().mean() >= 0.8
    assert torch.allclose(served.sum(1), torch.ones(len(x)), atol=1e-5) and (served >= 0).all()


def test_misinformation_model_avoids_the_true_class(defence, mnist5k):
    _, make = defence
    defender = make()
    with torch.inference_mode():
        p = torch.softmax(defender.misinfo(mnist5k.defender_val.floats()), 1)
    assert p[torch.arange(len(p)), mnist5k.defender_val.labels].mean() < 0.1
    assert defender.info["misinfo_val_accuracy"] < 0.1


def test_tau_extremes(defence, mnist5k):
    victim, make = defence
    x = torch.cat([mnist5k.test.floats()[:256], _noise()])
    with torch.inference_mode():
        honest = torch.softmax(victim(x), 1)
        off = make(**DEFENDERS.get("adaptive-misinformation").zero_protection_params)
        assert torch.equal(off.serve(x), honest)
        full = make(tau=1.0)
        assert (full.ood_alpha(x) >= 0.5).all()  # every max softmax is <= 1 = tau
        assert (full.serve(x).argmax(1) != honest.argmax(1)).float().mean() >= 0.8
    assert full.info["reused"]  # tau is a serving setting: the artifact is shared


def test_served_clean_accuracy_stays_near_the_victims(defence, mnist5k):
    victim, make = defence
    defender = make()
    x, y = mnist5k.test.floats(), mnist5k.test.labels
    with torch.inference_mode():
        victim_acc = (victim(x).argmax(1) == y).float().mean().item()
        served_acc = (defender.serve(x).argmax(1) == y).float().mean().item()
    assert served_acc >= victim_acc - CLEAN_TOLERANCE


def test_answers_do_not_depend_on_the_batch(defence, mnist5k):
    _, make = defence
    defender = make(tau=0.9)
    x = torch.cat([mnist5k.test.floats()[:24], _noise(24)])[
        torch.randperm(48, generator=torch.Generator().manual_seed(1))
    ]
    with torch.inference_mode():
        whole = defender.serve(x)
        parts = torch.cat([defender.serve(x[i : i + 5]) for i in range(0, 48, 5)])
    assert torch.allclose(whole, parts, atol=1e-6)


# ----------------------------------------------------------------------------- a real outlier set
class _BrightDigits:
    """A stand-in torchvision set (registered for these tests only): mnist5k's digits, inverted."""

    loads = 0

    def __init__(self, source):
        self.source = source

    def load(self, data_root, download, cache_root):
        type(self).loads += 1
        s = self.source
        flip = ImageSet(255 - s.defender_train.images, s.defender_train.labels)
        return s.__class__(**{**s.__dict__, "name": "test-inverted", "defender_train": flip})


def test_a_named_outlier_set_replaces_the_synthetic_outliers(defence, mnist5k, monkeypatch):
    from engines.data import DATASETS
    from engines.defenders import _outliers

    monkeypatch.setitem(DATASETS._entries, "test-inverted", lambda: _BrightDigits(mnist5k))
    monkeypatch.setattr(_outliers, "synthesize_outliers", None)  # must not be called
    _, make = defence
    served = make(outlier_dataset="test-inverted", oe_epochs=1, misinfo_epochs=1)
    assert _BrightDigits.loads == 1 and served.info["outliers"] == len(mnist5k.defender_train)
    inverted = 255 - mnist5k.test.images[:64]
    assert served.serve(inverted.float().div(255)).shape == (64, 10)


def test_a_missing_or_wrong_outlier_set_is_refused_before_anything_is_written(cli, tmp_path):
    from arena.runner import validate_batch
    from engines.match import MatchEnvironment

    spec = MatchSpec(device="cpu", defender="adaptive-misinformation", defender_params={"outlier_dataset": "kmnist"})
    env = MatchEnvironment(data_root=str(tmp_path / "no-data"), cache_root=str(tmp_path / "cache"))
    with pytest.raises(ArenaError) as caught:
        validate_batch([spec.resolve()], env)
    assert "kmnist" in str(caught.value) and caught.value.field == "defender_params"
    db = tmp_path / "never.db"
    args = ["-d", "adaptive-misinformation", "--data-root", tmp_path / "no-data", "--db", db, "--device", "cpu"]
    result = cli("run", *args, "--config", _params_file(tmp_path, 'outlier_dataset = "kmnist"'))
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1 and not db.exists()
    with pytest.raises(ArenaError, match="unknown data set"):
        MatchSpec(defender="adaptive-misinformation", defender_params={"outlier_dataset": "nowhere"}).resolve()


def _params_file(tmp_path, line: str):
    path = tmp_path / "am.toml"
    path.write_text(f"[defender_params]\n{line}\n")
    return path
