"""MAZE: data-free model extraction with zeroth-order gradient estimation (Kariyappa et al., CVPR 2021).

A generator G and the clone S play a min-max game on synthetic queries, as in DFME, with
MAZE's choices (read from sanjaykariyappa/MAZE, `attacks/maze.py` and `attack_utils.py`):
- loss: forward KL(T || S) between the API's probability vector T and the clone's softmax;
  G maximises it, S minimises it;
- G's gradient through the black box is estimated with forward differences along `ndirs`
  random directions, each normalised per sample, on G's pre-tanh output x_pre:
      grad = (d / ndirs) * sum_j [L(x_pre + mu u_j) - L(x_pre)] / mu * u_j / batch,
  with d = C*H*W and L the per-sample -KL; the estimate is back-propagated through G;
- per iteration: `iter_gen` generator steps, each querying batch*(1+ndirs) images (the point
  and its probes), then `iter_clone` clone steps; the first clone step reuses the generator
  step's last batch and its answers, so an iteration costs
      batch * (iter_gen*(1+ndirs) + iter_clone - 1)   queries (reference: 128*(11+4) = 1,920);
- experience replay: each iteration's last clone batch (images and answers) joins a replay
  set and the clone takes `iter_exp` extra steps on random batches of it (no queries);
- SGD (momentum 0.9, weight decay 5e-4) for both, lr_clone 0.1 (lr_gen: see below), cosine schedule
  over the iterations.
Every evaluated image, probes included, is a query through the oracle. Queries left over after
the last whole iteration (fewer than one iteration's cost) are spent on clone steps over fresh
generator samples, so the attack stops exactly at its budget.

Soft labels only: the KL loss and the finite differences need the API's probability vector.
`target="probs-as-logits"` replays the public MISLEADER script's protocol: T = softmax(p)
instead of p (see `_common.api_logits`).

Paper settings: batch 128, latent 100, ndirs 10, mu 1e-3, iter_clone 5, iter_exp 10,
SGD lr_gen 1e-4, budgets 5M-30M (FashionMNIST 5M).

CPU-scale preset (documented deviations; default budget 300k queries = 156 iterations, 6 % of
5M): generator width 16 (the reference's 64 quartered: the generator's convolutions dominate
the CPU time), replay capacity 50k images, and lr_gen 1e-2 instead of 1e-4. Why: with SGD at
1e-4 the generator barely moves in 156 iterations, so the clone distils on the untrained
generator's samples plus replay and stalls far below the victim; at 1e-2 the generator
spreads its samples over the classes within the budget. `benchmarks/attacks.py` prints both
settings side by side (docs/results.md, "CPU-scale presets against the paper's values").
Pass `lr_gen=1e-4` for the paper's value.

Fast paths, shared with DFME (see its module docstring): channels-last clone and generator by
the fixed architecture rule of `_common.training_layout`, batches handed to the clone in its
layout; same draws, queries, losses and updates as the plain loop (equal within 1e-9 in
float64, tests/test_data_free_fast_paths.py). `precision="bf16"` is the same opt-in as DFME's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch.profiler import record_function

from engines.attackers._common import (
    ApiTarget,
    Precision,
    ReplayBuffer,
    api_logits,
    autocast_bf16,
    full_precision,
    in_layout,
    kl_to_probs,
    training_layout,
)
from engines.attackers._generators import UpsampleGenerator, to_pixels
from engines.attackers.base import ATTACKERS, AttackContext, Attacker, AttackerParams
from engines.errors import ArenaError
from engines.oracle import Oracle
from engines.training import train_step


class MazeParams(AttackerParams):
    batch_size: int = Field(128, ge=1)
    nz: int = Field(100, ge=1)
    generator_width: int = Field(16, ge=2)  # reference: 64
    ndirs: int = Field(10, ge=1)
    mu: float = Field(1e-3, gt=0)
    iter_gen: int = Field(1, ge=1)
    iter_clone: int = Field(5, ge=1)
    iter_exp: int = Field(10, ge=0)
    lr_clone: float = Field(0.1, gt=0)
    lr_gen: float = Field(1e-2, gt=0)  # paper: 1e-4
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    replay_capacity: int = Field(50_000, ge=1)
    # what stands in for the victim's logits (see `api_logits`); recorded with the match
    target: ApiTarget = "log-probs"
    # "bf16": the clone's training steps and the generator under bfloat16 autocast (opt-in;
    # the probes stay float32, where a forward difference of step 1e-3 needs the precision)
    precision: Precision = "fp32"


def teacher_distribution(answers: torch.Tensor, target: ApiTarget) -> torch.Tensor:
    """T in MAZE's KL(T || S): softmax of the API's stand-in logits. Under `log-probs` that
    is the answer itself (returned as is, not recomputed)."""
    return answers if target == "log-probs" else torch.softmax(api_logits(answers, target), dim=1)


def per_sample_neg_kl(probs: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """-KL(p || softmax(logits)) per row."""
    return -F.kl_div(F.log_softmax(logits, dim=1), probs, reduction="none").sum(1)


def zeroth_order_backward(
    pre: torch.Tensor, clone, oracle: Oracle, p: MazeParams, generator: torch.Generator, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Estimate d(-KL)/d(pre) with forward differences, back-propagate it into the generator.

    Queries len(pre) * (1 + ndirs) images. Returns the unperturbed images, their answers and
    the mean KL."""
    n = pre.shape[0]
    dim = pre[0].numel()
    with torch.no_grad():
        base = pre.detach()
        directions = torch.randn((p.ndirs, *base.shape), generator=generator).to(device)
        directions = directions / directions.flatten(2).norm(dim=2).view(p.ndirs, n, *([1] * (base.ndim - 1)))
        points = torch.cat([base.unsqueeze(0), base.unsqueeze(0) + p.mu * directions]).flatten(0, 1)
        # the clone's inputs in its weights' layout, so no convolution reorders them
        images = to_pixels(points).contiguous(memory_format=training_layout(clone))
        with record_function("victim answers"):
            answers = teacher_distribution(oracle.query(images), p.target)
        with record_function("clone on probes"):
            loss = per_sample_neg_kl(answers, clone(images)).view(1 + p.ndirs, n)
        differences = (loss[1:] - loss[:1]) / p.mu  # (ndirs, n)
        grad = (dim / p.ndirs) * (differences.view(p.ndirs, n, *([1] * (base.ndim - 1))) * directions).sum(0) / n
    with record_function("generator backward"):
        pre.backward(grad)
    return images[:n], answers[:n], float(-loss[0].mean())


