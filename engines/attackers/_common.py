"""Helpers shared by the attack suite (private module: not an attacker, never auto-registered).

Everything here talks to the defended model only through the `Oracle`, so query accounting
stays the oracle's: one image = one query, refused whole when a batch would cross the budget.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from engines.attackers.base import AttackContext
from engines.errors import ArenaError
from engines.oracle import Oracle, answers_to_targets
from engines.training import iterate_batches


def to_floats(images: torch.Tensor) -> torch.Tensor:
    """uint8 or float images -> float32 in [0, 1]."""
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()


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


def clone_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against labels (N,) or probability targets (N, C)."""
    if targets.ndim == 1:
        return F.cross_entropy(logits, targets)
    return -(targets * F.log_softmax(logits, dim=1)).sum(1).mean()


def kl_to_probs(logits: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """KL(p || softmax(logits)), batch mean (MAZE's clone loss); exact for p with zeros."""
    return F.kl_div(F.log_softmax(logits, dim=1), probs, reduction="batchmean")


@torch.no_grad()
def clone_probs(clone: nn.Module, images: torch.Tensor, ctx: AttackContext, chunk: int = 1024) -> torch.Tensor:
    """Softmax outputs of the clone (eval mode) on uint8/float images; on CPU."""
    was_training = clone.training
    clone.eval()
    out = [
        torch.softmax(clone(to_floats(images[i : i + chunk]).to(ctx.device)).float(), 1).cpu()
        for i in range(0, len(images), chunk)
    ]
    clone.train(was_training)
    return torch.cat(out) if out else torch.empty(0, 0)


def train_clone(
    ctx: AttackContext,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    seed_offset: int,
    *,
    arch: str | None,
    epochs: int,
    min_steps: int,
    batch_size: int,
    lr: float,
    momentum: float,
    weight_decay: float,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = clone_loss,
    optimizer: str = "sgd",
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
    patience: int | None = None,
    clone: nn.Module | None = None,
) -> nn.Module:
    """Train a clone (fresh unless `clone` is given) on (inputs, targets) with `loss_fn`.

    SGD (or Adam) with a cosine schedule over max(epochs, enough epochs for `min_steps`
    steps). With `val` = (images, victim labels), the weights with the best validation
    agreement are kept and training stops after `patience` epochs without improvement
    (ActiveThief's early stopping on a query-labelled validation set)."""
    generator = ctx.generator(seed_offset)
    if clone is None:
        torch.manual_seed(ctx.seed * 7919 + seed_offset)  # fresh, reproducible initialisation
        clone = ctx.build_clone(arch)
    steps_per_epoch = math.ceil(len(inputs) / batch_size)
    epochs = max(epochs, math.ceil(min_steps / steps_per_epoch))
    if optimizer == "adam":
        opt = torch.optim.Adam(clone.parameters(), lr=lr, weight_decay=weight_decay)
    else:
        opt = torch.optim.SGD(clone.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * steps_per_epoch))
    best, best_state, stale = -1.0, None, 0
    for _ in range(epochs):
        ctx.should_stop()
        clone.train()
        for idx in iterate_batches(len(inputs), batch_size, generator):
            x = to_floats(inputs[idx]).to(ctx.device)
            loss = loss_fn(clone(x), targets[idx].to(ctx.device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        if val is not None:
            agreement = (clone_probs(clone, val[0], ctx).argmax(1) == val[1]).float().mean().item()
            if agreement > best:
                best, stale = agreement, 0
                best_state = {k: v.detach().clone() for k, v in clone.state_dict().items()}
            else:
                stale += 1
                if patience is not None and stale >= patience:
                    break
    if best_state is not None:
        clone.load_state_dict(best_state)
    clone.eval()
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
