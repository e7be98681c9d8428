"""Generator and discriminator networks of the data-free attacks (private helper module).

All generators produce a pre-activation tensor; `to_pixels` maps it to images in [0, 1]
(tanh rescaled), the space of the query API.
"""

from __future__ import annotations

import torch
from torch import nn


def to_pixels(pre: torch.Tensor) -> torch.Tensor:
    """Generator pre-activation -> image in [0, 1] (tanh rescaled)."""
    return (torch.tanh(pre) + 1) / 2


class UpsampleGenerator(nn.Module):
    """MAZE's `conv3_gen` layout: linear -> BN -> [up, conv, BN, LeakyReLU] x 2 -> conv -> BN.

    `width` is the channel count of the last hidden block (the reference uses 64, i.e.
    128-128-64 channels); the output BatchNorm is affine as in the reference. DFME's generator
    (from the data-free distillation literature) is the same layout with bias-free hidden
    convolutions and a non-affine output BatchNorm: `conv_bias=False, affine_output=False`."""

    def __init__(
        self,
        nz: int,
        width: int,
        channels: int,
        image_size: int = 32,
        conv_bias: bool = True,
        affine_output: bool = True,
    ):
        super().__init__()
        self.start = image_size // 4
        self.project = nn.Linear(nz, 2 * width * self.start**2)
        self.body = nn.Sequential(
            nn.BatchNorm2d(2 * width),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1, bias=conv_bias),
            nn.BatchNorm2d(2 * width),
            nn.LeakyReLU(0.2),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(2 * width, width, 3, padding=1, bias=conv_bias),
            nn.BatchNorm2d(width),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width, channels, 3, padding=1),
            nn.BatchNorm2d(channels, affine=affine_output),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Pre-activation output (apply `to_pixels` for images)."""
        return self.body(self.project(z).view(z.shape[0], -1, self.start, self.start))


def dcgan_init(module: nn.Module) -> None:
    """DCGAN weight initialisation: conv N(0, 0.02), batch-norm scale N(1, 0.02)."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d) and module.affine:
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class DcganGenerator(nn.Module):
    """DCGAN generator for 32x32 images: z -> 4x4 -> 8x8 -> 16x16 -> 32x32 (pre-activation)."""

    def __init__(self, nz: int, width: int, channels: int):
        super().__init__()
        self.nz = nz
        self.net = nn.Sequential(
            nn.ConvTranspose2d(nz, 4 * width, 4, 1, 0, bias=False),
            nn.BatchNorm2d(4 * width),
            nn.ReLU(True),
            nn.ConvTranspose2d(4 * width, 2 * width, 4, 2, 1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(True),
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(True),
            nn.ConvTranspose2d(width, channels, 4, 2, 1, bias=False),
        )
        self.apply(dcgan_init)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.view(z.shape[0], self.nz, 1, 1))


class DcganDiscriminator(nn.Module):
    """DCGAN discriminator for 32x32 images in [0, 1]; returns one logit per image."""

    def __init__(self, width: int, channels: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(width, 2 * width, 4, 2, 1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(2 * width, 4 * width, 4, 2, 1, bias=False),
            nn.BatchNorm2d(4 * width),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(4 * width, 1, 4, 1, 0, bias=False),
        )
        self.apply(dcgan_init)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images * 2 - 1).view(-1)
