"""Synthetic outliers made from the defender's own images, for outlier exposure.

Outlier exposure (Hendrycks, Mazeika, Dietterich, ICLR 2019) needs images that are not from
the task's distribution. Offline, the defender has only its own splits, so outliers are
synthesised from its training images, in equal shares of four kinds (a fixed generator
makes the set a function of the seed):

- `noise`: i.i.d. uniform pixels (what an untrained data-free generator emits);
- `blobs`: low-frequency noise, a random 4x4 to 8x8 grid upsampled bilinearly (smooth
  strokes and blobs with no digit structure);
- `patches`: a training image cut into a 4x4 grid of patches, shuffled (local digit
  statistics, no global shape);
- `blend`: the pixel-wise mean of two training images of different classes (digit-like
  strokes that are no single class).

A fifth kind, `generator`, is the output of an untrained data-free generator (the layout of
the data-free attacks' generators, seeded from the draw), which is what a data-free attack
asks first. Defences that need outliers share their parameters (`OutlierSource`) and their
source (`outlier_images`): synthesised as above, or a real torchvision set the user names.

Images stay in the arena's pixel space: uint8 (N, C, H, W).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator

from engines.data.base import ImageSet
from engines.errors import ArenaError
from engines.training import LossFn, TrainConfig, fit

OUTLIER_KINDS = ("noise", "blobs", "patches", "blend")
OUTLIER_LABEL = -1  # the target of an outlier row in a joint training set
OutlierKind = Literal["noise", "blobs", "patches", "blend", "generator"]


class OutlierSource(BaseModel):
    """Parameters of a defence trained with outliers (subclass it; override defaults there)."""

    model_config = ConfigDict(extra="forbid")

    outliers: tuple[OutlierKind, ...] = Field(("noise", "blobs"), min_length=1)
    outlier_ratio: float = Field(1.0, gt=0, le=4)  # outliers per training image
    outlier_dataset: str | None = None  # a real OOD set (e.g. "kmnist") instead of synthetic outliers
    train_limit: int | None = Field(None, ge=1)  # train on the first n training images (smoke tests)

    @field_validator("outlier_dataset")
    @classmethod
    def _known_dataset(cls, value):
        from engines.data import DATASETS

        if value is not None and value not in DATASETS:
            raise ValueError(f"unknown data set {value!r}; choose one of {', '.join(DATASETS.names())}")
        return value

    def datasets_needed(self) -> list[str]:
        return [self.outlier_dataset] if self.outlier_dataset else []

    def training_images(self, splits) -> ImageSet:
        """The defender's training split, or its first `train_limit` images."""
        train = splits.defender_train
        if self.train_limit is not None:
            train = train.subset(torch.arange(min(self.train_limit, len(train))))
        return train


def fit_with_outliers(
    model: torch.nn.Module,
    train: ImageSet,
    outliers: torch.Tensor,
    cfg: TrainConfig,
    generator: torch.Generator,
    ctx,
    loss_fn: LossFn,
) -> dict:
    """`fit` on one training set of the defender's images (targets: their labels) and the
    outliers (targets: OUTLIER_LABEL), for a loss that treats the two kinds of rows
    differently; with gradients on, since a defence is prepared under inference mode.
    Returns fit's report."""
    flags = torch.full((len(outliers),), OUTLIER_LABEL, dtype=torch.long)
    inputs, targets = torch.cat([train.images, outliers]), torch.cat([train.labels, flags])
    with torch.inference_mode(False), torch.enable_grad():
        return fit(
            model,
            inputs,
            targets,
            cfg,
            ctx.device,
            generator,
            progress=ctx.progress,
            should_stop=ctx.should_stop,
            loss_fn=loss_fn,
        )


