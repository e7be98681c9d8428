"""The gradient-based output defences: surrogate Jacobians, MAD / MAD-argmax (Orekondy et al.,
ICLR 2020) and GRAD² (Mazeika et al., ICML 2022), checked against hand computations.

The generic properties (valid probabilities, batch independence, same seed same answers, the
knob's bounds) are checked for every registered defence by tests/test_defence_properties.py.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from engines.artifacts import ArtifactStore
from engines.defenders import DEFENDERS, DefenderContext
from engines.defenders._surrogate import Surrogate
from engines.defenders.grad2 import redirect, target_scores
from engines.defenders.mad import (
    TIE_BREAK,
    angular_deviation,
    argmax_preserving_target,
    extreme_target,
    line_search,
)
from engines.models import build_model
from tests.splits import guarded_splits

CPU = torch.device("cpu")


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def tiny_splits():
    return guarded_splits(train=64, val=16)


def _victim(splits, sharpness: float) -> nn.Module:
    """A random LeNet-5 whose last layer is scaled: sharpness 1 gives near-uniform answers,
    larger values confident ones (both kinds of answers are exercised)."""
    torch.manual_seed(99)
    victim = build_model("lenet5", 1, 10, splits.mean, splits.std).eval()
    with torch.no_grad():
        victim[1].classifier[-1].weight.mul_(sharpness)
    return victim


def _defender(name, splits, store, params=None, sharpness=30.0, seed=0):
    cls = DEFENDERS.get(name)
    values = {**cls.smoke_params, **(params or {})}
    ctx = DefenderContext(
        victim=_victim(splits, sharpness),
        victim_key={"test": sharpness},
        splits=splits,
        device=CPU,
        store=store,
        seed=seed,
    )
    defender = cls(cls.Params.model_validate(values), ctx)
    defender.prepare()
    return defender


def _serve(defender, images):
    with torch.inference_mode():
        return defender.serve(images).float()


def _images(seed: int, n: int = 24) -> torch.Tensor:
    return torch.rand(n, 1, 32, 32, generator=torch.Generator().manual_seed(seed))


def _linear_surrogate(grad_params: str) -> tuple[nn.Module, Surrogate]:
    torch.manual_seed(3)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 4)).eval()
    return model, Surrogate(model, grad_params)


# ----------------------------------------------------------------------------- surrogate
@pytest.mark.parametrize("grad_params", ["last", "all"])
def test_jacobian_equals_autograd_per_image(grad_params):
    model, surrogate = _linear_surrogate(grad_params)
    x = torch.randn(5, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    jac = surrogate.jacobian(x)
    chosen = [p for name, p in model.named_parameters() if name in surrogate.names]
    assert jac.shape == (5, 4, surrogate.size) and surrogate.size == sum(p.numel() for p in chosen)
    for n in range(5):
        log_probs = torch.log_softmax(model(x[n : n + 1]), 1)[0]
        for k in range(4):
            grads = torch.autograd.grad(log_probs[k], chosen, retain_graph=True)
            assert torch.allclose(jac[n, k], torch.cat([g.reshape(-1) for g in grads]), atol=1e-6)


def test_last_layer_jacobian_is_the_outer_product_by_hand():
    """For logits W h + b: d log q_k / dW = (e_k - q) h^T (here h is the flattened input)."""
    model, surrogate = _linear_surrogate("last")
    x = torch.randn(3, 3, 2, 2, generator=torch.Generator().manual_seed(1))
    q = torch.softmax(model(x), 1).detach()
    h = x.flatten(1)
    expected = (torch.eye(4).unsqueeze(0) - q.unsqueeze(1)).unsqueeze(3) * h.view(3, 1, 1, 12)
    assert torch.allclose(surrogate.jacobian(x), expected.reshape(3, 4, 48), atol=1e-6)


def test_jvp_and_vjp_are_products_with_the_jacobian():
    _, surrogate = _linear_surrogate("all")
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(6, 3, 2, 2, generator=gen)
    jac = surrogate.jacobian(x)
    weights = torch.rand(6, 4, generator=gen)
    tangents = torch.randn(6, surrogate.size, generator=gen)
    assert torch.allclose(surrogate.vjp(x, weights), torch.einsum("nkd,nk->nd", jac, weights), atol=1e-5)
    assert torch.allclose(surrogate.jvp(x, tangents), torch.einsum("nkd,nd->nk", jac, tangents), atol=1e-5)
    ones = torch.ones(surrogate.size)
    assert torch.allclose(surrogate.jvp(x, ones), jac.sum(2), atol=1e-5)


# ----------------------------------------------------------------------------- MAD
def _explicit_deviation(jac: torch.Tensor, a: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """||G^T a/|G^T a| - G^T y/|G^T y|||^2 with the gradients formed explicitly (per image)."""
    u = torch.einsum("nkd,nk->nd", jac, a)
    v = torch.einsum("nkd,nk->nd", jac, y)
    return (u / u.norm(dim=1, keepdim=True) - v / v.norm(dim=1, keepdim=True)).norm(dim=1) ** 2


def _random_problem(seed: int, n: int = 8, k: int = 5, d: int = 7):
    gen = torch.Generator().manual_seed(seed)
    jac = torch.randn(n, k, d, generator=gen, dtype=torch.float64)
    y = torch.softmax(3 * torch.randn(n, k, generator=gen, dtype=torch.float64), 1)
    return jac, y


def test_angular_deviation_from_the_gram_matrix_matches_explicit_gradients():
    jac, y = _random_problem(0)
    a = torch.softmax(torch.randn(8, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64), 1)
    gram = jac @ jac.transpose(1, 2)
    assert torch.allclose(angular_deviation(gram, a.unsqueeze(1), y).squeeze(1), _explicit_deviation(jac, a, y))


def test_mad_target_is_the_vertex_of_largest_deviation():
    jac, y = _random_problem(2)
    chosen = extreme_target(jac @ jac.transpose(1, 2), y)
    per_vertex = torch.stack([_explicit_deviation(jac, torch.eye(5)[k].expand(8, 5).double(), y) for k in range(5)], 1)
    assert torch.allclose(_explicit_deviation(jac, chosen, y), per_vertex.max(1).values)


def test_argmax_preserving_target_is_the_best_set_containing_the_top_class():
    jac, y = _random_problem(3)
    chosen = argmax_preserving_target(jac @ jac.transpose(1, 2), y)
    assert torch.equal(chosen.argmax(1), y.argmax(1))
    for n in range(8):
        top = int(y[n].argmax())
        best = -1.0
        for bits in itertools.product([0, 1], repeat=5):
            if not bits[top]:
                continue
            a = torch.tensor(bits, dtype=torch.float64)
            a[top] += TIE_BREAK
            a = a / a.sum()
            best = max(best, float(_explicit_deviation(jac[n : n + 1], a.unsqueeze(0), y[n : n + 1])))
        assert float(_explicit_deviation(jac[n : n + 1], chosen[n : n + 1], y[n : n + 1])) == pytest.approx(best)


def test_greedy_argmax_preserving_search_for_many_classes():
    """K > 10: the greedy search keeps the top class and beats every one-class extension of it."""
    jac, y = _random_problem(4, n=6, k=12, d=20)
    gram = jac @ jac.transpose(1, 2)
    chosen = argmax_preserving_target(gram, y)
    assert torch.equal(chosen.argmax(1), y.argmax(1))
    assert torch.allclose(chosen.sum(1), torch.ones(6, dtype=torch.float64))
    score = _explicit_deviation(jac, chosen, y)
    for n in range(6):
        top = int(y[n].argmax())
        for extra in range(12):
            a = torch.zeros(12, dtype=torch.float64)
            a[[top, extra]] = 1.0
            a[top] += TIE_BREAK
            a = a / a.sum()
            assert score[n] >= _explicit_deviation(jac[n : n + 1], a.unsqueeze(0), y[n : n + 1])[0] - 1e-12


def test_line_search_spends_the_budget_and_turns_further_with_more():
    jac, y = _random_problem(5)
    y_star = extreme_target(jac @ jac.transpose(1, 2), y)
    previous = torch.zeros(8, dtype=torch.float64)
    for eps in (0.05, 0.2, 0.5, 1.0, 2.0):
        served = line_search(y, y_star, eps)
        distance = (served - y).abs().sum(1)
        assert (distance <= eps + 1e-9).all()
        assert torch.allclose(distance, torch.minimum(torch.full_like(distance, eps), (y_star - y).abs().sum(1)))
        assert (served >= 0).all() and torch.allclose(served.sum(1), torch.ones(8, dtype=torch.float64))
        deviation = _explicit_deviation(jac, served, y)
        assert (deviation >= previous - 1e-12).all() and (deviation > 0).all()
        previous = deviation


@pytest.mark.parametrize("name", ["mad", "mad-argmax"])
@pytest.mark.parametrize("eps", [0.1, 0.5, 2.0])
def test_mad_answers_stay_in_the_ball_and_turn_the_surrogate_gradient(name, eps, tiny_splits, tmp_path):
    defender = _defender(name, tiny_splits, ArtifactStore(tmp_path), {"eps": eps})
    x = _images(1)
    served = _serve(defender, x)
    with torch.inference_mode():
        y = torch.softmax(defender.ctx.victim(x), 1)
    assert ((served - y).abs().sum(1) <= eps + 1e-5).all()
    assert (served >= 0).all() and torch.allclose(served.sum(1), torch.ones(len(x)), atol=1e-5)
    jac = defender.surrogate.jacobian(x).double()
    assert (_explicit_deviation(jac, served.double(), y.double()) > 1e-6).all()  # the clean answer's is 0
    if name == "mad-argmax":
        assert torch.equal(served.argmax(1), y.argmax(1))


@pytest.mark.parametrize("sharpness", [1.0, 30.0])
def test_mad_argmax_keeps_the_top1_label_on_random_batches(sharpness, tiny_splits, tmp_path):
    defender = _defender("mad-argmax", tiny_splits, ArtifactStore(tmp_path), {"eps": 2.0}, sharpness=sharpness)
    assert DEFENDERS.get("mad-argmax").preserves_top1(defender.params)
    assert not DEFENDERS.get("mad").preserves_top1(defender.params)
    for seed in range(3):
        x = _images(10 + seed, n=64)
        with torch.inference_mode():
            y = torch.softmax(defender.ctx.victim(x), 1)
        assert torch.equal(_serve(defender, x).argmax(1), y.argmax(1))


# ----------------------------------------------------------------------------- GRAD²
def test_redirect_solves_the_linear_program(tiny_splits):
    """No feasible point beats the greedy answer: neither any single transfer of mass between
    two classes (the polytope's edges from y) nor random feasible points."""
    gen = torch.Generator().manual_seed(6)
    y = torch.softmax(3 * torch.randn(16, 6, generator=gen, dtype=torch.float64), 1)
    scores = torch.randn(16, 6, generator=gen, dtype=torch.float64)
    for eps in (0.1, 0.7, 2.0):
        served = redirect(y, scores, eps)
        assert ((served - y).abs().sum(1) <= eps + 1e-9).all()
        assert (served >= 0).all() and torch.allclose(served.sum(1), torch.ones(16, dtype=torch.float64))
        value = (served * scores).sum(1)
        for i, j in itertools.permutations(range(6), 2):
            moved = y.clone()
            amount = torch.minimum(y[:, i], torch.full_like(y[:, i], eps / 2))
            moved[:, i] -= amount
            moved[:, j] += amount
            assert ((moved * scores).sum(1) <= value + 1e-9).all()
        for _ in range(200):
            direction = torch.randn(16, 6, generator=gen, dtype=torch.float64)
            direction -= direction.mean(1, keepdim=True)
            step = (
                direction * eps * torch.rand(16, 1, generator=gen, dtype=torch.float64) / direction.abs().sum(1, True)
            )
            candidate = y + step
            feasible = (candidate >= 0).all(1)
            assert ((candidate * scores).sum(1)[feasible] <= value[feasible] + 1e-9).all()


@pytest.mark.parametrize("target", ["all-ones", "min-ip"])
def test_grad2_scores_are_jacobian_products_with_the_target(target):
    _, surrogate = _linear_surrogate("all")
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(5, 3, 2, 2, generator=gen)
    y = torch.softmax(torch.randn(5, 4, generator=gen), 1)
    jac = surrogate.jacobian(x)
    if target == "all-ones":
        t = torch.ones(5, surrogate.size)
    else:
        t = -torch.einsum("nkd,nk->nd", jac, y)
    expected = torch.einsum("nkd,nd->nk", jac, t)
    assert torch.allclose(target_scores(surrogate, x, y, target), expected, atol=1e-5)


@pytest.mark.parametrize("target", ["all-ones", "min-ip"])
@pytest.mark.parametrize("eps", [0.1, 1.0])
def test_grad2_steers_the_clone_update_toward_the_target(target, eps, tiny_splits, tmp_path):
    defender = _defender("grad2", tiny_splits, ArtifactStore(tmp_path), {"eps": eps, "target": target})
    x = _images(2)
    served = _serve(defender, x).double()
    with torch.inference_mode():
        y = torch.softmax(defender.ctx.victim(x), 1).double()
    assert ((served - y).abs().sum(1) <= eps + 1e-5).all()
    assert (served >= 0).all() and torch.allclose(served.sum(1), torch.ones(len(x), dtype=torch.float64))
    jac = defender.surrogate.jacobian(x).double()
    update_clean, update_served = torch.einsum("nkd,nk->nd", jac, y), torch.einsum("nkd,nk->nd", jac, served)
    t = torch.ones_like(update_clean) if target == "all-ones" else -update_clean
    gain = ((update_served - update_clean) * t).sum(1)
    assert (gain > 0).all()  # every answer moves the clone's update along the target


# ----------------------------------------------------------------------------- defences
@pytest.mark.parametrize("name", ["mad", "mad-argmax", "grad2"])
def test_eps_zero_is_exactly_undefended(name, tiny_splits, tmp_path):
    store = ArtifactStore(tmp_path)
    defender = _defender(name, tiny_splits, store, DEFENDERS.get(name).zero_protection_params)
    plain = _defender("undefended", tiny_splits, store)
    x = _images(3)
    assert torch.equal(_serve(defender, x), _serve(plain, x))


def test_grad2_surrogate_is_distilled_once_from_the_defender_split_only(tiny_splits, tmp_path):
    store = ArtifactStore(tmp_path)
    state = torch.random.get_rng_state()
    first = _defender("grad2", tiny_splits, store)  # the Forbidden test / pool splits raise if touched
    assert torch.equal(torch.random.get_rng_state(), state)  # surrogate seeding leaves the global RNG alone
    second = _defender("grad2", tiny_splits, store)
    assert second.prepare()["reused"]
    for a, b in zip(first.surrogate.model.parameters(), second.surrogate.model.parameters()):
        assert torch.equal(a, b)
    other_seed = _defender("grad2", tiny_splits, store, seed=1)
    assert not torch.equal(next(other_seed.surrogate.model.parameters()), next(first.surrogate.model.parameters()))


def test_mad_surrogate_is_random_and_seeded(tiny_splits, tmp_path):
    store = ArtifactStore(tmp_path)
    a, b = _defender("mad", tiny_splits, store), _defender("mad", tiny_splits, store)
    c = _defender("mad", tiny_splits, store, seed=1)
    x = _images(4)
    assert torch.equal(_serve(a, x), _serve(b, x))
    assert not torch.equal(_serve(a, x), _serve(c, x))
