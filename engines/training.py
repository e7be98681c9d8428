"""The one supervised training loop (`fit`) and its parts, shared by victims, defences and clones.

Batches are drawn from in-memory tensors with an explicit torch.Generator, so a seed fixes the
whole run on CPU (no DataLoader worker processes, no global RNG). Every attack and defence
trains through `fit`; loops that interleave other updates with training steps (the data-free
attacks' generator games, MISLEADER's joint objective) reuse its parts: `make_optimizer`,
`make_scheduler`, `iterate_batches`, `train_step`, `BestWeights`.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from engines.data.base import ImageSet, to_floats

ProgressFn = Callable[[int, int, str], None]  # (done, total, message)
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (logits, targets) -> scalar


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(30, ge=1)
    batch_size: int = Field(64, ge=1)
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)  # SGD only
    weight_decay: float = Field(5e-4, ge=0)
    schedule: Literal["cosine", "constant"] = "cosine"
    augment: bool = True  # small random affine jitter (rotation, shift, scale), per image


def seed_everything(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def make_scheduler(optimizer, cfg: TrainConfig, total_steps: int):
    """A per-step learning-rate schedule over `total_steps` optimizer steps."""
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


def random_affine(
    x: torch.Tensor,
    generator: torch.Generator,
    degrees: float = 10.0,
    translate: float = 0.1,
    scale: tuple[float, float] = (0.9, 1.1),
) -> torch.Tensor:
    """Per-image random rotation/shift/scale of a float batch, drawn from `generator`."""
    n = x.shape[0]
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(degrees)
    factor = scale[0] + torch.rand(n, generator=generator) * (scale[1] - scale[0])
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * translate * 2  # grid units span 2
    cos, sin = torch.cos(angle) / factor, torch.sin(angle) / factor
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


def iterate_batches(
    n: int, batch_size: int, generator: torch.Generator, shuffle: bool = True
) -> Iterator[torch.Tensor]:
    """Index batches of one epoch: one `randperm` draw from `generator` per epoch."""
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


@torch.inference_mode()
def predict_probs(model: nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 1024) -> torch.Tensor:
    """Softmax outputs of `model` (in eval mode) on uint8 or float images in [0, 1], on CPU."""
    was_training = model.training
    model.eval()
    out = [
        torch.softmax(model(to_floats(images[start : start + batch_size]).to(device)).float(), dim=1).cpu()
        for start in range(0, len(images), batch_size)
    ]
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


def top1_agreement(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, device: torch.device) -> float:
    """Share of `images` whose top-1 prediction equals `labels` (NaN for no images).

    Against true labels this is accuracy; against another model's labels, agreement."""
    if len(images) == 0:
        return float("nan")
    return (predict_probs(model, images, device).argmax(1) == labels).float().mean().item()


def accuracy(model: nn.Module, data: ImageSet, device: torch.device) -> float:
    return top1_agreement(model, data.images, data.labels, device)


