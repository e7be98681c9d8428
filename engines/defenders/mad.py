"""Prediction Poisoning (MAD): Orekondy, Schiele & Fritz, "Prediction Poisoning: Towards
Defenses Against DNN Model Stealing Attacks", ICLR 2020 (code: tribhuvanesh/prediction-poisoning).

What is perturbed: the victim's probability vector y, per query, inside an L1 ball of radius
`eps` on the probability simplex, chosen so that the gradient an attacker's clone would take
on the answer points away from the gradient it would take on y.

Algorithm as implemented (per image; every step is batched over the query batch):
1. G: the Jacobian of the log-probabilities of a surrogate the defender owns (K x D) on the
   image. The surrogate is the family's default architecture (LeNet-5 for MNIST-like sets),
   randomly initialised from the defender's seed and never trained: the code's README says
   its surrogates are "randomly-initialized models exhibiting chance-level performance"
   (created by a training run at learning rate 0). The Jacobian is taken against the final
   linear layer's weight only (`grad_params="last"`), as `compute_jacobian_nll` in
   `defenses/victim/bb_mad.py` does (it differentiates `parameters()[-2]`, the FC weight, to
   avoid back-propagating through the network). `grad_params="all"` takes every parameter.
2. The objective is the angular deviation ||u/|u| - v/|v|||^2 with u = G^T y~, v = G^T y
   (`calc_objective`, the `objmax:True` setting of the README's run command; the sign of G is
   immaterial). It only needs the K x K Gram matrix M = G G^T: u.v = a^T M y, |u|^2 = a^T M a.
3. y*: the candidate maximising the objective (the "extreme" oracle). `mad`: the simplex
   vertices e_k. `mad-argmax` (the "argmax" oracle, argmax-preserving): the uniform
   distributions over every class set S that contains the victim's top class k*, with k*
   up-weighted by 1e-5 so it stays the strict maximum; all 2^(K-1) sets for K <= 10, and for
   K > 10 the code's greedy search (grow S one class at a time, the best addition each time,
   keep the best set seen, stop after 1,024 evaluated candidates).
4. Line search toward y*: y~ = (1 - alpha) y + alpha y* with the closed-form
   alpha = eps / (||y - y*||_1 + 1e-7) clipped to [0, 1] (`closed_form_alpha_estimate`, the
   code's default `optim='linesearch'`, `ydist='l1'`). y~ is a convex combination of two
   points of the simplex, so it stays on the simplex, and ||y~ - y||_1 <= eps.
At eps = 0 the victim's probabilities are served unchanged (the code skips the defence then).

Knob: `eps`, the L1 budget (0 to 2, the L1 diameter of the simplex). Default 0.5, the value
in the code's README run command; trade-off points 0.1, 0.25, 0.5, 1.0 (the GRAD² code
sweeps MAD over 0.0-1.0).

With the last-layer Jacobian, row k of G is (e_k - q) h^T (q: the surrogate's probabilities,
h: its penultimate features), so G^T a = (a - q) h^T for any a on the simplex and the angle
between G^T y~ and G^T y is the angle between y~ - q and y - q: the objective depends on the
surrogate only through q (tests/test_gradient_defences.py checks the outer-product form).

Deviations: the code perturbs one image at a time (batch size 1); here all steps are batched
tensor operations with the same result per image. The greedy search (K > 10) scores against y
itself, not y + 1e-8 renormalised as the code does against underflow; a zero gradient is
handled instead by the clamp in `angular_deviation` (it then counts as orthogonal).
`mad-argmax` additionally falls back to y for an image in the (floating-point tie) case where
the served argmax would differ from the victim's, so its guarantee holds on every input.

Cost, measured at batch 256 on one CPU thread (LeNet-5 victim and surrogate on mnist5k, best
of 5 serves; benchmarks/output_defences.py reports the same comparison): undefended ~9,700
queries/s, `mad` ~3,300 (0.34x), `mad-argmax` ~1,700 (0.18x: 2^10 candidate sets scored per
image, half of them masked), `mad` with `grad_params="all"` ~60 (0.006x: a 10 x 61,706
Jacobian per image). CIFAR family (ResNet-34-8x, batch 16): undefended 12.8 queries/s, `mad`
6.8 (0.53x).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from engines.defenders._surrogate import Surrogate, random_surrogate, resolve_arch
from engines.defenders.base import DEFENDERS, Defender

TIE_BREAK = 1e-5  # weight added to the top class in argmax-preserving candidates (the code's value)
GREEDY_CANDIDATES = 1024  # candidates the greedy argmax-preserving search evaluates (K > 10)
EXHAUSTIVE_MAX_CLASSES = 10


class MadParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    eps: float = Field(0.5, ge=0, le=2)  # L1 budget ||y~ - y||_1 <= eps
    grad_params: Literal["last", "all"] = "last"  # parameters the surrogate's Jacobian is taken against
    surrogate_arch: str = "auto"  # "auto": the data set family's default architecture


@DEFENDERS.register("mad")
class Mad(Defender):
    description = "Prediction Poisoning (MAD): L1-bounded answer that turns a surrogate's gradient away"
    Params = MadParams
    smoke_params: ClassVar[dict] = {}
    knob: ClassVar[str | None] = "eps"
    knob_values: ClassVar[tuple] = (0.1, 0.25, 0.5, 1.0)
    zero_protection_params: ClassVar[dict | None] = {"eps": 0.0}
    argmax_preserving: ClassVar[bool] = False

    @classmethod
    def preserves_top1(cls, params: BaseModel) -> bool:
        return cls.argmax_preserving

    def prepare(self) -> dict:
        self.ctx.victim.eval()
        arch = resolve_arch(self.ctx, self.params.surrogate_arch)
        self.surrogate = Surrogate(random_surrogate(self.ctx, arch, seed_offset=31), self.params.grad_params)
        return {"surrogate": arch, "surrogate_init": "random", "jacobian_params": self.surrogate.size}

    def serve(self, images: torch.Tensor) -> torch.Tensor:
        y = torch.softmax(self.ctx.victim_logits(images), dim=1)
        if self.params.eps == 0:
            return y
        jac = self.surrogate.jacobian(images)
        gram = jac @ jac.transpose(1, 2)
        y_star = (argmax_preserving_target if self.argmax_preserving else extreme_target)(gram, y.float())
        served = line_search(y.float(), y_star, self.params.eps).to(y.dtype)
        if self.argmax_preserving:  # floating-point ties only: never change the top-1 label
            changed = served.argmax(1) != y.argmax(1)
            served[changed] = y[changed]
        return served


@DEFENDERS.register("mad-argmax")
class MadArgmax(Mad):
    description = "Prediction Poisoning (MAD), argmax-preserving: the top-1 label is never changed"
    argmax_preserving = True


def angular_deviation(gram: torch.Tensor, candidates: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """||G^T a/|G^T a| - G^T y/|G^T y|||^2 for candidates a (N, C, K), from the Gram matrix
    M = G G^T (N, K, K) and y (N, K); (N, C). A zero gradient counts as orthogonal."""
    my = (gram @ y.unsqueeze(2)).squeeze(2)  # (N, K)
    yy = (y * my).sum(1, keepdim=True)  # (N, 1)
    aa = ((candidates @ gram) * candidates).sum(2)  # (N, C)
    ay = (candidates * my.unsqueeze(1)).sum(2)
    cos = ay / (aa * yy).clamp_min(1e-30).sqrt()
    return 2 - 2 * cos


def extreme_target(gram: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The simplex vertex with the largest angular deviation, per image (N, K)."""
    n, k = y.shape
    vertices = torch.eye(k, device=y.device, dtype=y.dtype).expand(n, k, k)
    best = angular_deviation(gram, vertices, y).argmax(1)
    return torch.nn.functional.one_hot(best, k).to(y.dtype)


