"""Entry points: resolve a data set by name and choose the attacker's query pool."""
from __future__ import annotations

from engines.data.base import DATASETS, DatasetSplits, ImageSet
from engines.errors import ArenaError

IN_DISTRIBUTION = "in-distribution"


def load_dataset(name: str, data_root: str, cache_root: str, download: bool = False) -> DatasetSplits:
    source = DATASETS.get(name)()
    return source.load(data_root=data_root, download=download, cache_root=cache_root)


def load_pool(
    pool: str, splits: DatasetSplits, data_root: str, cache_root: str, download: bool = False
) -> ImageSet:
    """The attacker's query pool: its in-distribution split, or another data set as surrogate.

    A surrogate pool uses all of that data set's images except its test split, with channels
    converted to the match data set's (RGB <-> grey).
    """
    if pool == IN_DISTRIBUTION or pool == splits.name:
        return splits.attacker_pool
    other = load_dataset(pool, data_root, cache_root, download)
    import torch

    parts = [other.defender_train, other.defender_val, other.attacker_pool]
    images = torch.cat([p.images for p in parts])
    labels = torch.cat([p.labels for p in parts])
    if other.channels != splits.channels:
        if splits.channels == 1:  # RGB -> luminance
            weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            images = (images.float() * weights).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
        elif other.channels == 1:
            images = images.expand(-1, splits.channels, -1, -1).contiguous()
        else:
            raise ArenaError(f"pool {pool!r} has {other.channels} channels, the match needs {splits.channels}")
    return ImageSet(images, labels)
