"""JBDA: Jacobian-based dataset augmentation (Papernot et al., AsiaCCS 2017).

The attacker starts from a small seed set drawn from its pool, labels it through the API and
trains the clone. Each augmentation round then adds, for every point x of the current set,
the synthetic point

    x' = clip(x + lambda_r * sign(d clone_{y(x)}(x) / dx), 0, 1)

where y(x) is the API's label of x, and labels the new points through the API (each new
point is one query; points already labelled are never asked again). The clone keeps training
on the growing set after every round. The step alternates sign every `flip_every` rounds
(lambda_r = lambda * (-1)^floor(r / tau), the paper's periodic step size). Once the set has
`reservoir_after` rounds behind it, each round augments a random subset of at most
`max_new_per_round` points (the paper's reservoir sampling), so large budgets stay tractable.
Rounds continue until the budget is spent; the last round is cut to what is left.

Labels: hard (the paper) or soft / top-k. The Jacobian direction always uses the top-1
answer; the clone trains on labels (hard) or on the renormalised probabilities.

Paper settings (MNIST): 150 seeds from the test set, 6 substitute epochs (rounds), lambda 0.1
in [0, 1] pixel space, tau 3, 10 training epochs per round, SGD lr 1e-2 momentum 0.9.
Arena defaults: 100 seeds from the attacker pool (the catalogue's ~100), 6 rounds
(100 -> 3,200 images = the default budget of 3,200 queries), lambda 0.1, tau 3, 10 epochs per
round with at least `min_steps_per_round` optimizer steps so the first rounds on 100 images
are not scored on a barely trained clone.
"""

from __future__ import annotations

import torch
from pydantic import Field

from engines.attackers._common import answer_labels, query_all, targets_from_answers
from engines.attackers.base import ATTACKERS, AttackContext, Attacker, AttackerParams
from engines.data.base import to_floats
from engines.errors import ArenaError
from engines.oracle import Oracle
from engines.training import TrainConfig, fit, make_optimizer


class JbdaParams(AttackerParams):
    num_seeds: int = Field(100, ge=1)
    lam: float = Field(0.1, gt=0)
    flip_every: int = Field(3, ge=1)
    epochs_per_round: int = Field(10, ge=1)
    min_steps_per_round: int = Field(100, ge=0)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    reservoir_after: int = Field(6, ge=1)
    max_new_per_round: int = Field(3200, ge=1)


def jacobian_step(
    clone, images: torch.Tensor, labels: torch.Tensor, lam: float, device: torch.device, chunk: int = 512
) -> torch.Tensor:
    """x + lam * sign(d logit_label / dx), clipped to [0, 1]; float images on CPU."""
    clone.eval()
    out = []
    for start in range(0, len(images), chunk):
        x = images[start : start + chunk].to(device).requires_grad_(True)
        logits = clone(x)
        # rows are independent in eval mode, so the gradient of the sum is per-row
        selected = logits.gather(1, labels[start : start + chunk].to(device).view(-1, 1)).sum()
        (grad,) = torch.autograd.grad(selected, x)
        out.append((x.detach() + lam * grad.sign()).clamp_(0.0, 1.0).cpu())
    return torch.cat(out)


@ATTACKERS.register("jbda")
class Jbda(Attacker):
    description = "JBDA (Papernot et al.): seed set grown by Jacobian-sign steps of the clone (data-based)"
    family = "data-based"
    label_modes = frozenset({"soft", "hard", "topk"})
    default_budget = 3200
    Params = JbdaParams
    smoke_params = {"num_seeds": 10, "epochs_per_round": 1, "min_steps_per_round": 2}
    smoke_budget = 75
    smoke_label_mode = "hard"

    def validate(self, label_mode: str, query_budget: int, pool_size: int) -> None:
        super().validate(label_mode, query_budget, pool_size)
        seeds = self.params.num_seeds
        if seeds > pool_size:
            raise ArenaError(f"jbda needs {seeds} seed images but the query pool has {pool_size}; lower num_seeds")
        if query_budget < seeds:
            raise ArenaError(f"jbda spends {seeds} queries on its seed set alone; raise --budget to at least {seeds}")

    def run(self, oracle: Oracle, ctx: AttackContext):
        p = self.params
        seeds = min(p.num_seeds, oracle.remaining)
        order = torch.randperm(len(ctx.pool), generator=ctx.generator(1))[:seeds]
        data = to_floats(ctx.pool.images[order])  # labels of the pool are never read
        answers = query_all(oracle, data, ctx)
        torch.manual_seed(ctx.seed * 7919 + 1)
        clone = ctx.build_clone(p.clone_arch)
        # one optimizer for every round (its momentum carries over), constant learning rate
        recipe = TrainConfig(
            epochs=p.epochs_per_round,
            batch_size=p.batch_size,
            lr=p.lr,
            momentum=p.momentum,
            weight_decay=p.weight_decay,
            schedule="constant",
            augment=False,
        )
        opt = make_optimizer(clone.parameters(), recipe)
        batches = ctx.generator(2)
        pick = ctx.generator(3)
        round_index = 0
        while True:
            targets = targets_from_answers(answers, oracle)
            fit(
                clone,
                data,
                targets,
                recipe,
                ctx.device,
                batches,
                should_stop=ctx.should_stop,
                min_steps=p.min_steps_per_round,
                optimizer=opt,
            )
            ctx.progress(oracle.queries_used, oracle.query_budget, f"round {round_index + 1}: {len(data)} images")
            ctx.checkpoint_if_due(clone, oracle.queries_used)
            if oracle.remaining == 0:
                break
            lam = p.lam * (-1) ** (round_index // p.flip_every)
            source = torch.arange(len(data))
            if round_index + 1 >= p.reservoir_after and len(data) > p.max_new_per_round:
                source = torch.randperm(len(data), generator=pick)[: p.max_new_per_round]
            source = source[: oracle.remaining]
            labels = answer_labels(answers[source], oracle.label_mode)
            new = jacobian_step(clone, data[source], labels, lam, ctx.device)
            new_answers = query_all(oracle, new, ctx)
            data = torch.cat([data, new])
            answers = torch.cat([answers, new_answers])
            round_index += 1
        self.rounds = round_index + 1
        return clone
