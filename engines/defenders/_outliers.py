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

Images stay in the arena's pixel space: uint8 (N, C, H, W).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from engines.data.base import ImageSet

OUTLIER_KINDS = ("noise", "blobs", "patches", "blend")


def synthesize_outliers(
    source: ImageSet, count: int, generator: torch.Generator, kinds: tuple[str, ...] = OUTLIER_KINDS
) -> torch.Tensor:
    """`count` outlier images (uint8, shaped like `source.images`), equal shares of `kinds`."""
    if count <= 0 or not kinds:
        return source.images[:0].clone()
    per_kind = [count // len(kinds) + (k < count % len(kinds)) for k in range(len(kinds))]
    makers = {"noise": _noise, "blobs": _blobs, "patches": _patches, "blend": _blend}
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
