"""ActiveThief (Pal et al., AAAI 2020): model extraction by active learning over an unlabelled pool.

Two registered attacks share this module and differ only in the selection strategy:
- `activethief-kcenter`: greedy k-center (core-set) selection in the space of the clone's
  probability vectors: repeatedly pick the pool image farthest (L2) from every image already
  queried, then treat it as queried;
- `activethief-uncertainty`: the pool images whose clone prediction has the highest entropy.

Procedure (as in the paper): a random validation set (`val_fraction` of the budget) and a
random initial seed set (`seed_fraction`) are labelled through the API; then `iterations`
rounds each (1) train a clone from scratch on every labelled image, keeping the weights that
agree best with the API's labels on the validation set (early stopping with `patience`),
(2) score the unqueried pool with that clone, (3) select the next `k` images and label them.
k = (budget - validation - seed) / iterations; the last round takes any remainder, so the
budget is spent exactly. The clone after the last round is the final clone. Validation
queries count against the budget like every other query.

Labels: the paper queries for the top-1 prediction (hard); soft and top-k answers are accepted
too (they carry strictly more information, and public reimplementations offer them). The
clone trains with cross-entropy on labels or soft cross-entropy on probabilities. Selection
never uses the answers themselves, only the clone's outputs, as in the paper.

Paper settings: 10 % seed, 20 % validation, 10 iterations, Adam, up to 1,000 epochs with
patience 100, budgets 10k-20k from ImageNet/downsampled pools. CPU-scale preset: Adam lr 1e-3,
at most 30 epochs (and at least `min_steps` steps) per training with patience 8, default
budget 1,000 from the 1,200-image mnist5k pool. As in the paper the pool is sampled without
replacement, so the budget cannot exceed the pool.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field

from engines.attackers._common import answer_labels, query_all, targets_from_answers, train_clone
from engines.attackers.base import ATTACKERS, AttackContext, Attacker, AttackerParams
from engines.errors import ArenaError
from engines.oracle import Oracle
from engines.training import TrainConfig, Validation, predict_probs


class ActiveThiefParams(AttackerParams):
    iterations: int = Field(10, ge=1)
    seed_fraction: float = Field(0.1, gt=0, lt=1)
    val_fraction: float = Field(0.2, ge=0, lt=1)
    epochs: int = Field(30, ge=1)
    min_steps: int = Field(200, ge=0)
    patience: int = Field(8, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)


def kcenter_greedy(candidates: torch.Tensor, centers: torch.Tensor, k: int) -> list[int]:
    """Indices of `k` candidate rows chosen greedily, each farthest from all centers so far."""
    if len(centers):
        nearest = torch.cdist(candidates, centers).min(1).values
    else:
        nearest = torch.full((len(candidates),), float("inf"))
    chosen: list[int] = []
    for _ in range(min(k, len(candidates))):
        index = int(nearest.argmax())
        chosen.append(index)
        nearest = torch.minimum(nearest, torch.cdist(candidates, candidates[index : index + 1]).squeeze(1))
        nearest[index] = -1.0
    return chosen


def entropy_top(probs: torch.Tensor, k: int) -> list[int]:
    entropy = -(probs * probs.clamp_min(1e-12).log()).sum(1)
    return entropy.topk(min(k, len(probs))).indices.tolist()


class _ActiveThief(Attacker):
    family = "data-based"
    label_modes = frozenset({"soft", "hard", "topk"})
    default_budget = 1000
    bound_by_pool = True
    Params = ActiveThiefParams
    strategy: ClassVar[str] = ""
    smoke_params = {"iterations": 3, "epochs": 2, "min_steps": 4, "patience": 2}
    smoke_budget = 60
    smoke_label_mode = "soft"

    def validate(self, label_mode: str, query_budget: int, pool_size: int) -> None:
        super().validate(label_mode, query_budget, pool_size)
        p = self.params
        plan = self.plan(query_budget)
        if plan[1] < 1 or plan[2] < p.iterations:
            raise ArenaError(
                f"{self.name} needs a seed set and at least one image per iteration: budget "
                f"{query_budget} is too small for {p.iterations} iterations; raise --budget or lower "
                "iterations"
            )

    def plan(self, budget: int) -> tuple[int, int, int]:
        """(validation, seed, selected over all iterations) query counts for a budget."""
        p = self.params
        val = int(budget * p.val_fraction)
        seed = int(budget * p.seed_fraction)
        return val, seed, budget - val - seed

    def select(self, clone, remaining: torch.Tensor, labelled: torch.Tensor, k: int, ctx: AttackContext) -> list[int]:
        pool = ctx.pool.images
        probs = predict_probs(clone, pool[remaining], ctx.device)
        if self.strategy == "kcenter":
            return kcenter_greedy(probs, predict_probs(clone, pool[labelled], ctx.device), k)
        return entropy_top(probs, k)

    def run(self, oracle: Oracle, ctx: AttackContext):
        p = self.params
        pool = ctx.pool.images  # labels of the pool are never read
        val_n, seed_n, selectable = self.plan(oracle.query_budget)
        order = torch.randperm(len(pool), generator=ctx.generator(1))
        val_idx, labelled = order[:val_n], order[val_n : val_n + seed_n]
        remaining = order[val_n + seed_n :]
        val = None
        if val_n:  # early stopping on agreement with the API's labels; ties keep the earlier epoch
            labels = answer_labels(query_all(oracle, pool[val_idx], ctx), oracle.label_mode)
            val = Validation(pool[val_idx], labels, metric="agreement", patience=p.patience, ties="earlier")
        answers = query_all(oracle, pool[labelled], ctx)
        recipe = TrainConfig(
            epochs=p.epochs,
            batch_size=p.batch_size,
            optimizer="adam",
            lr=p.lr,
            weight_decay=p.weight_decay,
            schedule="cosine",
            augment=False,
        )
        per_round = [selectable // p.iterations] * p.iterations
        per_round[-1] += selectable - sum(per_round)
        clone = None
        for it in range(p.iterations + 1):
            ctx.should_stop()
            clone = train_clone(
                ctx,
                pool[labelled],
                targets_from_answers(answers, oracle),
                100 + it,
                recipe,
                arch=p.clone_arch,
                min_steps=p.min_steps,
                val=val,
            )
            ctx.progress(oracle.queries_used, oracle.query_budget, f"iteration {it}: {len(labelled)} labelled images")
            ctx.checkpoint_if_due(clone, oracle.queries_used, force=it == p.iterations)
            if it == p.iterations:
                break
            picks = self.select(clone, remaining, labelled, per_round[it], ctx)
            keep = torch.ones(len(remaining), dtype=torch.bool)
            keep[torch.tensor(picks, dtype=torch.long)] = False
            new = remaining[torch.tensor(picks, dtype=torch.long)]
            remaining = remaining[keep]
            answers = torch.cat([answers, query_all(oracle, pool[new], ctx)])
            labelled = torch.cat([labelled, new])
        return clone


@ATTACKERS.register("activethief-kcenter")
class ActiveThiefKCenter(_ActiveThief):
    description = "ActiveThief, k-center selection on clone outputs from the pool (data-based; soft/hard/top-k)"
    strategy = "kcenter"


@ATTACKERS.register("activethief-uncertainty")
class ActiveThiefUncertainty(_ActiveThief):
    description = "ActiveThief, max-entropy (uncertainty) selection from the pool (data-based; soft/hard/top-k)"
    strategy = "uncertainty"
    smoke_label_mode = "topk"
