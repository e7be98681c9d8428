"""Defence-specific checks for randp, reverse-sigmoid, rounding, top1, the per-query noise
source and the averaged-queries attacker (the generic properties of every defence are in
tests/test_defence_properties.py)."""

from __future__ import annotations

import math

import pytest
import torch

from engines.attackers import ATTACKERS, AttackContext
from engines.attackers.averaged_queries import average_answers
from engines.defenders import DEFENDERS
from engines.defenders._noise import hash32, normal, uniform
from engines.defenders.randp import RandP
from engines.defenders.reverse_sigmoid import reverse_sigmoid
from engines.defenders.rounding import round_probabilities
from engines.errors import ArenaError
from engines.oracle import Oracle
from engines.spec import checkpoint_schedule
from tests.test_defence_properties import CPU, Arena, random_batch, serve

# The attack suite's 3-epoch victim (~90 % test accuracy, shared through the artifact cache):
# budgets and averaging are only meaningful against answers that are not near-uniform.
DECENT_VICTIM = {"arch": None, "train": {"epochs": 3, "batch_size": 64, "lr": 0.05}}


@pytest.fixture(scope="session")
def arena(cache_dir, mnist5k) -> Arena:
    return Arena(cache_dir, mnist5k, DECENT_VICTIM)


# ----------------------------------------------------------------------------- noise
def test_hash_matches_a_pure_python_reference():
    def reference(x: int) -> int:
        m = 0xFFFFFFFF
        x ^= x >> 16
        x = (x * 0x7FEB352D) & m
        x ^= x >> 15
        x = (x * 0x846CA68B) & m
        return x ^ (x >> 16)

    values = [0, 1, 2, 12345, 2**31, 2**32 - 1, 987654321]
    assert hash32(torch.tensor(values)).tolist() == [reference(v) for v in values]


def test_noise_is_keyed_by_query_index_not_by_batch():
    indices = torch.arange(1000, 1256)
    whole = uniform(3, "s", indices, 10)
    assert torch.equal(whole[100:], uniform(3, "s", indices[100:], 10))
    assert not torch.equal(whole, uniform(4, "s", indices, 10))  # another seed
    assert not torch.equal(whole, uniform(3, "t", indices, 10))  # another stream
    assert 0 < whole.min() and whole.max() < 1
    big = uniform(0, "s", torch.arange(50_000), 4)
    assert abs(big.mean().item() - 0.5) < 0.01 and abs(big.var().item() - 1 / 12) < 0.003
    gauss = normal(0, "s", torch.arange(50_000), 4)
    assert abs(gauss.mean().item()) < 0.02 and abs(gauss.std().item() - 1) < 0.02


# ----------------------------------------------------------------------------- randp
@pytest.mark.parametrize("eps", RandP.knob_values)
@pytest.mark.parametrize("preserve", [False, True])
def test_randp_stays_within_its_l1_budget_and_uses_it(eps, preserve, arena):
    defender = arena.defender("randp", {"eps": eps, "preserve_argmax": preserve})
    images = random_batch(arena.splits, 20, n=128)
    clean, served = arena.victim_probs(images), serve(defender, images)
    distance = (served - clean).abs().sum(1)
    assert distance.max() <= eps + 1e-5
    # the budget is spent: a random simplex point is almost always farther than eps away
    assert distance.median() >= min(eps, 1.0) * 0.9
    if preserve:
        assert torch.equal(served.argmax(1), clean.argmax(1))


def test_randp_without_preservation_changes_labels_at_large_eps(arena):
    images = random_batch(arena.splits, 21, n=128)
    served = serve(arena.defender("randp", {"eps": 2.0}), images)
    changed = (served.argmax(1) != arena.victim_probs(images).argmax(1)).float().mean()
    assert changed > 0.5  # at eps = 2 the answer is a uniform random point of the simplex


def test_randp_gives_fresh_noise_per_query_and_per_seed(arena):
    images = random_batch(arena.splits, 22)
    defender = arena.defender("randp", {"eps": 0.5})
    first, again = serve(defender, images), serve(defender, images)
    assert not torch.allclose(first, again)  # the same images asked twice: new noise
    other_seed = serve(arena.defender("randp", {"eps": 0.5}, seed=1), images)
    assert not torch.allclose(first, other_seed)
    assert defender.queries_served == 2 * len(images)


# ----------------------------------------------------------------------------- reverse sigmoid
def _by_hand(y: list[float], beta: float, gamma: float) -> list[float]:
    def sigmoid(z):
        return 1 / (1 + math.exp(-z))

    raw = [max(0.0, p - beta * (sigmoid(gamma * math.log(p / (1 - p))) - 0.5)) for p in y]
    return [v / sum(raw) for v in raw]


