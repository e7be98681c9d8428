"""DFME/MAZE fast paths (channels-last clone and generator, inputs handed over in the clone's
layout) compute the plain loop's iteration: same queries, same updates, equal results.

Why the whole-iteration comparison runs in float64: the zeroth-order estimate divides loss
differences by the step (1e-3), so float32 rounding differences between two kernel layouts
(~1e-6 in the clone's outputs) come out ~1e3 larger in the generator's gradient, and DFME's
first Adam step is sign-like; one float32 iteration of either layout therefore differs from
the other far beyond rounding, as would one on another thread count. In float64 that noise is
~1e-13 and the comparison checks the computation itself (tolerance 1e-9). The float32 pieces
that carry no such amplification are compared directly (tolerance 1e-4 relative)."""

import copy

import pytest
import torch
import torch.nn.functional as F

from engines.attackers import _common
from engines.attackers._generators import UpsampleGenerator
from engines.attackers.base import AttackContext
from engines.attackers.dfme import Dfme, DfmeParams, estimate_generator_gradient
from engines.attackers.maze import Maze, MazeParams
from engines.models.base import build_model
from engines.oracle import Oracle

SHAPE = (3, 32, 32)
NORM = ((0.5,) * 3, (0.25,) * 3)
# one iteration each; generator width 16 -> 32-channel convolutions: channels-last by the rule
ATTACKS = {
    "dfme": (Dfme, DfmeParams, {"batch_size": 4, "generator_width": 16, "nz": 8, "d_iter": 2}, 4 * (2 + 2)),
    "maze": (
        Maze,
        MazeParams,
        {"batch_size": 4, "generator_width": 16, "nz": 8, "ndirs": 2, "iter_clone": 2, "iter_exp": 1},
        4 * (3 + 1),
    ),
}


def _oracle(budget: int) -> Oracle:
    torch.manual_seed(123)
    victim = build_model("lenet5", 3, 10, *NORM).float().eval()
    return Oracle(lambda x: torch.softmax(victim(x), 1), budget, "soft", 10, SHAPE, torch.device("cpu"))


def _play(attacker: str, fast: bool, monkeypatch, clone_arch: str = "resnet18_8x", precision: str = "fp32"):
    """One iteration; returns the clone, the oracle and the layouts the networks trained in."""
    cls, params_cls, params, budget = ATTACKS[attacker]
    monkeypatch.setattr(_common, "FAST_PATHS", fast)
    layouts = []
    in_layout = _common.in_layout

    def spy(model):
        model, layout = in_layout(model)
        layouts.append(layout)
        return model, layout

    monkeypatch.setattr(f"engines.attackers.{attacker}.in_layout", spy)
    oracle = _oracle(budget)
    ctx = AttackContext("cifar10", 10, SHAPE, *NORM, pool=None, device=torch.device("cpu"), seed=3, checkpoints=[])
    clone = cls(params_cls(**params, clone_arch=clone_arch, precision=precision)).run(oracle, ctx)
    return clone, oracle, layouts


def _relative(before: dict, after: dict) -> float:
    """Global relative distance of two state dicts' floating tensors."""
    keys = [k for k, v in before.items() if v.is_floating_point()]
    difference = sum(((after[k] - before[k]).double() ** 2).sum() for k in keys) ** 0.5
    return float(difference / sum((before[k].double() ** 2).sum() for k in keys) ** 0.5)


def test_the_rule_picks_channels_last_for_wide_nets_only(monkeypatch):
    monkeypatch.setattr(_common, "FAST_PATHS", True)
    wide = build_model("resnet18_8x", 3, 10, *NORM)
    assert _common.training_layout(wide) == torch.channels_last
    assert _common.training_layout(UpsampleGenerator(8, 16, 3)) == torch.channels_last
    # LeNet-size clones and the tiny reference runs' generators keep the default layout
    assert _common.training_layout(build_model("lenet5", 1, 10, (0.5,), (0.25,))) == torch.contiguous_format
    assert _common.training_layout(UpsampleGenerator(8, 8, 1)) == torch.contiguous_format
    monkeypatch.setattr(_common, "FAST_PATHS", False)
    assert _common.training_layout(wide) == torch.contiguous_format


@pytest.mark.parametrize("attacker", sorted(ATTACKS))
def test_one_fast_iteration_equals_the_plain_one_in_float64(attacker, monkeypatch):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # the attack's own networks; the victim answers in float32
    try:
        plain, plain_oracle, plain_layouts = _play(attacker, False, monkeypatch)
        fast, fast_oracle, fast_layouts = _play(attacker, True, monkeypatch)
    finally:
        torch.set_default_dtype(previous)
    assert plain_layouts == [torch.contiguous_format] * 2  # generator, clone
    assert fast_layouts == [torch.channels_last] * 2
    assert fast_oracle.queries_used == plain_oracle.queries_used == plain_oracle.query_budget
    assert fast_oracle.calls == plain_oracle.calls
    plain_state, fast_state = plain.state_dict(), fast.state_dict()
    assert all(tensor.is_contiguous() for tensor in fast_state.values())  # handed back in the default layout
    assert plain_state["1.stem.0.weight"].dtype == torch.float64
    # the clone did train (batch-norm statistics start at zero): not two initial states compared
    assert plain_state["1.stem.1.running_mean"].abs().sum() > 0
    assert _relative(plain_state, fast_state) < 1e-9
    for name, before in plain_state.items():
        if not before.is_floating_point():
            assert torch.equal(before, fast_state[name]), name


def test_float32_pieces_equal_the_plain_computation(monkeypatch):
    """A clone training step and the probes' losses, channels-last against the default layout."""
    torch.manual_seed(0)
    plain = build_model("resnet18_8x", 3, 10, *NORM)
    fast = copy.deepcopy(plain).to(memory_format=torch.channels_last)
    x, target = torch.rand(8, *SHAPE), torch.randn(8, 10)
    for model, layout in ((plain, torch.contiguous_format), (fast, torch.channels_last)):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
        model.train()
        F.l1_loss(model(x.contiguous(memory_format=layout)), target).backward()
        optimizer.step()
    assert _relative(plain.state_dict(), fast.state_dict()) < 1e-4

    pre = UpsampleGenerator(8, 16, 3)(torch.randn(4, 8)).detach()
    losses = []
    for model, flag in ((plain.eval(), False), (fast.eval(), True)):
        monkeypatch.setattr(_common, "FAST_PATHS", flag)
        torch.manual_seed(5)
        oracle = _oracle(8)
        losses.append(estimate_generator_gradient(pre, model, oracle, 1, 1e-3)[1])
        assert oracle.queries_used == 8
    assert losses[1] == pytest.approx(losses[0], rel=1e-4)


@pytest.mark.parametrize("attacker", sorted(ATTACKS))
def test_bf16_is_opt_in_and_spends_the_same_queries(attacker, monkeypatch):
    assert ATTACKS[attacker][1]().precision == "fp32"
    clone, oracle, _ = _play(attacker, True, monkeypatch, clone_arch="lenet5", precision="bf16")
    assert oracle.queries_used == oracle.query_budget
    assert all(torch.isfinite(p).all() and p.dtype == torch.float32 for p in clone.parameters())