def outlier_images(params: OutlierSource, train: ImageSet, generator: torch.Generator, ctx) -> torch.Tensor:
    """`outlier_ratio * len(train)` outliers (uint8): drawn from the named OOD data set (its
    images except its test split, in the match's channels), or synthesised from `train`."""
    count = round(params.outlier_ratio * len(train))
    if params.outlier_dataset is None:
        return synthesize_outliers(train, count, generator, params.outliers)
    if params.outlier_dataset == ctx.splits.name:
        raise ArenaError(f"outlier_dataset must be another data set than the match's ({ctx.splits.name})")
    from engines.data import load_pool

    other = load_pool(params.outlier_dataset, ctx.splits, ctx.data_root, str(ctx.store.root), ctx.download)
    return other.images[torch.randperm(len(other), generator=generator)[:count]]


def synthesize_outliers(
    source: ImageSet, count: int, generator: torch.Generator, kinds: tuple[str, ...] = OUTLIER_KINDS
) -> torch.Tensor:
    """`count` outlier images (uint8, shaped like `source.images`), equal shares of `kinds`."""
    if count <= 0 or not kinds:
        return source.images[:0].clone()
    per_kind = [count // len(kinds) + (k < count % len(kinds)) for k in range(len(kinds))]
    makers = {"noise": _noise, "blobs": _blobs, "patches": _patches, "blend": _blend, "generator": _generator}
    parts = [makers[kind](source, n, generator) for kind, n in zip(kinds, per_kind, strict=True) if n]
    return torch.cat(parts)


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def _noise(source: ImageSet, n: int, g: torch.Generator) -> torch.Tensor:
    _, c, h, w = source.images.shape
    return _to_uint8(torch.rand(n, c, h, w, generator=g))


def _blobs(source: ImageSet, n: int, g: torch.Generator) -> torch.Tensor:
    _, c, h, w = source.images.shape
    out = []
    for grid in range(4, 9):  # a spread of blob sizes
        m = n // 5 + (grid - 4 < n % 5)
        if m:
            coarse = torch.rand(m, c, grid, grid, generator=g)
            out.append(F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False))
    return _to_uint8(torch.cat(out))


def _patches(source: ImageSet, n: int, g: torch.Generator, grid: int = 4) -> torch.Tensor:
    images = source.images[torch.randint(len(source), (n,), generator=g)]
    _, c, h, w = images.shape
    ph, pw = h // grid, w // grid
    tiles = images.reshape(n, c, grid, ph, grid, pw).permute(0, 2, 4, 1, 3, 5).reshape(n, grid * grid, c, ph, pw)
    order = torch.argsort(torch.rand(n, grid * grid, generator=g), dim=1)
    tiles = tiles[torch.arange(n)[:, None], order]
    return tiles.reshape(n, grid, grid, c, ph, pw).permute(0, 3, 1, 4, 2, 5).reshape(n, c, h, w).contiguous()


def _blend(source: ImageSet, n: int, g: torch.Generator) -> torch.Tensor:
    first = torch.randint(len(source), (n,), generator=g)
    second = torch.randint(len(source), (n,), generator=g)
    same = source.labels[first] == source.labels[second]
    if source.labels.unique().numel() < 2:  # one class only: nothing to redraw
        same[:] = False
    while same.any():  # redraw partners of the same class
        second[same] = torch.randint(len(source), (int(same.sum()),), generator=g)
        same = source.labels[first] == source.labels[second]
    mixed = (source.images[first].float() + source.images[second].float()) / 2
    return mixed.round().to(torch.uint8)


def _generator(source: ImageSet, n: int, g: torch.Generator) -> torch.Tensor:
    from engines.attackers._generators import UpsampleGenerator, to_pixels

    _, c, h, _ = source.images.shape
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(int(torch.randint(2**31, (1,), generator=g)))
        net = UpsampleGenerator(64, 16, c, h).train()  # batch statistics, as when an attack samples it
        images = torch.cat([to_pixels(net(torch.randn(128, 64))) for _ in range(0, n, 128)])[:n]
    return _to_uint8(images)
