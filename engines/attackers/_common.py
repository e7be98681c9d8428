"""Helpers shared by the attack suite (private module: not an attacker, never auto-registered).

Everything here talks to the defended model only through the `Oracle`, so query accounting
stays the oracle's: one image = one query, refused whole when a batch would cross the budget.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from engines.attackers.base import AttackContext
from engines.data.base import to_floats
from engines.errors import ArenaError
from engines.oracle import Oracle, answers_to_targets
from engines.training import LossFn, TrainConfig, Validation, cross_entropy_loss, fit


def query_all(oracle: Oracle, images: torch.Tensor, ctx: AttackContext, chunk: int = 256) -> torch.Tensor:
    """Answers for every image (uint8 or float in [0, 1]), asked in chunks; returned on CPU.

    Costs exactly len(images) queries; raises QueryBudgetExceeded if they are not left."""
    if len(images) > oracle.remaining:
        raise ArenaError(f"internal: {len(images)} queries asked with {oracle.remaining} left")
    answers = []
    for start in range(0, len(images), chunk):
        ctx.should_stop()
        batch = to_floats(images[start : start + chunk]).to(ctx.device)
        answers.append(oracle.query(batch).cpu())
    return torch.cat(answers)


def answer_labels(answers: torch.Tensor, label_mode: str) -> torch.Tensor:
    """Top-1 labels from oracle answers of any mode."""
    return answers.long() if label_mode == "hard" else answers.argmax(1)


def targets_from_answers(answers: torch.Tensor, oracle: Oracle) -> torch.Tensor:
    """Training targets: labels (hard) or renormalised probabilities (soft, top-k)."""
    return answers_to_targets(answers, oracle.label_mode, oracle.num_classes)


def kl_to_probs(logits: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """KL(p || softmax(logits)), batch mean (MAZE's clone loss); exact for p with zeros."""
    return F.kl_div(F.log_softmax(logits, dim=1), probs, reduction="batchmean")


API_LOG_FLOOR = 1e-12  # log(clamp(p, 1e-12)): the data-free attacks' stand-in for the victim's logits


def centred_log_probs(probs: torch.Tensor, floor: float) -> torch.Tensor:
    """log(max(p, floor)) minus its row mean: a logit-like target recovered from probabilities
    (DFME's stand-in for the victim's logits with floor 1e-12; `logp-clone`'s regression target)."""
    log_p = probs.clamp_min(floor).log()
    return log_p - log_p.mean(1, keepdim=True)


ApiTarget = Literal["log-probs", "probs-as-logits"]


def api_logits(probs: torch.Tensor, target: ApiTarget) -> torch.Tensor:
    """What a data-free attack treats as the API's logits.

    `log-probs` (the arena's protocol): log(max(p, 1e-12)), the logits up to a per-row
    constant, so softmax recovers p exactly. `probs-as-logits` replays the public MISLEADER
    evaluation script, which hands the ensemble's averaged probabilities to DFME/MAZE where
    the teacher's logits would go: the attack's softmax/log-softmax then acts on p itself, so
    its target is nearly flat (softmax(p) is within e^1 of uniform) and any defence that
    serves probabilities looks stronger than one that serves logits."""
    if target == "probs-as-logits":
        return probs
    return probs.clamp_min(API_LOG_FLOOR).log()


def train_clone(
    ctx: AttackContext,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    seed_offset: int,
    cfg: TrainConfig,
    *,
    arch: str | None,
    min_steps: int = 0,
    loss_fn: LossFn = cross_entropy_loss,
    val: Validation | None = None,
) -> nn.Module:
    """A fresh clone, initialised from the match seed and `seed_offset`, trained by `fit`.

    The batch order is drawn from `ctx.generator(seed_offset)`, so retraining at another
    checkpoint (another offset) is independent of this one."""
    torch.manual_seed(ctx.seed * 7919 + seed_offset)  # fresh, reproducible initialisation
    clone = ctx.build_clone(arch)
    fit(
        clone,
        inputs,
        targets,
        cfg,
        ctx.device,
        ctx.generator(seed_offset),
        val=val,
        should_stop=ctx.should_stop,
        loss_fn=loss_fn,
        min_steps=min_steps,
    )
    return clone


def kmeans(features: torch.Tensor, k: int, generator: torch.Generator, iters: int = 25) -> torch.Tensor:
    """Cluster ids (N,) of `features` (N, D) by k-means with k-means++ seeding (CPU, seeded)."""
    n = len(features)
    k = max(1, min(k, n))
    centers = features[torch.randint(n, (1,), generator=generator)]
    closest = torch.cdist(features, centers).squeeze(1) ** 2
    for _ in range(1, k):
        weights = closest / closest.sum() if closest.sum() > 0 else torch.full_like(closest, 1.0 / n)
        pick = torch.multinomial(weights, 1, generator=generator)
        centers = torch.cat([centers, features[pick]])
        closest = torch.minimum(closest, (torch.cdist(features, features[pick]).squeeze(1)) ** 2)
    assign = torch.cdist(features, centers).argmin(1)
    for _ in range(iters):
        new_centers = centers.clone()
        for c in range(k):
            members = features[assign == c]
            if len(members):
                new_centers[c] = members.mean(0)
        new_assign = torch.cdist(features, new_centers).argmin(1)
        centers = new_centers
        if torch.equal(new_assign, assign):
            break
        assign = new_assign
    return assign


def flat_pixels(images: torch.Tensor, size: int = 16) -> torch.Tensor:
    """Down-sampled flattened pixels: a cheap unsupervised feature space for clustering."""
    x = to_floats(images)
    if x.shape[-1] != size:
        x = F.adaptive_avg_pool2d(x, size)
    return x.flatten(1)


class ReplayBuffer:
    """A bounded store of (image, answer) pairs; the oldest are overwritten first."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.images: torch.Tensor | None = None
        self.answers: torch.Tensor | None = None
        self.size = 0
        self.cursor = 0

    def add(self, images: torch.Tensor, answers: torch.Tensor) -> None:
        images, answers = images.detach().cpu().half(), answers.detach().cpu().float()
        if self.images is None:
            self.images = torch.empty((self.capacity, *images.shape[1:]), dtype=torch.float16)
            self.answers = torch.empty((self.capacity, *answers.shape[1:]), dtype=torch.float32)
        images, answers = images[-self.capacity :], answers[-self.capacity :]
        slots = (self.cursor + torch.arange(len(images))) % self.capacity
        self.images[slots] = images
        self.answers[slots] = answers
        self.cursor = (self.cursor + len(images)) % self.capacity
        self.size = min(self.size + len(images), self.capacity)

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(self.size, (n,), generator=generator)
        return self.images[idx].float(), self.answers[idx]


# The data-free loops' fast paths (DFME, MAZE). Switched off only by tests and
# benchmarks/dfme_speed.py, to compare an optimised iteration with the plain computation.
FAST_PATHS = True


def training_layout(model: nn.Module) -> torch.memory_format:
    """The memory format a data-free attack trains and evaluates `model` in: channels-last for
    nets with a convolution of at least 32 output channels (the serving rule of
    engines/serving.py, where oneDNN's blocked kernels pay), the default layout otherwise (so
    LeNet-size clones and tiny generators compute exactly as before). A fixed rule of the
    architecture, never a timing made at run time. Only the layout of the same numbers changes:
    results equal the default layout's within float32 rounding."""
    from engines.serving import wants_channels_last

    return torch.channels_last if FAST_PATHS and wants_channels_last(model) else torch.contiguous_format


def in_layout(model: nn.Module) -> tuple[nn.Module, torch.memory_format]:
    """`model` moved (in place) to its `training_layout`, and that layout."""
    layout = training_layout(model)
    return (model.to(memory_format=layout) if layout == torch.channels_last else model), layout


Precision = Literal["fp32", "bf16"]


def full_precision(tensor: torch.Tensor) -> torch.Tensor:
    """A network output under `autocast_bf16` back in float32; any other tensor as it is."""
    return tensor.float() if tensor.dtype == torch.bfloat16 else tensor


def autocast_bf16(device: torch.device, enabled: bool):
    """bfloat16 autocast for an attack's own networks when `enabled` (the explicit opt-in
    `precision="bf16"`; the defender always answers in float32)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)
