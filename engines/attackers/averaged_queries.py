"""`averaged-queries`: KnockoffNets with every pool image asked `repeats` times and the answers
averaged, the standard way to undo randomised answers.

Against a defence that adds fresh random noise to each answer (`randp`; the random-noise
baseline of Orekondy et al., ICLR 2020, and any defence keyed per query), the mean of r
answers to the same image has r times less noise variance, at r times the query cost: the
trade the prediction-poisoning paper points to when it argues that a perturbation must not be
zero-mean noise an attacker can average away. Deterministic defences gain nothing from it
(the r answers are equal), which makes the attacker a control as well.

Mechanism: draw n = budget // repeats pool images uniformly without replacement (as
`knockoff`), ask each one `repeats` times (every ask is a query: exactly repeats * n queries
are spent; a remainder smaller than `repeats` is left unspent), and train the clone on
- soft / top-k: the mean of the r probability vectors (renormalised, soft cross-entropy);
- hard: the majority vote of the r labels (ties to the lower class index).
At each budget checkpoint t the clone is retrained from scratch (or, with `warm_start`,
continued) on the t // repeats images bought so far, with the KnockoffNets CPU-scale recipe
(`knockoff.knockoff_clone`). Default repeats 4 (the noise's standard deviation halves; chosen
here, not taken from a paper); the default budget is KnockoffNets' 1,200 times 4.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from engines.attackers._common import query_all, targets_from_answers
from engines.attackers.base import ATTACKERS, AttackContext, Attacker
from engines.attackers.knockoff import KnockoffParams, knockoff_clone
from engines.errors import ArenaError
from engines.oracle import Oracle


class AveragedQueriesParams(KnockoffParams):
    repeats: int = Field(4, ge=1, le=1000)  # answers bought per pool image


def average_answers(answers: torch.Tensor, repeats: int, oracle: Oracle) -> torch.Tensor:
    """Training targets from answers laid out image-major ((n * repeats,) or (n * repeats, C)):
    mean probabilities (soft, top-k) or majority-vote labels (hard)."""
    if oracle.label_mode == "hard":
        votes = F.one_hot(answers.long(), oracle.num_classes).view(-1, repeats, oracle.num_classes).sum(1)
        return votes.argmax(1)  # ties: the lower class index
    mean = answers.float().view(-1, repeats, answers.shape[1]).mean(1)
    return targets_from_answers(mean, oracle)


@ATTACKERS.register("averaged-queries")
class AveragedQueries(Attacker):
    description = "KnockoffNets asking each pool image r times and averaging the answers (undoes random noise)"
    family = "data-based"
    label_modes = frozenset({"soft", "hard", "topk"})
    default_budget = 4800
    Params = AveragedQueriesParams
    base_attack = "knockoff"  # adapts KnockoffNets to randomised answers
    smoke_params = {"epochs": 1, "min_steps": 4, "repeats": 2}
    smoke_budget = 40
    smoke_label_mode = "soft"

    def validate(self, label_mode: str, query_budget: int, pool_size: int) -> None:
        type(self).check(label_mode, query_budget, pool_size)
        r = self.params.repeats
        if query_budget < r:
            raise ArenaError(f"averaged-queries asks each image {r} times: budget {query_budget} buys no image")
        if query_budget // r > pool_size:
            raise ArenaError(
                f"averaged-queries asks {query_budget // r} distinct pool images ({r} times each) but the pool has "
                f"{pool_size}; lower --budget, raise repeats or choose a larger --pool"
            )

    def run(self, oracle: Oracle, ctx: AttackContext):
        p = self.params
        r = p.repeats
        count = oracle.query_budget // r
        order = torch.randperm(len(ctx.pool), generator=ctx.generator(1))[:count]
        images = ctx.pool.images[order]  # uint8; labels of the pool are never read
        # scoring points in images bought: every checkpoint rounded down to whole images
        stops = sorted({t // r for t in ctx.checkpoints if t // r > 0} | {count})
        answers: list[torch.Tensor] = []
        bought = 0
        clone = None
        for index, stop in enumerate(stops):
            asked = images[bought:stop].repeat_interleave(r, dim=0)  # image-major: r asks in a row
            answers.append(query_all(oracle, asked, ctx, chunk=p.query_batch))
            bought = stop
            targets = average_answers(torch.cat(answers), r, oracle)
            ctx.progress(oracle.queries_used, oracle.query_budget, f"training clone on {bought} averaged answers")
            clone = knockoff_clone(ctx, clone, images[:bought], targets, index, p)
            ctx.checkpoint_if_due(clone, oracle.queries_used, force=True)
        return clone
