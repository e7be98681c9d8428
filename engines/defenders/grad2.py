"""GRAD² (gradient redirection): Mazeika, Li & Forsyth, "How to Steer Your Adversary: Targeted
and Efficient Model Stealing Defenses with Gradient Redirection", ICML 2022
(code: mmazeika/model-stealing-defenses).

What is perturbed: the victim's probability vector y, per query, on the probability simplex
within an L1 ball of radius `eps`, so that the parameter update a clone trained with
cross-entropy on the answer would take, d(y~) = J^T y~ (J: the Jacobian of a surrogate
student's log-probabilities w.r.t. its parameters), points as far as possible along a
defender-chosen target direction t.

Algorithm as implemented (per image; batched over the query batch):
1. The surrogate: a student of the family's default architecture (LeNet-5 for MNIST-like
   sets) distilled from the victim's probabilities and taken early. The code's main setting
   (`ALL-ONES_10`, "the main GRAD^2 setting" in `condor_scripts/makebatches.sh`) uses the
   student checkpoint after 10 of 50 epochs of SGD (lr 0.1, momentum 0.9, weight decay 5e-4,
   cosine schedule, batch 128; `train_surrogate.py`). Here: `surrogate_epochs` (10) epochs of
   `engines.training.fit` at a constant lr 0.1 (the first fifth of a 50-epoch cosine schedule
   stays within 10% of its initial lr), batch 128, no augmentation, on the defender's own
   training split (the code distils on the attacker's transfer set, which the defender does
   not have here). Cached with `ctx.store`. All parameters are targeted (`grad_params="all"`;
   the code's GRAD² does not restrict `backprop_modules`).
2. Target direction t (`target`): `all-ones` (default, the main setting: the code passes
   `override_grad = -ones` to a routine that minimises the inner product, i.e. it maximises
   <J^T y~, 1>, pushing the clone's parameters along the all-ones vector), or `min-ip`
   (t = -J^T y: turn the clone's update against the update the clean answer would give).
3. The objective <J^T y~, t> = y~ . s with s = J t is linear in y~, so the code's greedy
   solution is exact: move mass min(eps/2, 1 - y_j) to the class j with the largest s, taken
   from the classes with the smallest s first (`method_gradient_redirection`). s is computed
   without forming J: for `all-ones` one forward-mode product (jvp) along the ones vector; for
   `min-ip` a per-image vector-Jacobian product J^T y followed by a jvp along it.
At eps = 0 the victim's probabilities are served unchanged.

Knob: `eps`, the L1 budget (0 to 2). Default 0.5; the code sweeps 0.0-1.0 in steps of 0.1
and publishes no single default, 0.5 is the MAD README's value so the two are compared at the
same budget. Trade-off points 0.1, 0.25, 0.5, 1.0.

Deviations: (a) `min-ip` uses each image's own clean update as the reference direction; the
code uses the update of the whole query batch (batch mean), which would make an answer depend
on the other images in its batch. (b) One surrogate; the code's non-`_10` settings sample one
of four checkpoints (10-40 epochs) per batch at random. (c) The code renormalises the
perturbed vector with softmax(log(clamp(y~, 1e-15))); here it is clamped at 0 and divided by
its sum, which keeps the L1 budget and the simplex up to rounding. (d) Distillation uses the
plain soft-label cross-entropy of `fit` (the code's distillation loss uses a temperature).

Behaviour worth knowing: the answer moves min(eps/2, 1 - y_j) of mass to the class j whose
probability most helps the target, so when that class already holds almost all the mass the
answer barely changes (on mnist5k with `all-ones` at eps 0.5 the mean L1 change was 0.13, not
0.5; with `min-ip`, 0.47).

Cost, measured at batch 256 on one CPU thread (LeNet-5 victim and surrogate on mnist5k, best of
5 serves): undefended ~9,700 queries/s, `all-ones` ~2,400 (0.25x: one forward-mode pass per
image), `min-ip` ~510 (0.05x: a per-image gradient, then a forward-mode pass along it). The
surrogate's distillation (10 epochs on the defender's training split) took ~7 s and reached
0.88 validation accuracy. CIFAR family (ResNet-34-8x victim and surrogate, 21.3M parameters,
batch 16, one shared CPU thread): undefended 12.8 queries/s, `all-ones` 2.2 (0.17x); the
per-image products are then taken one image at a time to bound memory.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from engines.defenders._surrogate import Surrogate, distilled_surrogate, random_surrogate, resolve_arch
from engines.defenders.base import DEFENDERS, Defender
from engines.training import TrainConfig


class Grad2Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    eps: float = Field(0.5, ge=0, le=2)  # L1 budget ||y~ - y||_1 <= eps
    target: Literal["all-ones", "min-ip"] = "all-ones"
    grad_params: Literal["all", "last"] = "all"
    surrogate_arch: str = "auto"  # "auto": the data set family's default architecture
    surrogate_epochs: int = Field(10, ge=0)  # 0: a randomly initialised surrogate
    surrogate_lr: float = Field(0.1, gt=0)
    surrogate_batch_size: int = Field(128, ge=1)
    train_limit: int | None = Field(None, ge=1)  # distil on the first n training images (smoke tests)


@DEFENDERS.register("grad2")
class Grad2(Defender):
    description = "GRAD²: L1-bounded answer that steers a surrogate student's update toward a chosen direction"
    Params = Grad2Params
    smoke_params: ClassVar[dict] = {"surrogate_epochs": 1, "train_limit": 256}
    knob: ClassVar[str | None] = "eps"
    knob_values: ClassVar[tuple] = (0.1, 0.25, 0.5, 1.0)
    zero_protection_params: ClassVar[dict | None] = {"eps": 0.0}

    def prepare(self) -> dict:
        p: Grad2Params = self.params
        ctx = self.ctx
        ctx.victim.eval()
        arch = resolve_arch(ctx, p.surrogate_arch)
        info: dict = {"surrogate": arch, "surrogate_epochs": p.surrogate_epochs}
        if p.surrogate_epochs == 0:
            model = random_surrogate(ctx, arch, seed_offset=37)
        else:
            cfg = TrainConfig(
                epochs=p.surrogate_epochs,
                batch_size=p.surrogate_batch_size,
                lr=p.surrogate_lr,
                momentum=0.9,
                weight_decay=5e-4,
                schedule="constant",
                augment=False,
            )
            model, report, reused = distilled_surrogate(ctx, arch, 37, cfg, p.train_limit)
            info.update(
                reused=reused,
                train_seconds=report["train_seconds"],
                surrogate_val_accuracy=report["val_accuracy"],
            )
        self.surrogate = Surrogate(model, p.grad_params)
        info["gradient_params"] = self.surrogate.size
        return info

    def serve(self, images: torch.Tensor) -> torch.Tensor:
        y = torch.softmax(self.ctx.victim_logits(images), dim=1)
        if self.params.eps == 0:
            return y
        scores = target_scores(self.surrogate, images, y.float(), self.params.target)
        return redirect(y.float(), scores, self.params.eps).to(y.dtype)


def target_scores(surrogate: Surrogate, images: torch.Tensor, y: torch.Tensor, target: str) -> torch.Tensor:
    """s = J t per image (N, K): how much moving probability mass to each class moves the
    clone's update d(y~) = J^T y~ along the target direction t."""
    if target == "all-ones":
        return surrogate.jvp(images, torch.ones(surrogate.size, device=images.device))
    clean_update = surrogate.vjp(images, y)  # J^T y, (N, D)
    return -surrogate.jvp(images, clean_update)


def redirect(y: torch.Tensor, scores: torch.Tensor, eps: float) -> torch.Tensor:
    """argmax of y~ . s over the simplex within ||y~ - y||_1 <= eps (exact for a linear
    objective): give min(eps/2, 1 - y_j) to j = argmax s, taking it from the smallest s first."""
    n, k = y.shape
    rows = torch.arange(n, device=y.device)
    receiver = scores.argmax(1)
    give = torch.minimum(torch.full_like(y[:, 0], eps / 2), 1 - y[rows, receiver])
    order = scores.argsort(1)  # ascending: donors first
    order_mass = y.gather(1, order).clone()
    order_mass[order == receiver.unsqueeze(1)] = 0  # the receiver never donates
    before = order_mass.cumsum(1) - order_mass  # mass taken from earlier donors
    taken_sorted = torch.minimum(order_mass, (give.unsqueeze(1) - before).clamp_min(0))
    taken = torch.zeros_like(y).scatter(1, order, taken_sorted)
    served = y - taken
    served[rows, receiver] += taken.sum(1)
    served = served.clamp_min(0)
    return served / served.sum(1, keepdim=True)