def _candidates(sets: torch.Tensor, top: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Uniform distributions over class sets (N, C, K bool), top class up-weighted."""
    weights = sets.to(dtype)
    weights = weights + TIE_BREAK * torch.nn.functional.one_hot(top, sets.shape[2]).unsqueeze(1)
    return weights / weights.sum(2, keepdim=True)


def argmax_preserving_target(gram: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The argmax-preserving candidate with the largest angular deviation, per image (N, K)."""
    n, k = y.shape
    top = y.argmax(1)
    if k <= EXHAUSTIVE_MAX_CLASSES:
        codes = torch.arange(2**k, device=y.device)
        bits = (codes.unsqueeze(1) >> torch.arange(k - 1, -1, -1, device=y.device)) & 1  # class 0 = high bit
        sets = bits.bool().unsqueeze(0).expand(n, -1, -1)
        valid = sets.gather(2, top.view(n, 1, 1).expand(n, 2**k, 1)).squeeze(2)
        cands = _candidates(sets, top, y.dtype)
        score = angular_deviation(gram, cands, y).masked_fill(~valid, float("-inf"))
        return cands[torch.arange(n), score.argmax(1)]
    # Greedy: grow the set from {top}, adding the class that maximises the objective.
    fixed = torch.nn.functional.one_hot(top, k).bool()
    best_score = torch.full((n,), float("-inf"), device=y.device, dtype=y.dtype)
    best = _candidates(fixed.unsqueeze(1), top, y.dtype).squeeze(1)
    evaluated = 0
    eye = torch.eye(k, dtype=torch.bool, device=y.device)
    while evaluated < GREEDY_CANDIDATES and not bool(fixed.all()):
        sets = fixed.unsqueeze(1) | eye.unsqueeze(0)  # candidate c adds class c
        fresh = ~fixed  # (N, K): class c not yet in the set
        cands = _candidates(sets, top, y.dtype)
        score = angular_deviation(gram, cands, y).masked_fill(~fresh, float("-inf"))
        step_best, step_arg = score.max(1)
        improved = step_best > best_score
        best_score = torch.where(improved, step_best, best_score)
        best = torch.where(improved.unsqueeze(1), cands[torch.arange(n), step_arg], best)
        evaluated += int(fresh[0].sum())
        fixed[torch.arange(n), step_arg] = True
    return best


def line_search(y: torch.Tensor, y_star: torch.Tensor, eps: float) -> torch.Tensor:
    """(1 - alpha) y + alpha y* with the largest alpha in [0, 1] inside the L1 ball of radius eps."""
    alpha = (eps / ((y - y_star).abs().sum(1, keepdim=True) + 1e-7)).clamp(0.0, 1.0)
    return (1 - alpha) * y + alpha * y_star
