"""MISLEADER: losses, update direction, augmentation, serving contract, checkpoint selection,
ablations and artifact reuse, all at tiny settings (a few seconds in total)."""

import math

import pytest
import torch

from engines.artifacts import ArtifactStore
from engines.defenders import DEFENDERS, DefenderContext
from engines.defenders._misleader_augment import attacker_query_chain, augment_images
from engines.defenders._misleader_train import (
    LoopSettings,
    MemberPlan,
    _Step,
    attacker_loss,
    attacker_update,
    extraction_loss,
    kl_logits,
    member_update,
    utility_loss,
)
from engines.models import build_model
from engines.oracle import Oracle
from tests.splits import guarded_splits

CPU = torch.device("cpu")
TINY = {"epochs": 2, "batch_size": 32, "train_limit": 96}


# ----------------------------------------------------------------------------- losses
def test_utility_loss_matches_hand_computation():
    member = torch.tensor([[0.0, 0.0]])
    teacher = torch.tensor([[math.log(3.0), 0.0]])
    label = torch.tensor([0])
    # T = 1: p_t = (3/4, 1/4), p_d = (1/2, 1/2)
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    ce = math.log(2.0)
    assert utility_loss(member, teacher, label, T=1.0, alpha=0.5).item() == pytest.approx(0.5 * kl + 0.5 * ce, abs=1e-6)
    # T = 2: teacher logits halved -> p_t = (sqrt3, 1) / (sqrt3 + 1); KL weighted by alpha * T^2
    a = math.sqrt(3.0) / (math.sqrt(3.0) + 1)
    kl2 = a * math.log(a / 0.5) + (1 - a) * math.log((1 - a) / 0.5)
    got = utility_loss(member, teacher, label, T=2.0, alpha=0.3).item()
    assert got == pytest.approx(0.3 * 4 * kl2 + 0.7 * ce, abs=1e-6)
    # alpha = 0 is plain cross-entropy, alpha = 1 plain distillation
    assert utility_loss(member, teacher, label, T=2.0, alpha=0.0).item() == pytest.approx(ce, abs=1e-6)
    assert utility_loss(member, teacher, label, T=2.0, alpha=1.0).item() == pytest.approx(4 * kl2, abs=1e-6)


def test_extraction_and_attacker_losses_are_kl_member_to_attacker_with_the_right_detach():
    member = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]], requires_grad=True)
    attacker = torch.tensor([[0.0, 0.0], [0.0, math.log(4.0)]], requires_grad=True)
    # row 1: KL((3/4, 1/4) || (1/2, 1/2)); row 2: KL((1/2, 1/2) || (1/5, 4/5)); batch mean
    row1 = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    row2 = 0.5 * math.log(0.5 / 0.2) + 0.5 * math.log(0.5 / 0.8)
    expected = (row1 + row2) / 2
    ext = extraction_loss(member, attacker)
    assert ext.item() == pytest.approx(expected, abs=1e-6)
    ext.backward()
    assert member.grad is not None and member.grad.abs().sum() > 0 and attacker.grad is None
    member.grad = None
    att = attacker_loss(attacker, member)
    assert att.item() == pytest.approx(expected, abs=1e-6)
    att.backward()
    assert attacker.grad is not None and attacker.grad.abs().sum() > 0 and member.grad is None
    # KL is not symmetric: the direction matters
    assert kl_logits(attacker, member).item() != pytest.approx(expected, abs=1e-3)


def _tiny_models(seed=0):
    torch.manual_seed(seed)
    teacher = build_model("lenet5", 1, 10, (0.13,), (0.31,)).eval()
    member = build_model("lenet5_fifth", 1, 10, (0.13,), (0.31,))
    attacker = build_model("lenet5_fifth", 1, 10, (0.13,), (0.31,))
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(16, 1, 32, 32, generator=gen)
    y = torch.randint(0, 10, (16,), generator=gen)
    x_aug = torch.rand(16, 1, 32, 32, generator=gen)
    return teacher, member, attacker, x, y, x_aug


def test_extraction_term_pushes_the_member_away_from_its_simulated_attacker():
    results = {}
    for lam in (0.0, 5.0):
        teacher, member, attacker, x, y, x_aug = _tiny_models()
        settings = LoopSettings(epochs=1, batch_size=16)
        step = _Step(member, 0.1, settings, total_steps=1, amp=False)
        member_update(
            member, attacker, teacher, x, y, x_aug, MemberPlan("lenet5_fifth", lam, 2.0, 0.5), step, CPU, False
        )
        with torch.no_grad():
            results[lam] = kl_logits(member(x_aug), attacker(x_aug)).item()
    assert results[5.0] > results[0.0]