def cross_entropy_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against labels (N,) or probability targets (N, C) (KnockoffNets' soft loss)."""
    if targets.ndim == 1:
        return F.cross_entropy(logits, targets)
    return -(targets * F.log_softmax(logits, dim=1)).sum(1).mean()


def train_step(
    model: nn.Module,
    loss_fn: LossFn,
    x: torch.Tensor,
    y: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scheduler=None,
) -> torch.Tensor:
    """One optimizer step of `model` on the batch (x, y), then one scheduler step if given.

    Returns the (detached) loss before the step. The caller sets train/eval mode."""
    loss = loss_fn(model(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return loss.detach()


@dataclass(frozen=True)
class Validation:
    """What `fit` scores after every epoch: top-1 agreement of the model with `labels`.

    `metric` names the score in the report: "accuracy" against true labels (victims),
    "agreement" against the oracle's labels (ActiveThief). `patience`: stop after that many
    epochs without improvement (None: never). `ties`: which epoch's weights win an equal
    score, the later (victims, MISLEADER) or the earlier (ActiveThief's early stopping)."""

    images: torch.Tensor
    labels: torch.Tensor
    metric: Literal["accuracy", "agreement"] = "accuracy"
    patience: int | None = None
    ties: Literal["later", "earlier"] = "later"


class BestWeights:
    """Keep-best checkpoint selection: the weights of the best-scoring epoch so far."""

    def __init__(self, ties: Literal["later", "earlier"] = "later"):
        self.ties = ties
        self.score, self.epoch, self.state = -1.0, -1, None
        self.stale = 0  # epochs since the last improvement

    def offer(self, model: nn.Module, score: float, epoch: int) -> bool:
        """Record `model`'s weights if `score` improves on the best; returns whether it did."""
        improved = score >= self.score if self.ties == "later" else score > self.score
        if improved:
            self.score, self.epoch, self.stale = score, epoch, 0
            self.state = copy.deepcopy(model.state_dict())
        else:
            self.stale += 1
        return improved

    def restore(self, model: nn.Module) -> None:
        if self.state is not None:
            model.load_state_dict(self.state)


def fit(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    cfg: TrainConfig,
    device: torch.device,
    generator: torch.Generator,
    val: ImageSet | Validation | None = None,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], None] | None = None,
    *,
    loss_fn: LossFn = cross_entropy_loss,
    min_steps: int = 0,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler=None,
) -> dict:
    """Train `model` (fresh or warm: its weights are the start) on (inputs, targets).

    `inputs`: uint8 or float images in [0, 1]; `targets`: labels (N,) or probabilities
    (N, C), or whatever `loss_fn` takes. Runs `cfg.epochs` epochs, more if needed to reach
    `min_steps` optimizer steps. One `randperm` per epoch (and, with `cfg.augment`, the
    jitter) is drawn from `generator`. With `val` (an ImageSet: accuracy on its labels, or a
    `Validation`), the best epoch's weights are kept, and training stops early after
    `val.patience` epochs without improvement. `optimizer` (with `scheduler`, if any)
    continues an optimizer the caller keeps across calls (momentum, an outer schedule);
    otherwise both are built from `cfg` over this call's steps.

    Returns a small report: epochs run, the best validation score (`best_val_accuracy` or
    `best_val_agreement`, after `val.metric`) and its epoch, training seconds.
    """
    validation = Validation(val.images, val.labels) if isinstance(val, ImageSet) else val
    model.to(device).train()
    steps_per_epoch = math.ceil(len(inputs) / cfg.batch_size)
    epochs = max(cfg.epochs, math.ceil(min_steps / steps_per_epoch)) if steps_per_epoch else cfg.epochs
    if optimizer is None:
        optimizer = make_optimizer(model.parameters(), cfg)
        scheduler = make_scheduler(optimizer, cfg, epochs * steps_per_epoch)
    best = BestWeights(validation.ties if validation is not None else "later")
    started = time.perf_counter()
    epochs_run = 0
    for epoch in range(epochs):
        if should_stop is not None:
            should_stop()
        model.train()
        for idx in iterate_batches(len(inputs), cfg.batch_size, generator):
            x = to_floats(inputs[idx])
            if cfg.augment:
                x = random_affine(x, generator)
            train_step(model, loss_fn, x.to(device), targets[idx].to(device), optimizer, scheduler)
            if should_stop is not None:  # per batch too: an epoch on a big data set takes minutes on CPU
                should_stop()
        epochs_run = epoch + 1
        if validation is not None:
            best.offer(model, top1_agreement(model, validation.images, validation.labels, device), epoch)
        if progress is not None:
            progress(epoch + 1, epochs, f"epoch {epoch + 1}/{epochs}")
        if validation is not None and validation.patience is not None and best.stale >= validation.patience:
            break
    best.restore(model)
    model.eval()
    metric = validation.metric if validation is not None else "accuracy"
    return {
        "epochs": epochs_run,
        f"best_val_{metric}": best.score if validation is not None else None,
        "best_epoch": best.epoch if validation is not None else None,
        "train_seconds": time.perf_counter() - started,
    }
