"""Defence-aware ("adaptive") attackers: KnockoffNets variants that know what they face.

ModelGuard (Tang et al., USENIX Security 2024) fields adaptive attackers against defences
that perturb or average output probabilities; these three target what MISLEADER and the
output-perturbation defences change:

- `argmax-clone`: samples the pool like random KnockoffNets but trains the clone on the
  top-1 label of every answer. Any perturbation that keeps the argmax (MISLEADER's averaged
  ensemble on in-distribution inputs, reverse sigmoid, MAD-argmax) is undone; what remains
  is the defence's label noise. Soft, top-k or hard answers (on hard it is KnockoffNets).
- `logp-clone`: samples like KnockoffNets and regresses the clone's mean-centred logits on
  the mean-centred log-probabilities log(max(p, log_floor)) of the answers (MSE). An averaged
  ensemble's output is not the softmax of one logit vector; its log recovers a logit-like
  target in which the small probabilities (where averaging leaves its trace) weigh as much as
  the large ones, unlike soft cross-entropy. Soft answers only (top-k zeros have no log).
- `augmented-queries`: queries with augmented pool images, drawn by MISLEADER's own query
  augmentation A (misleader.md): RandomResizedCrop(32, scale 0.8-1.0), RandomHorizontalFlip,
  ColorJitter(brightness 0.4, contrast 0.4, saturation 0.4), RandomGrayscale(p 0.2),
  RandomAffine(15 deg, translate 0.1, scale 0.9-1.1), per image, seeded (torchvision v2).
  For one-channel images saturation and grey-scale conversion are identities and are left
  out. This is exactly the distribution MISLEADER's members are trained to mislead on. The
  pool is cycled, each pass with fresh augmentations, so the budget is not bound by the pool.

All three train the scored clone from scratch (or, with `warm_start`, continue it) at each
budget checkpoint on every answer bought so far, with the KnockoffNets CPU-scale recipe
(`knockoff.knockoff_clone`; the recipe chosen on the validation split, see `knockoff`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field
from torchvision.transforms import v2

from engines.attackers._common import answer_labels, centred_log_probs
from engines.attackers.base import ATTACKERS, AttackContext
from engines.attackers.knockoff import KnockoffParams, KnockoffRandom
from engines.oracle import Oracle


class LogpParams(KnockoffParams):
    log_floor: float = Field(1e-6, gt=0, lt=1)


class AugmentedParams(KnockoffParams):
    crop_scale: tuple[float, float] = (0.8, 1.0)
    jitter: float = Field(0.4, ge=0)
    degrees: float = Field(15.0, ge=0)
    translate: float = Field(0.1, ge=0, le=1)
    scale: tuple[float, float] = (0.9, 1.1)
    grayscale_p: float = Field(0.2, ge=0, le=1)


def centred_logit_mse(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(logits - logits.mean(1, keepdim=True), target)


@ATTACKERS.register("argmax-clone")
class ArgmaxClone(KnockoffRandom):
    description = "adaptive: KnockoffNets sampling, clone trained on argmax labels (undoes probability perturbation)"
    base_attack = "knockoff"  # adapts KnockoffNets to a defence
    label_modes = frozenset({"soft", "topk", "hard"})

    def training_targets(self, answers: torch.Tensor, oracle: Oracle) -> torch.Tensor:
        return answer_labels(answers, oracle.label_mode)


@ATTACKERS.register("logp-clone")
class LogpClone(KnockoffRandom):
    description = "adaptive: KnockoffNets sampling, clone logits regressed on centred log(p) of the answers (soft)"
    base_attack = "knockoff"  # adapts KnockoffNets to a defence
    label_modes = frozenset({"soft"})
    Params = LogpParams
    loss_fn = staticmethod(centred_logit_mse)

    def training_targets(self, answers: torch.Tensor, oracle: Oracle) -> torch.Tensor:
        return centred_log_probs(answers.float(), self.params.log_floor)


def augmentation_chain(channels: int, p: AugmentedParams) -> v2.Compose:
    """MISLEADER's query augmentation A, for `channels`-channel 32x32 uint8 images."""
    colour = channels == 3
    ops: list[v2.Transform] = [
        v2.RandomResizedCrop(32, scale=tuple(p.crop_scale), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.ColorJitter(brightness=p.jitter, contrast=p.jitter, saturation=p.jitter if colour else None),
    ]
    if colour:
        ops.append(v2.RandomGrayscale(p=p.grayscale_p))
    ops.append(v2.RandomAffine(degrees=p.degrees, translate=(p.translate, p.translate), scale=tuple(p.scale)))
    return v2.Compose(ops)


@ATTACKERS.register("augmented-queries")
class AugmentedQueries(KnockoffRandom):
    description = "adaptive: queries pool images augmented by MISLEADER's own query augmentation (data-based)"
    base_attack = "knockoff"  # adapts KnockoffNets to a defence
    label_modes = frozenset({"soft", "hard", "topk"})
    default_budget = 3600
    Params = AugmentedParams
    bound_by_pool = False
    smoke_label_mode = "hard"
    smoke_budget = 50

    def query_images(self, ctx: AttackContext, count: int) -> torch.Tensor:
        pool = ctx.pool.images  # labels never read
        passes = math.ceil(count / len(pool))
        order_gen = ctx.generator(1)
        order = torch.cat([torch.randperm(len(pool), generator=order_gen) for _ in range(passes)])[:count]
        chain = augmentation_chain(ctx.image_shape[0], self.params)
        with torch.random.fork_rng(devices=[]):  # torchvision draws from the global RNG: seed it locally
            torch.manual_seed(ctx.seed * 7919 + 11)
            return torch.stack([chain(pool[i]) for i in order.tolist()])
