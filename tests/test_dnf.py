"""DNF: exit points, the early-exit objective, exit choice, and a small trained defence."""

import pytest
import torch
import torch.nn.functional as F

from engines.defenders.dnf import OUTLIER_LABEL, EarlyExitNetwork, choose_exit, dnf_loss, entropy, exit_points
from engines.errors import ArenaError
from engines.models import build_model
from engines.spec import MatchSpec
from tests.test_defence_properties import Arena, serve

TRAINED = {"epochs": 4, "train_limit": 1200, "batch_size": 64}
SMALL_VICTIM = {"arch": None, "train": {"epochs": 6, "batch_size": 128, "lr": 0.05}}  # ~88 % test accuracy


def test_exits_sit_after_each_stage():
    lenet = build_model("lenet5", 1, 10, (0.5,), (0.25,))
    assert len(exit_points(lenet)) == 3
    resnet = build_model("resnet34_8x", 3, 10, (0.5,) * 3, (0.25,) * 3)
    net = EarlyExitNetwork(resnet, 10, (3, 32, 32))
    assert [h.net[0].in_features for h in net.heads] == [64, 128, 256, 512]
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        out = net.eval()(x)
        assert out.shape == (2, 5, 10)
        assert torch.allclose(out[:, -1], resnet.eval()(x), atol=1e-5)  # the full path is the victim
    with pytest.raises(ArenaError, match="dnf"):
        exit_points(build_model("mobilenetv2", 3, 10, (0.5,) * 3, (0.25,) * 3))


def test_loss_rewards_uncertain_early_exits_in_distribution_and_confident_ones_outside():
    torch.manual_seed(0)
    logits = torch.randn(5, 4, 10)
    labels = torch.tensor([3, OUTLIER_LABEL, 1, OUTLIER_LABEL, 0])
    inside = labels != OUTLIER_LABEL
    early_in, early_out = logits[inside, :3], logits[~inside, :3]
    expected = sum(
        F.cross_entropy(early_in[:, e], labels[inside]) - 0.1 * entropy(early_in[:, e]).mean() for e in range(3)
    )
    self_labels = early_out[:, 0].argmax(1)
    expected = expected + 2.0 * sum(
        F.cross_entropy(early_out[:, e], self_labels) + 0.1 * entropy(early_out[:, e]).mean() for e in range(3)
    )
    assert torch.allclose(dnf_loss(0.1, 2.0)(logits, labels), expected, atol=1e-5)


def test_the_first_confident_exit_answers():
    sure, unsure = torch.tensor([10.0] + [0.0] * 9), torch.zeros(10)
    logits = torch.stack(
        [torch.stack([unsure, sure, sure]), torch.stack([sure, unsure, unsure]), torch.stack([unsure, unsure, sure])]
    )
    assert choose_exit(logits, [0.9, 0.9]).tolist() == [1, 0, 2]
    assert choose_exit(logits, [1.0, 1.0]).tolist() == [2, 2, 2]  # nothing exceeds 1


def test_bad_thresholds_are_one_line_errors():
    for params in ({"exit_threshold": 1.5}, {"exit_threshold": -0.1}, {"threshold_step": 2}, {"epochs": 0}):
        with pytest.raises(ArenaError):
            MatchSpec(defender="dnf", defender_params=params).resolve()


@pytest.fixture(scope="module")
def trained(cache_dir, mnist5k):
    arena = Arena(cache_dir, mnist5k, SMALL_VICTIM)
    return arena, arena.defender("dnf", TRAINED)


def test_noise_leaves_early_and_digits_keep_their_answers(trained):
    """Heads learn the labels on digits (an early digit still gets its class) and exit
    confidently on noise; at threshold 1 every query takes the victim's full path."""
    arena, dnf = trained
    digits = arena.splits.test.floats(torch.arange(400))
    noise = torch.rand((400, 1, 32, 32), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        early_digits = (choose_exit(dnf.network(digits), dnf.thresholds) < 3).float().mean().item()
        early_noise = (choose_exit(dnf.network(noise), dnf.thresholds) < 3).float().mean().item()
        served = serve(dnf, digits).argmax(1)
        honest = arena.victim_probs(digits).argmax(1)
    assert early_noise > 0.9 and early_noise > early_digits + 0.3
    assert (served == honest).float().mean() > 0.95
    # thresholds are serving-only: another threshold reuses the trained heads
    assert arena.defender("dnf", {**TRAINED, "exit_threshold": 0.8}).prepared["reused"] is True
