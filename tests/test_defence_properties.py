"""Properties every registered defence must have, checked by walking `DEFENDERS`:
a defence registered in its own module is tested here without touching this file.

Each defence runs at its `smoke_params` against the spine tests' tiny 2-epoch victim (trained
once per session through the shared artifact cache), on random batches: half test-split
digits, half synthetic images (uniform noise and blends of two digits), so in- and
out-of-distribution answers are both exercised.

How randomised defences are seeded (the convention of engines/defenders/_noise.py): the noise
of a query is a pure function of (match seed, index of the query among all the images this
defender instance has served). Two fresh instances with the same seed therefore give the
same answers to the same sequence of queries, and asking a batch whole or in consecutive
parts gives the same answers, because every image keeps its index.
"""

from __future__ import annotations

import pytest
import torch
from annotated_types import Ge, Gt, Le, Lt

from engines.artifacts import ArtifactStore
from engines.defenders import DEFENDERS, DefenderContext
from engines.defenders.base import Defender
from engines.errors import ArenaError
from engines.match import MatchObserver, load_victim
from engines.spec import MatchSpec

CPU = torch.device("cpu")
TINY_VICTIM = {"arch": None, "train": {"epochs": 2, "batch_size": 128, "lr": 0.05}}  # as test_attack_suite
BATCH = 64
# Tiny training for defenders whose class does not declare `smoke_params` yet (the misleader
# family trains an ensemble; these are its Params fields for a few-second run).
UNDECLARED_TRAINING_SMOKE = {"epochs": 1, "batch_size": 32, "train_limit": 96}

NAMES = DEFENDERS.names()


def smoke_params(cls: type[Defender]) -> dict:
    """The class's smoke_params; for a trained defence that has not declared any, tiny training."""
    declared = any("smoke_params" in vars(k) for k in cls.__mro__ if k is not Defender)
    if declared or not set(UNDECLARED_TRAINING_SMOKE) <= set(cls.Params.model_fields):
        return dict(cls.smoke_params)
    return dict(UNDECLARED_TRAINING_SMOKE)


