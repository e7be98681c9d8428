"""MISLEADER's query augmentation A(D_train), built from torchvision v2 transforms.

The specified chain (misleader.md), applied per image with independent random parameters:
RandomResizedCrop(32, scale 0.8-1.0) -> RandomHorizontalFlip -> ColorJitter(brightness 0.4,
contrast 0.4, saturation 0.4) -> RandomGrayscale(p 0.2) -> RandomAffine(15 deg, translate 0.1,
scale 0.9-1.1). The data set's normalisation is not part of the chain here: every arena model
normalises its [0, 1] input itself (its first layer).

One-channel images (MNIST family): a saturation change and a grey-scale conversion are exact
identities on a grey image (torchvision returns the image unchanged; a test checks it), so
the chain for one channel drops ColorJitter's saturation and RandomGrayscale and keeps every
other op in the same order. The horizontal flip is kept, as the public code keeps it for MNIST.

The utility batch of the CIFAR preset uses the public code's standard training augmentation
(RandomCrop(32, padding 4) + RandomHorizontalFlip); the MNIST preset uses none, as there.

torchvision v2 transforms applied to a batched tensor draw ONE set of parameters for the whole
batch, so images are transformed one by one. The transforms draw from torch's global RNG; it
is seeded right before use inside a forked RNG scope, so results are reproducible and the
caller's global RNG state is left untouched.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

IMAGE_SIZE = 32


def attacker_query_chain(channels: int) -> v2.Compose:
    """The simulated attacker's augmentation A for images with `channels` channels."""
    if channels not in (1, 3):
        raise ValueError(f"augmentation chain is defined for 1 or 3 channels, got {channels}")
    colour = channels == 3
    ops: list[v2.Transform] = [
        v2.RandomResizedCrop(IMAGE_SIZE, scale=(0.8, 1.0), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4 if colour else None),
    ]
    if colour:
        ops.append(v2.RandomGrayscale(p=0.2))
    ops.append(v2.RandomAffine(degrees=15, translate=(0.1, 0.1), scale=(0.9, 1.1)))
    return v2.Compose(ops)


def utility_train_chain() -> v2.Compose:
    """Standard CIFAR training augmentation of the public code (utility batches, CIFAR preset)."""
    return v2.Compose([v2.RandomCrop(IMAGE_SIZE, padding=4), v2.RandomHorizontalFlip()])


def augment_images(images: torch.Tensor, chain: v2.Compose, seed: int) -> torch.Tensor:
    """Apply `chain` to each uint8 image (N, C, H, W) independently; returns uint8 (N, C, H, W).

    Reproducible for a given seed; does not change the caller's global RNG state."""
    if images.dtype != torch.uint8:
        raise ValueError("augment_images expects uint8 images")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.stack([chain(image) for image in images]) if len(images) else images.clone()
