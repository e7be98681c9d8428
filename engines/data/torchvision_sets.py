"""Standard torchvision data sets, read from `--data-root` (downloaded only with `--download`).

The official test split is the arena's test split. The official training split is divided
per class with a fixed seed: 75 % defender_train, 5 % defender_val, 20 % attacker_pool.
Grey 28x28 sets are padded to 32x32.
"""
from __future__ import annotations

import numpy as np
import torch

from engines.data.base import DATASETS, SPLIT_SEED, DatasetSplits, DataSource, ImageSet, pad_to_32, stratified_split
from engines.errors import ArenaError

FRACTIONS = {"defender_train": 0.75, "defender_val": 0.05, "attacker_pool": 0.20}


def _to_uint8_nchw(data, channels: int) -> torch.Tensor:
    array = data.numpy() if isinstance(data, torch.Tensor) else np.asarray(data)
    tensor = torch.from_numpy(np.ascontiguousarray(array)).to(torch.uint8)
    if tensor.ndim == 3:  # (N, H, W) grey
        tensor = tensor.unsqueeze(1)
    elif tensor.shape[-1] == channels and tensor.shape[1] != channels:  # (N, H, W, C)
        tensor = tensor.permute(0, 3, 1, 2)
    return pad_to_32(tensor.contiguous())


class TorchvisionSource(DataSource):
    tv_class: str = ""
    channels: int = 1
    num_classes: int = 10
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    def _open(self, root: str, train: bool, download: bool):
        import torchvision.datasets as tvd

        cls = getattr(tvd, self.tv_class)
        if self.tv_class == "SVHN":
            return cls(root, split="train" if train else "test", download=download)
        return cls(root, train=train, download=download)

    def _read(self, root: str, train: bool, download: bool) -> ImageSet:
        try:
            ds = self._open(root, train, download)
        except RuntimeError as exc:
            hint = "put it there, pass --data-root DIR where it is, or add --download on a machine with a network"
            if download:
                hint = f"the download failed ({exc}); check the network or fetch it by hand into that folder"
            raise ArenaError(f"data set {self.name!r} not found under --data-root {root!r}; {hint}") from None
        except OSError as exc:
            raise ArenaError(f"data set {self.name!r} under {root!r} could not be read ({exc}); re-download it") from None
        images = _to_uint8_nchw(ds.data, self.channels)
        labels = torch.as_tensor(np.asarray(getattr(ds, "targets", getattr(ds, "labels", None)))).long()
        return ImageSet(images, labels)

    def load(self, data_root: str, download: bool, cache_root: str) -> DatasetSplits:
        train = self._read(data_root, True, download)
        test = self._read(data_root, False, download)
        parts = stratified_split(train.labels, FRACTIONS, SPLIT_SEED)
        result = DatasetSplits(
            name=self.name,
            num_classes=self.num_classes,
            channels=self.channels,
            mean=self.mean,
            std=self.std,
            defender_train=train.subset(parts["defender_train"]),
            defender_val=train.subset(parts["defender_val"]),
            test=test,
            attacker_pool=train.subset(parts["attacker_pool"]),
        )
        result.split_info = {
            "source": f"torchvision.datasets.{self.tv_class} at {data_root}",
            "method": "official test split; official train split stratified 75/5/20",
            "split_seed": SPLIT_SEED,
            "sizes": result.sizes(),
        }
        return result


def _register(name: str, tv_class: str, family: str, channels: int, num_classes: int, mean, std, description: str):
    cls = type(
        f"{tv_class}Source",
        (TorchvisionSource,),
        dict(tv_class=tv_class, family=family, channels=channels, num_classes=num_classes,
             mean=mean, std=std, description=description),
    )
    DATASETS.register(name)(cls)


_register("mnist", "MNIST", "mnist", 1, 10, (0.1307,), (0.3081,), "MNIST (torchvision, 70k grey digits)")
_register("fashion-mnist", "FashionMNIST", "mnist", 1, 10, (0.2860,), (0.3530,), "Fashion-MNIST (torchvision, 70k grey clothes)")
_register("kmnist", "KMNIST", "mnist", 1, 10, (0.1918,), (0.3483,), "Kuzushiji-MNIST (torchvision, 70k grey characters)")
_register("cifar10", "CIFAR10", "cifar", 3, 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), "CIFAR-10 (torchvision, 60k colour images)")
_register("cifar100", "CIFAR100", "cifar", 3, 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), "CIFAR-100 (torchvision, 60k colour images, 100 classes)")
_register("svhn", "SVHN", "cifar", 3, 10, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), "SVHN (torchvision, house numbers)")