def _counting(step: _Step) -> list:
    calls = []
    original = step.opt.step
    step.opt.step = lambda *a, **k: (calls.append(1), original(*a, **k))[1]
    return calls


def test_attacker_takes_a_iter_real_steps_and_accumulate_takes_one():
    _, member, attacker, _, _, x_aug = _tiny_models()
    start = {k: v.clone() for k, v in attacker.state_dict().items()}
    settings = LoopSettings(epochs=1, batch_size=16, clip=1e9)
    step = _Step(attacker, 0.01, settings, total_steps=10, amp=False)
    calls = _counting(step)
    attacker_update(member, attacker, x_aug, 3, "steps", step, CPU, False)
    assert len(calls) == 3

    attacker.load_state_dict(start)
    step = _Step(attacker, 0.01, settings, total_steps=10, amp=False)
    calls = _counting(step)
    attacker_update(member, attacker, x_aug, 3, "accumulate", step, CPU, False)
    assert len(calls) == 1
    accumulated = {k: v.clone() for k, v in attacker.state_dict().items()}
    # the accumulated step equals one step on three times the gradient
    attacker.load_state_dict(start)
    opt = torch.optim.SGD(attacker.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    with torch.no_grad():
        target = member(x_aug)
    (3 * attacker_loss(attacker(x_aug), target)).backward()
    opt.step()
    for name, value in attacker.state_dict().items():
        assert torch.allclose(value, accumulated[name], atol=1e-6), name


# ----------------------------------------------------------------------------- augmentation
def test_saturation_and_grayscale_are_identities_on_one_channel_images():
    from torchvision.transforms import v2
    from torchvision.transforms.v2 import functional as TF

    image = torch.randint(0, 256, (1, 32, 32), dtype=torch.uint8)
    assert torch.equal(TF.adjust_saturation(image, 1.4), image)
    assert torch.equal(TF.adjust_saturation(image, 0.6), image)
    assert torch.equal(v2.RandomGrayscale(p=1.0)(image), image)
    names = [type(t).__name__ for t in attacker_query_chain(1).transforms]
    assert names == ["RandomResizedCrop", "RandomHorizontalFlip", "ColorJitter", "RandomAffine"]
    names3 = [type(t).__name__ for t in attacker_query_chain(3).transforms]
    assert names3 == ["RandomResizedCrop", "RandomHorizontalFlip", "ColorJitter", "RandomGrayscale", "RandomAffine"]


def test_augmentation_is_per_image_seeded_and_leaves_global_rng_alone():
    image = torch.zeros(1, 32, 32, dtype=torch.uint8)
    image[:, 8:24, 12:20] = 255
    images = image.expand(6, 1, 32, 32).contiguous()
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    first = augment_images(images, attacker_query_chain(1), seed=5)
    after = torch.rand(1)
    assert torch.equal(before, after)  # global stream untouched
    second = augment_images(images, attacker_query_chain(1), seed=5)
    assert first.dtype == torch.uint8 and first.shape == images.shape
    assert torch.equal(first, second)
    assert len({bytes(img.numpy()) for img in first}) == 6  # independent parameters per image


# ----------------------------------------------------------------------------- defender
@pytest.fixture(scope="module")
def tiny_splits():
    return guarded_splits(train=96, val=40)


def _defender(name, splits, store, params=None, seed=0):
    torch.manual_seed(99)
    victim = build_model("lenet5", 1, 10, splits.mean, splits.std).eval()
    cls = DEFENDERS.get(name)
    ctx = DefenderContext(victim=victim, victim_key={"test": "tiny"}, splits=splits, device=CPU, store=store, seed=seed)
    return cls(cls.Params.model_validate({**TINY, **(params or {})}), ctx)


def test_checkpoint_selection_reads_the_validation_split_only(tiny_splits, tmp_path):
    defender = _defender("misleader", tiny_splits, ArtifactStore(tmp_path), {"epochs": 3})
    facts = defender.prepare()  # the Forbidden test / pool splits raise if touched
    from engines.training import accuracy

    for member, report in zip(defender.server.members, facts["members"]):
        history = report["val_history"]
        best = max(history)
        assert report["best_epoch"] == max(i for i, v in enumerate(history) if v == best)  # ties: later epoch
        assert accuracy(member, tiny_splits.defender_val, CPU) == pytest.approx(report["val_accuracy"])


def test_served_output_is_a_batch_independent_probability_vector(tiny_splits, tmp_path):
    defender = _defender("misleader", tiny_splits, ArtifactStore(tmp_path))
    defender.prepare()
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(37, 1, 32, 32, generator=gen)
    x[0] = 0.0
    x[1] = 1.0
    with torch.inference_mode():
        whole = defender.serve(x)
        singles = torch.cat([defender.serve(x[i : i + 1]) for i in range(len(x))])
        chunks = torch.cat([defender.serve(x[i : i + 10]) for i in range(0, len(x), 10)])
    assert whole.shape == (37, 10) and torch.isfinite(whole).all() and (whole >= 0).all()
    assert torch.allclose(whole.sum(1), torch.ones(37), atol=1e-5)
    assert torch.allclose(whole, singles, atol=1e-6) and torch.allclose(whole, chunks, atol=1e-6)
    # it is the mean of the members' softmax outputs
    with torch.inference_mode():
        manual = torch.stack([torch.softmax(m(x), 1) for m in defender.server.members]).mean(0)
    assert torch.allclose(whole, manual, atol=1e-6)
    # the same oracle contract as every defender
    for mode in ("soft", "hard", "topk"):
        oracle = Oracle(defender.serve, 100, mode, 10, (1, 32, 32), CPU, topk=2)
        answer = oracle.query(x)
        if mode == "hard":
            assert torch.equal(answer, whole.argmax(1))
        elif mode == "topk":
            assert ((answer > 0).sum(1) <= 2).all()
        else:
            assert torch.allclose(answer, whole)


def test_fused_equal_architecture_members_match_unfused(tiny_splits, tmp_path):
    store = ArtifactStore(tmp_path)
    fused = _defender("misleader-homogeneous", tiny_splits, store, {"fuse": "always", "epochs": 1})
    plain = _defender("misleader-homogeneous", tiny_splits, store, {"fuse": "never", "epochs": 1})
    fused.prepare()
    facts = plain.prepare()
    assert fused.server.fused and not plain.server.fused and facts["reused"]  # fuse is not in the key
    x = torch.rand(19, 1, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        assert torch.allclose(fused.serve(x), plain.serve(x), atol=1e-5)
        assert torch.allclose(fused.serve(x)[:5], fused.serve(x[:5]), atol=1e-6)


def test_ablations_change_exactly_one_thing(tiny_splits, tmp_path):
    store = ArtifactStore(tmp_path)
    full, full_loop = _defender("misleader", tiny_splits, store).plan()
    assert [m.arch for m in full] == ["lenet5", "lenet5_half", "lenet5_fifth"] and full_loop.augment
    lam0, loop = _defender("misleader-lambda0", tiny_splits, store).plan()
    assert [m.lam for m in lam0] == [0.0] * 3 and [m.arch for m in lam0] == [m.arch for m in full]
    k1, _ = _defender("misleader-k1", tiny_splits, store).plan()
    assert k1 == full[:1]
    homo, _ = _defender("misleader-homogeneous", tiny_splits, store).plan()
    assert homo == [full[0]] * 3
    noaug, noaug_loop = _defender("misleader-noaug", tiny_splits, store).plan()
    assert noaug == full and not noaug_loop.augment
    assert full_loop.a_iter == 5 and full_loop.attacker_update == "steps" and full_loop.clip == 5.0
    cifar, cifar_loop = _defender(
        "misleader", tiny_splits, store, {"preset": "cifar", "batch_size": None, "epochs": None}
    ).plan()
    assert [(m.arch, m.lam, m.T, m.alpha) for m in cifar] == [
        ("resnet18_8x", 0.001, 6.0, 0.3),
        ("mobilenetv2_paper", 0.05, 4.0, 0.9),
        ("densenet121_pool", 0.01, 2.0, 0.3),
    ]
    assert cifar_loop.batch_size == 256 and cifar_loop.train_augment


def test_bad_parameters_are_one_line_arena_errors():
    from engines.errors import ArenaError
    from engines.spec import MatchSpec

    with pytest.raises(ArenaError, match="bad parameter"):
        MatchSpec(defender="misleader", defender_params={"lamda": 1}).resolve()
    with pytest.raises(ArenaError, match="bad parameter"):
        MatchSpec(
            defender="misleader", defender_params={"members": [{"arch": "nope", "lam": 0, "T": 1, "alpha": 0}]}
        ).resolve()


def test_same_seed_same_members_and_first_member_shared_with_k1(tiny_splits, tmp_path):
    a = _defender("misleader", tiny_splits, ArtifactStore(tmp_path / "a"))
    b = _defender("misleader", tiny_splits, ArtifactStore(tmp_path / "b"))
    k1 = _defender("misleader-k1", tiny_splits, ArtifactStore(tmp_path / "c"))
    for d in (a, b, k1):
        d.prepare()
    for ma, mb in zip(a.server.members, b.server.members):
        for (name, va), vb in zip(ma.state_dict().items(), mb.state_dict().values()):
            assert torch.equal(va, vb), name
    for va, vb in zip(a.server.members[0].state_dict().values(), k1.server.members[0].state_dict().values()):
        assert torch.equal(va, vb)


def test_a_second_match_reuses_the_trained_defender(tmp_path):
    from engines.match import MatchEnvironment, MatchObserver, play_match
    from engines.spec import MatchSpec

    victim = {"arch": None, "train": {"epochs": 1, "batch_size": 128, "lr": 0.05}}
    env = MatchEnvironment(cache_root=str(tmp_path / "cache"))
    summaries = []
    for attacker, mode, params in (
        ("knockoff", "soft", {"epochs": 1, "min_steps": 5}),
        ("knockoff", "hard", {"epochs": 1, "min_steps": 5}),
    ):
        spec = MatchSpec(
            defender="misleader",
            defender_params={"epochs": 1, "batch_size": 64, "train_limit": 128},
            attacker=attacker,
            label_mode=mode,
            attacker_params=params,
            query_budget=20,
            checkpoints=2,
            device="cpu",
            victim=victim,
        ).resolve()
        summaries.append(play_match(spec, MatchObserver(), env))
    first, second = summaries
    assert first.defender.report["reused"] is False and second.defender.report["reused"] is True
    assert second.defender.report["train_seconds"] == first.defender.report["train_seconds"] > 0
    assert len(second.defender.report["member_val_accuracy"]) == 3
    assert second.defender.clean_accuracy == first.defender.clean_accuracy
    assert first.serving_seconds_per_query > 0


# ----------------------------------------------------------------------------- parameter sets, extension
def test_parameter_sets_are_the_documented_settings(tiny_splits, tmp_path):
    from engines.defenders.misleader import PARAMETER_SETS, PRESETS

    store = ArtifactStore(tmp_path)
    preset, preset_loop = _defender("misleader", tiny_splits, store, {"epochs": None}).plan()
    public, public_loop = _defender(
        "misleader", tiny_splits, store, {**PARAMETER_SETS["public-mnist-defaults"], "epochs": None}
    ).plan()
    assert [(m.arch, m.lam, m.T, m.alpha) for m in public] == [(m.arch, 0.5, 2.0, 0.3) for m in preset]
    assert public_loop.attacker_update == "accumulate" and preset_loop.attacker_update == "steps"
    assert vars(public_loop) | {"attacker_update": "steps"} == vars(preset_loop)
    long, long_loop = _defender("misleader", tiny_splits, store, {**PARAMETER_SETS["mnist-4x-steps"]}).plan()
    assert long == preset and long_loop.epochs == 4 * PRESETS["mnist"]["epochs"] == 4 * preset_loop.epochs


def test_datafree_pool_is_seeded_generator_samples_then_noise():
    from engines.defenders.misleader_datafree import datafree_pool

    torch.manual_seed(5)
    before = torch.rand(1)
    torch.manual_seed(5)
    pool = datafree_pool(150, 0.5, 3, (1, 32, 32))
    assert torch.equal(before, torch.rand(1))  # global stream untouched
    assert pool.shape == (150, 1, 32, 32) and pool.dtype == torch.float32
    assert (pool >= 0).all() and (pool <= 1).all()
    assert torch.equal(pool, datafree_pool(150, 0.5, 3, (1, 32, 32)))
    assert not torch.equal(pool, datafree_pool(150, 0.5, 4, (1, 32, 32)))
    # generator samples are spatially smooth, uniform noise is not
    roughness = (pool[:, :, 1:] - pool[:, :, :-1]).abs().mean((1, 2, 3))
    assert roughness[:75].max() < 0.75 * roughness[75:].min()
    assert torch.equal(datafree_pool(20, 0.0, 3, (1, 32, 32)), datafree_pool(20, 0.0, 3, (1, 32, 32)))


def test_datafree_extension_trains_on_the_pool_and_has_its_own_artifact(tiny_splits, tmp_path):
    store = ArtifactStore(tmp_path)
    base = _defender("misleader", tiny_splits, store, {"epochs": 1})
    ext = _defender("misleader-datafree", tiny_splits, store, {"epochs": 1, "pool_size": 64})
    plans, loop = base.plan()
    assert ext.plan() == (plans, loop)
    assert base.extra_queries() is None and ext.extra_queries().shape == (64, 1, 32, 32)
    spec = ext.artifact_spec(plans, loop)
    assert spec["method"] == "misleader-datafree" and spec["datafree_pool"]["size"] == 64
    base.prepare()
    assert not ext.prepare()["reused"]  # not misleader's artifact
    x = torch.rand(8, 1, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        assert not torch.allclose(base.serve(x), ext.serve(x))  # the pool changed the training
