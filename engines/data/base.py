"""Data set containers shared by every data source.

Images are kept as uint8 tensors (N, C, 32, 32) and turned into floats in [0, 1] per batch.
The query API, every model and every attacker work in that pixel space; each model carries
its data set's normalisation as its first layer.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from engines.registry import Registry

IMAGE_SIZE = 32


def to_floats(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (or float images already in [0, 1]) -> float32 in [0, 1]: the pixel space."""
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()


@dataclass
class ImageSet:
    images: torch.Tensor  # uint8, (N, C, H, W)
    labels: torch.Tensor  # int64, (N,)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError("ImageSet.images must be a uint8 (N, C, H, W) tensor")
        if len(self.images) != len(self.labels):
            raise ValueError("ImageSet images and labels differ in length")

    def __len__(self) -> int:
        return len(self.labels)

    def floats(self, index: torch.Tensor | slice | None = None) -> torch.Tensor:
        """Images (all, or those at `index`) as float32 in [0, 1]."""
        return to_floats(self.images if index is None else self.images[index])

    def subset(self, index: torch.Tensor) -> "ImageSet":
        return ImageSet(self.images[index], self.labels[index])


@dataclass
class DatasetSplits:
    """One data set split for a match. The attacker pool never overlaps defender training."""

    name: str
    num_classes: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    defender_train: ImageSet
    defender_val: ImageSet
    test: ImageSet
    attacker_pool: ImageSet
    split_info: dict = field(default_factory=dict)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.channels, IMAGE_SIZE, IMAGE_SIZE)

    def sizes(self) -> dict[str, int]:
        return {
            "defender_train": len(self.defender_train),
            "defender_val": len(self.defender_val),
            "test": len(self.test),
            "attacker_pool": len(self.attacker_pool),
        }


class DataSource:
    """A registered data set. Subclasses set the class attributes and implement `load`."""

    name: str = ""
    description: str = ""
    family: str = "mnist"  # "mnist" (1x32x32) or "cifar" (3x32x32): picks default models
    num_classes: int = 10
    offline: bool = False  # True when it needs no files (embedded)

    def load(self, data_root: str, download: bool, cache_root: str) -> DatasetSplits:
        raise NotImplementedError


DATASETS: Registry[type[DataSource]] = Registry("data set", "engines.data")

# Split seed is fixed and independent of the match seed, so every match on a data set is
# scored on the same test split and the leaderboard compares like with like.
SPLIT_SEED = 20250603


def stratified_split(labels: torch.Tensor, fractions: dict[str, float], seed: int) -> dict[str, torch.Tensor]:
    """Split indices per class by fractions (in the given order; the last takes the rest)."""
    generator = torch.Generator().manual_seed(seed)
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in fractions}
    names = list(fractions)
    for cls in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == cls).flatten()
        idx = idx[torch.randperm(len(idx), generator=generator)]
        start = 0
        for i, name in enumerate(names):
            stop = len(idx) if i == len(names) - 1 else start + round(fractions[name] * len(idx))
            parts[name].append(idx[start:stop])
            start = stop
    out = {}
    for name, chunks in parts.items():
        joined = torch.cat(chunks)
        out[name] = joined[torch.randperm(len(joined), generator=generator)]
    return out


def pad_to_32(images: torch.Tensor) -> torch.Tensor:
    """(N, C, 28, 28) -> (N, C, 32, 32) with a 2-pixel zero border, as LeNet-5 expects."""
    if images.shape[-1] == IMAGE_SIZE:
        return images
    pad = (IMAGE_SIZE - images.shape[-1]) // 2
    return torch.nn.functional.pad(images, (pad, pad, pad, pad))
