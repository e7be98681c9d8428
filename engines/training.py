"""Supervised training and evaluation helpers shared by victims, defenders and clones.

Batches are drawn from in-memory uint8 tensors with an explicit torch.Generator, so a seed
fixes the whole run on CPU (no DataLoader worker processes, no global RNG).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from engines.data.base import ImageSet

ProgressFn = Callable[[int, int, str], None]  # (done, total, message)


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(30, ge=1)
    batch_size: int = Field(64, ge=1)
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
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
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


@torch.inference_mode()
def predict_probs(model: nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 1024) -> torch.Tensor:
    """Softmax outputs of `model` on float images in [0, 1] (or a uint8 batch), on CPU."""
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        if chunk.dtype == torch.uint8:
            chunk = chunk.float().div_(255.0)
        out.append(torch.softmax(model(chunk.to(device)).float(), dim=1).cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


def accuracy(model: nn.Module, data: ImageSet, device: torch.device) -> float:
    if len(data) == 0:
        return float("nan")
    preds = predict_probs(model, data.images, device).argmax(1)
    return (preds == data.labels).float().mean().item()


def soft_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against a probability target (KnockoffNets' soft-label loss)."""
    return -(target_probs * F.log_softmax(logits, dim=1)).sum(1).mean()


def fit(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    cfg: TrainConfig,
    device: torch.device,
    generator: torch.Generator,
    val: ImageSet | None = None,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], None] | None = None,
) -> dict:
    """Train `model` on (inputs, targets); targets are labels (N,) or probabilities (N, C).

    `inputs` are uint8 or float images in [0, 1]. With `val`, the weights with the best
    validation accuracy are kept (ties: the later epoch). Returns a small report.
    """
    model.to(device).train()
    soft = targets.ndim == 2
    optimizer = make_optimizer(model.parameters(), cfg)
    steps_per_epoch = math.ceil(len(inputs) / cfg.batch_size)
    scheduler = make_scheduler(optimizer, cfg, cfg.epochs * steps_per_epoch)
    best_acc, best_state, best_epoch = -1.0, None, -1
    started = time.perf_counter()
    for epoch in range(cfg.epochs):
        if should_stop is not None:
            should_stop()
        model.train()
        for idx in iterate_batches(len(inputs), cfg.batch_size, generator):
            x = inputs[idx]
            x = x.float().div_(255.0) if x.dtype == torch.uint8 else x
            if cfg.augment:
                x = random_affine(x, generator)
            x, y = x.to(device), targets[idx].to(device)
            logits = model(x)
            loss = soft_cross_entropy(logits, y) if soft else F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            if should_stop is not None:  # per batch too: an epoch on a big data set takes minutes on CPU
                should_stop()
        if val is not None:
            acc = accuracy(model, val, device)
            if acc >= best_acc:
                best_acc, best_epoch = acc, epoch
                best_state = copy.deepcopy(model.state_dict())
        if progress is not None:
            progress(epoch + 1, cfg.epochs, f"epoch {epoch + 1}/{cfg.epochs}")
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return {
        "epochs": cfg.epochs,
        "best_val_accuracy": best_acc if val is not None else None,
        "best_epoch": best_epoch if val is not None else None,
        "train_seconds": time.perf_counter() - started,
    }