@ATTACKERS.register("maze")
class Maze(Attacker):
    description = "MAZE, data-free: generator vs clone, KL loss, zeroth-order gradients, experience replay (soft)"
    family = "data-free"
    label_modes = frozenset({"soft"})
    default_budget = 300_000
    Params = MazeParams
    smoke_params = {"batch_size": 8, "ndirs": 2, "generator_width": 4, "nz": 8, "iter_exp": 2}
    smoke_budget = 8 * (3 + 4) * 2 + 5  # two iterations and 5 queries left over for clone steps
    smoke_label_mode = "soft"

    def iteration_cost(self) -> int:
        p = self.params
        return p.batch_size * (p.iter_gen * (1 + p.ndirs) + p.iter_clone - 1)

    def validate(self, label_mode: str, query_budget: int, pool_size: int) -> None:
        super().validate(label_mode, query_budget, pool_size)
        cost = self.iteration_cost()
        if query_budget < cost:
            raise ArenaError(
                f"maze needs at least {cost} queries for one iteration with these settings; "
                "raise --budget or lower batch_size / ndirs"
            )

    def run(self, oracle: Oracle, ctx: AttackContext):
        p = self.params
        cost = self.iteration_cost()
        iterations = oracle.remaining // cost
        if iterations < 1:
            raise ArenaError(f"maze needs {cost} queries per iteration; raise --budget")
        channels, size = ctx.image_shape[0], ctx.image_shape[1]
        torch.manual_seed(ctx.seed * 7919 + 1)
        generator, _ = in_layout(UpsampleGenerator(p.nz, p.generator_width, channels, size).to(ctx.device))
        clone, layout = in_layout(ctx.build_clone(p.clone_arch))
        bf16 = p.precision == "bf16"
        opt_s = torch.optim.SGD(clone.parameters(), lr=p.lr_clone, momentum=p.momentum, weight_decay=p.weight_decay)
        opt_g = torch.optim.SGD(generator.parameters(), lr=p.lr_gen, momentum=p.momentum, weight_decay=p.weight_decay)
        sched_s = torch.optim.lr_scheduler.CosineAnnealingLR(opt_s, iterations)
        sched_g = torch.optim.lr_scheduler.CosineAnnealingLR(opt_g, iterations)
        noise, probes, replay_draws = ctx.generator(2), ctx.generator(3), ctx.generator(4)
        replay = ReplayBuffer(p.replay_capacity)

        def sample_z(n: int) -> torch.Tensor:
            return torch.randn((n, p.nz), generator=noise).to(ctx.device)

        def clone_loss_fn(logits: torch.Tensor, answers: torch.Tensor) -> torch.Tensor:
            return kl_to_probs(full_precision(logits), answers)

        def clone_step(x: torch.Tensor, answers: torch.Tensor) -> float:
            clone.train()
            with record_function("clone training"), autocast_bf16(ctx.device, bf16):
                x = x.contiguous(memory_format=layout)
                return train_step(clone, clone_loss_fn, x, answers, opt_s).item()  # schedule: per iteration

        generator.train()
        for iteration in range(iterations):
            ctx.should_stop()
            clone.eval()
            for param in clone.parameters():
                param.requires_grad_(False)
            for _ in range(p.iter_gen):
                opt_g.zero_grad(set_to_none=True)
                with record_function("generator forward"), autocast_bf16(ctx.device, bf16):
                    pre = full_precision(generator(sample_z(p.batch_size)))
                x, answers, gen_kl = zeroth_order_backward(pre, clone, oracle, p, probes, ctx.device)
                opt_g.step()
            for param in clone.parameters():
                param.requires_grad_(True)
            for c in range(p.iter_clone):
                if c > 0:
                    with record_function("generator forward"), torch.no_grad(), autocast_bf16(ctx.device, bf16):
                        x = to_pixels(full_precision(generator(sample_z(p.batch_size))))
                    with record_function("victim answers"):
                        answers = teacher_distribution(oracle.query(x), p.target)
                clone_loss = clone_step(x, answers)
            replay.add(x, answers)
            if replay.size >= p.batch_size:
                for _ in range(p.iter_exp):
                    xr, ar = replay.sample(p.batch_size, replay_draws)
                    clone_step(xr.to(ctx.device), ar.to(ctx.device))
            sched_s.step()
            sched_g.step()
            ctx.progress(
                oracle.queries_used,
                oracle.query_budget,
                f"iteration {iteration + 1}/{iterations}: clone KL {clone_loss:.3f}, generator KL {gen_kl:.3f}",
            )
            clone.eval()
            ctx.checkpoint_if_due(clone, oracle.queries_used)
        while oracle.remaining > 0:  # fewer queries left than one iteration: clone steps on fresh samples
            ctx.should_stop()
            with torch.no_grad(), autocast_bf16(ctx.device, bf16):
                x = to_pixels(full_precision(generator(sample_z(min(p.batch_size, oracle.remaining)))))
            clone_step(x, teacher_distribution(oracle.query(x), p.target))
        clone.eval()
        return clone.to(memory_format=torch.contiguous_format)
