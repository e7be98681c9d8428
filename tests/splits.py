"""Random tiny data splits whose test split and attacker pool raise when read: a defence
trained on them proves it never looks at data it must not see."""

import torch

from engines.data.base import DatasetSplits, ImageSet


class Forbidden:
    """Stands in for a split a defender must never read."""

    def __init__(self, name):
        self.name = name

    def __getattr__(self, attr):
        raise AssertionError(f"the defence read the {self.name} split ({attr})")

    def __len__(self):
        raise AssertionError(f"the defence read the {self.name} split (len)")


def guarded_splits(train: int, val: int, seed: int = 0) -> DatasetSplits:
    """Random digits-shaped defender splits of the given sizes; test and pool forbidden."""
    gen = torch.Generator().manual_seed(seed)

    def part(n):
        return ImageSet(
            torch.randint(0, 256, (n, 1, 32, 32), dtype=torch.uint8, generator=gen),
            torch.randint(0, 10, (n,), generator=gen),
        )

    return DatasetSplits(
        name="mnist5k",
        num_classes=10,
        channels=1,
        mean=(0.13,),
        std=(0.31,),
        defender_train=part(train),
        defender_val=part(val),
        test=Forbidden("test"),
        attacker_pool=Forbidden("attacker pool"),
    )