class Arena:
    """The tiny victim and what a DefenderContext needs, built once per session."""

    def __init__(self, cache_dir: str, splits, victim_spec: dict = TINY_VICTIM):
        self.splits = splits
        self.store = ArtifactStore(cache_dir)
        spec = MatchSpec(device="cpu", victim=victim_spec).resolve()
        self.victim, self.victim_key, _ = load_victim(spec, splits, self.store, CPU, MatchObserver())

    def defender(self, name: str, params: dict | None = None, seed: int = 0) -> Defender:
        """A fresh, prepared instance (trained parts come from the session's artifact cache)."""
        cls = DEFENDERS.get(name)
        values = smoke_params(cls) if params is None else params
        ctx = DefenderContext(
            victim=self.victim,
            victim_key=self.victim_key,
            splits=self.splits,
            device=CPU,
            store=self.store,
            seed=seed,
        )
        instance = cls(cls.Params.model_validate(values), ctx)
        instance.prepared = instance.prepare()  # the facts prepare reports (e.g. "reused")
        return instance

    def victim_probs(self, images: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return torch.softmax(self.victim(images).float(), dim=1)


def serve(defender: Defender, images: torch.Tensor) -> torch.Tensor:
    """What the oracle does: serve under inference mode."""
    with torch.inference_mode():
        return defender.serve(images).float()


def random_batch(splits, seed: int, n: int = BATCH) -> torch.Tensor:
    """n float images in [0, 1]: half random test digits, a quarter uniform noise, a quarter
    blends of two digits."""
    g = torch.Generator().manual_seed(seed)
    digits = splits.test.floats(torch.randint(len(splits.test), (n,), generator=g))
    half, quarter = n // 2, n // 4
    noise = torch.rand((quarter, *digits.shape[1:]), generator=g)
    weight = torch.rand(n - half - quarter, 1, 1, 1, generator=g)
    other = splits.test.floats(torch.randint(len(splits.test), (n - half - quarter,), generator=g))
    blends = weight * digits[half + quarter :] + (1 - weight) * other
    return torch.cat([digits[:half], noise, blends])


@pytest.fixture(scope="session")
def arena(cache_dir, mnist5k) -> Arena:
    return Arena(cache_dir, mnist5k)


def top1_settings(cls: type[Defender]) -> list[dict]:
    """The settings whose top-1 claim is checked: the smoke params, with every boolean switch
    of Params also turned on (e.g. randp's preserve_argmax), each at every knob value. Only
    the settings for which `preserves_top1` says True are instantiated."""
    base = smoke_params(cls)
    switches = [name for name, field in cls.Params.model_fields.items() if field.annotation is bool]
    variants = [base] + [{**base, name: True} for name in switches if base.get(name) is not True]
    knob_values = list(cls.knob_values) if cls.knob else []
    return [v for variant in variants for v in [variant] + [{**variant, cls.knob: k} for k in knob_values]]


# ----------------------------------------------------------------------------- conventions
@pytest.mark.parametrize("name", NAMES)
def test_declares_the_conventions(name):
    cls = DEFENDERS.get(name)
    assert cls.Params.model_config.get("extra") == "forbid", "unknown parameters must be refused"
    cls.Params.model_validate(smoke_params(cls))
    if cls.knob is not None:
        assert cls.knob in cls.Params.model_fields, f"knob {cls.knob!r} is not a parameter"
        assert len(cls.knob_values) >= 3, "a trade-off curve needs three or more knob settings"
        for value in cls.knob_values:
            cls.Params.model_validate({**smoke_params(cls), cls.knob: value})
    if cls.zero_protection_params is not None:
        cls.Params.model_validate({**smoke_params(cls), **cls.zero_protection_params})
    assert isinstance(cls.preserves_top1(cls.Params.model_validate(smoke_params(cls))), bool)


# ----------------------------------------------------------------------------- answers
@pytest.mark.parametrize("name", NAMES)
def test_answers_are_probability_vectors(name, arena):
    defender = arena.defender(name)
    for seed in (1, 2):
        images = random_batch(arena.splits, seed)
        answers = serve(defender, images)
        assert answers.shape == (len(images), arena.splits.num_classes)
        assert torch.isfinite(answers).all()
        assert (answers >= 0).all()
        assert torch.allclose(answers.sum(1), torch.ones(len(images)), atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_answers_do_not_depend_on_the_batch(name, arena):
    """A batch asked whole equals its halves asked in the same order (fresh instances)."""
    first, second = random_batch(arena.splits, 3), random_batch(arena.splits, 4)
    whole = arena.defender(name)
    split = arena.defender(name)
    answers_whole = torch.cat([serve(whole, first), serve(whole, second)])
    half = BATCH // 2
    answers_split = torch.cat(
        [serve(split, first[:half]), serve(split, first[half:]), serve(split, second[:7]), serve(split, second[7:])]
    )
    assert torch.allclose(answers_whole, answers_split, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_answers(name, arena):
    images = [random_batch(arena.splits, 5), random_batch(arena.splits, 6)]
    a, b = arena.defender(name, seed=7), arena.defender(name, seed=7)
    for batch in images:
        assert torch.equal(serve(a, batch), serve(b, batch))


ZERO = [n for n in NAMES if DEFENDERS.get(n).zero_protection_params is not None]


@pytest.mark.parametrize("name", ZERO)
def test_zero_protection_serves_the_undefended_answer(name, arena):
    cls = DEFENDERS.get(name)
    defender = arena.defender(name, {**smoke_params(cls), **cls.zero_protection_params})
    undefended = arena.defender("undefended")
    for seed in (8, 9):  # twice: a randomised defence must stay exact after its counter moved
        images = random_batch(arena.splits, seed)
        assert torch.allclose(serve(defender, images), serve(undefended, images), atol=1e-6, rtol=0)


TOP1 = [
    (n, i)
    for n in NAMES
    for i, values in enumerate(top1_settings(DEFENDERS.get(n)))
    if DEFENDERS.get(n).preserves_top1(DEFENDERS.get(n).Params.model_validate(values))
]


@pytest.mark.parametrize(("name", "setting"), TOP1)
def test_stated_top1_guarantee_holds_on_every_image(name, setting, arena):
    values = top1_settings(DEFENDERS.get(name))[setting]
    defender = arena.defender(name, values)
    for seed in (10, 11, 12):
        images = random_batch(arena.splits, seed)
        served = serve(defender, images).argmax(1)
        assert torch.equal(served, arena.victim_probs(images).argmax(1)), f"{name} {values}"


def test_the_guarantee_is_claimed_somewhere():
    """The walk above must not be vacuous: the undefended victim, top1 and randp with
    preserve_argmax (at every eps) claim it."""
    assert ("undefended", 0) in TOP1 and ("top1", 0) in TOP1
    randp = [top1_settings(DEFENDERS.get("randp"))[i] for n, i in TOP1 if n == "randp"]
    assert {s["eps"] for s in randp if "eps" in s} == set(DEFENDERS.get("randp").knob_values)


# ----------------------------------------------------------------------------- bad input
def out_of_range(cls: type[Defender]) -> list:
    """Values just outside every numeric bound of the knob's Field."""
    bad = []
    for bound in cls.Params.model_fields[cls.knob].metadata:
        if isinstance(bound, Ge):
            bad.append(bound.ge - 1 if isinstance(bound.ge, int) else bound.ge - 1e-3)
        elif isinstance(bound, Gt):
            bad.append(bound.gt)
        elif isinstance(bound, Le):
            bad.append(bound.le + 1 if isinstance(bound.le, int) else bound.le + 1e-3)
        elif isinstance(bound, Lt):
            bad.append(bound.lt)
    return bad


KNOBBED = [n for n in NAMES if DEFENDERS.get(n).knob is not None]


@pytest.mark.parametrize("name", KNOBBED)
def test_knob_out_of_range_is_a_one_line_error(name):
    cls = DEFENDERS.get(name)
    bad = out_of_range(cls)
    assert bad, f"knob {cls.knob!r} of {name} has no Field bounds"
    for value in bad:
        with pytest.raises(ArenaError) as caught:
            MatchSpec(defender=name, defender_params={**smoke_params(cls), cls.knob: value}).resolve()
        message = str(caught.value)
        assert "\n" not in message and cls.knob in message and name in message


@pytest.mark.parametrize("name", NAMES)
def test_unknown_parameter_is_a_one_line_error(name):
    with pytest.raises(ArenaError) as caught:
        MatchSpec(defender=name, defender_params={"no_such_knob": 1}).resolve()
    assert "\n" not in str(caught.value) and "no_such_knob" in str(caught.value)