@pytest.mark.parametrize(("beta", "gamma"), [(1.0, 0.1), (0.5, 0.5), (2.0, 0.2)])
def test_reverse_sigmoid_matches_the_formula_by_hand(beta, gamma):
    y = [0.7, 0.2, 0.06, 0.04]
    got = reverse_sigmoid(torch.tensor([y], dtype=torch.float64), beta, gamma)[0].tolist()
    assert got == pytest.approx(_by_hand(y, beta, gamma), abs=1e-12)


def test_reverse_sigmoid_with_gamma_one_is_an_affine_pull_to_uniform():
    # sigmoid(logit(y)) = y, so y - beta (y - 1/2) = (1 - beta) y + beta / 2, then renormalised
    y = torch.tensor([[0.5, 0.3, 0.15, 0.05]], dtype=torch.float64)
    expected = (0.6 * y + 0.2) / (0.6 + 0.2 * 4)
    assert torch.allclose(reverse_sigmoid(y, 0.4, 1.0), expected, atol=1e-12)


def test_reverse_sigmoid_keeps_mid_range_order_but_not_every_top1():
    """What is preserved at the defaults (beta 1, gamma 0.1): the order of probabilities in
    [0.05, 0.95]; not the top-1 of a low-confidence answer next to a near-zero class."""
    g = torch.Generator().manual_seed(0)
    y = torch.softmax(torch.randn(2000, 10, generator=g, dtype=torch.float64) * 2, 1)
    served = reverse_sigmoid(y, 1.0, 0.1)
    mid = (y >= 0.05) & (y <= 0.95)
    for row in range(len(y)):
        kept = mid[row]
        if kept.sum() >= 2:
            assert torch.equal(y[row][kept].argsort(), served[row][kept].argsort())
    flipped = torch.tensor([[0.3, 0.25, 0.2, 0.15, 0.1 - 1e-10, 1e-10]], dtype=torch.float64)
    assert reverse_sigmoid(flipped, 1.0, 0.1).argmax(1).item() == 5
    cls = DEFENDERS.get("reverse-sigmoid")
    assert not cls.preserves_top1(cls.Params())  # honest: the guarantee is not claimed


def test_reverse_sigmoid_is_a_distribution_even_at_zero_and_one():
    y = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]])
    for beta in (0.1, 1.0, 5.0):
        served = reverse_sigmoid(y, beta, 0.1)
        assert torch.isfinite(served).all() and (served >= 0).all()
        assert torch.allclose(served.sum(1), torch.ones(2), atol=1e-6)


# ----------------------------------------------------------------------------- rounding, top1
def test_rounding_by_hand():
    rows = torch.tensor([[0.444, 0.436, 0.12], [0.123, 0.456, 0.421], [0.4, 0.35, 0.25]])
    one = round_probabilities(rows, 1)
    assert one[0].tolist() == pytest.approx([4 / 9, 4 / 9, 1 / 9], abs=1e-6)  # a tie created at the top
    assert round_probabilities(rows, 2)[1].tolist() == pytest.approx([0.12, 0.46, 0.42], abs=1e-6)
    # decimals 0: every entry of row 2 rounds to 0 -> the one-hot of its top class
    assert round_probabilities(rows, 0)[2].tolist() == [1.0, 0.0, 0.0]
    assert round_probabilities(rows, 0)[0].tolist() == [1.0, 0.0, 0.0]


@pytest.mark.parametrize("decimals", [0, 1, 2, 3])
def test_rounding_serves_renormalised_multiples_of_the_last_decimal(decimals, arena):
    images = random_batch(arena.splits, 23)
    served = serve(arena.defender("rounding", {"decimals": decimals}), images)
    clean = arena.victim_probs(images)
    assert torch.allclose(served, round_probabilities(clean, decimals), atol=0)
    # undo the renormalisation with the rounded total: every entry is a multiple of 10^-d
    total = torch.round(clean, decimals=decimals).sum(1, keepdim=True)
    units = torch.where(total > 0, served * total, served) * 10**decimals
    assert torch.allclose(units, units.round(), atol=1e-3)


def test_top1_is_the_victims_one_hot(arena):
    images = random_batch(arena.splits, 24)
    served = serve(arena.defender("top1"), images)
    assert set(served.unique().tolist()) == {0.0, 1.0} and torch.equal(served.sum(1), torch.ones(len(images)))
    assert torch.equal(served.argmax(1), arena.victim_probs(images).argmax(1))


# ----------------------------------------------------------------------------- averaged-queries
AVERAGED = {"epochs": 1, "min_steps": 4}


def run_averaged(arena, defender, budget: int, repeats: int, mode: str = "soft", seed: int = 0):
    """Drive averaged-queries against `defender`, recording every batch the API served."""
    cls = ATTACKERS.get("averaged-queries")
    attacker = cls(cls.Params.model_validate({**AVERAGED, "repeats": repeats}))
    pool = arena.splits.attacker_pool
    attacker.validate(mode, budget, len(pool))
    batches: list[torch.Tensor] = []

    def spy(x):
        batches.append(x.clone())
        return defender.serve(x)

    oracle = Oracle(spy, budget, mode, arena.splits.num_classes, arena.splits.image_shape, CPU)
    evaluations: list[int] = []
    ctx = AttackContext(
        family="mnist",
        num_classes=arena.splits.num_classes,
        image_shape=arena.splits.image_shape,
        mean=arena.splits.mean,
        std=arena.splits.std,
        pool=pool,
        device=CPU,
        seed=seed,
        checkpoints=checkpoint_schedule(budget, 4),
        evaluate=lambda clone, used: evaluations.append(used) or {},
    )
    clone = attacker.run(oracle, ctx)
    return oracle, torch.cat(batches), evaluations, clone


@pytest.mark.parametrize(("budget", "repeats"), [(40, 4), (43, 4), (30, 1)])
def test_averaged_queries_spends_exactly_r_times_n(budget, repeats, arena):
    oracle, asked, evaluations, clone = run_averaged(arena, arena.defender("randp"), budget, repeats)
    n = budget // repeats
    assert oracle.queries_used == len(asked) == repeats * n
    # image-major: each image asked `repeats` times in a row, n distinct images
    grouped = asked.view(n, repeats, -1)
    assert torch.equal(grouped, grouped[:, :1].expand_as(grouped))
    assert len(torch.unique(grouped[:, 0], dim=0)) == n
    assert clone is not None and evaluations and evaluations[-1] == repeats * n
    assert evaluations == sorted(evaluations) and all(e % repeats == 0 for e in evaluations)


def test_averaged_queries_is_deterministic(arena):
    a = run_averaged(arena, arena.defender("randp"), 24, 3, seed=5)
    b = run_averaged(arena, arena.defender("randp"), 24, 3, seed=5)
    assert torch.equal(a[1], b[1]) and a[2] == b[2]
    test_x = arena.splits.test.floats(slice(0, 100))
    with torch.no_grad():
        assert torch.equal(a[3](test_x), b[3](test_x))


def test_averaged_answers_converge_against_randp_and_recover_the_top1(arena):
    """Against randp the mean of r answers to one image converges to the defence's expected
    answer (the L1 spread falls like 1/sqrt(r)) and moves toward the clean answer. randp's
    noise is not zero-mean: a step toward a uniform simplex point pulls toward the centre, so
    the limit is a smoothed clean answer, not the clean answer itself, with the clean top-1."""
    images = arena.splits.test.floats(slice(0, 100))
    clean = arena.victim_probs(images)
    defender = arena.defender("randp", {"eps": 1.0})
    oracle = Oracle(defender.serve, 10**6, "soft", 10, arena.splits.image_shape, CPU)

    def averaged(r: int) -> torch.Tensor:
        return average_answers(oracle.query(images.repeat_interleave(r, dim=0)), r, oracle)

    expected = averaged(256)
    means = {r: averaged(r) for r in (1, 4, 16)}
    spread = {r: (m - expected).abs().sum(1).mean().item() for r, m in means.items()}
    assert spread[4] < 0.6 * spread[1] and spread[16] < 0.6 * spread[4]  # ~1/2 per 4x repeats
    to_clean = {r: (m - clean).abs().sum(1).mean().item() for r, m in means.items()}
    assert to_clean[1] > to_clean[4] > to_clean[16]
    agreement = {r: (m.argmax(1) == clean.argmax(1)).float().mean().item() for r, m in means.items()}
    assert agreement[1] < agreement[16] and (expected.argmax(1) == clean.argmax(1)).float().mean() >= 0.98


def test_averaged_queries_majority_vote_on_hard_labels():
    oracle = Oracle(lambda x: x, 10, "hard", 3, (1, 1, 1), CPU)
    labels = torch.tensor([2, 1, 2, 0, 0, 1, 1, 0, 2])  # images: votes (2,1,2), (0,0,1), (1,0,2)
    assert average_answers(labels, 3, oracle).tolist() == [2, 0, 0]  # a three-way tie -> lowest class


def test_averaged_queries_refuses_impossible_budgets(arena):
    cls = ATTACKERS.get("averaged-queries")
    attacker = cls(cls.Params.model_validate({"repeats": 8}))
    with pytest.raises(ArenaError, match="buys no image"):
        attacker.validate("soft", 7, 100)
    with pytest.raises(ArenaError, match="pool has 100"):
        attacker.validate("soft", 8 * 101, 100)
    attacker.validate("soft", 8 * 100 + 7, 100)  # the remainder is left unspent, not refused
