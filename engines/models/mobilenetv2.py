"""MobileNetV2, CIFAR variant: stride-1 stem and first reduction stage kept at full size."""

import torch.nn.functional as F
from torch import nn

from engines.models.base import register_model

# (expansion, out_planes, repeats, stride); strides of the first stages are 1 for 32x32 inputs
_CFG = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


class InvertedResidual(nn.Module):
    def __init__(self, in_planes: int, out_planes: int, expansion: int, stride: int):
        super().__init__()
        hidden = expansion * in_planes
        self.use_residual = stride == 1 and in_planes == out_planes
        self.block = nn.Sequential(
            nn.Conv2d(in_planes, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, out_planes, 1, bias=False),
            nn.BatchNorm2d(out_planes),
        )
        self.project = None
        if stride == 1 and in_planes != out_planes:  # keep a residual path where shapes allow
            self.project = nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, bias=False), nn.BatchNorm2d(out_planes))

    def forward(self, x):
        out = self.block(x)
        if self.use_residual:
            return out + x
        if self.project is not None:
            return out + self.project(x)
        return out


class MobileNetV2(nn.Module):
    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU6(inplace=True)
        )
        layers, in_planes = [], 32
        for expansion, out_planes, repeats, stride in _CFG:
            for i in range(repeats):
                layers.append(InvertedResidual(in_planes, out_planes, expansion, stride if i == 0 else 1))
                in_planes = out_planes
        self.layers = nn.Sequential(*layers)
        self.tail = nn.Sequential(nn.Conv2d(320, 1280, 1, bias=False), nn.BatchNorm2d(1280), nn.ReLU6(inplace=True))
        self.head = nn.Linear(1280, num_classes)

    def forward(self, x):
        out = self.tail(self.layers(self.stem(x)))
        return self.head(F.adaptive_avg_pool2d(out, 1).flatten(1))


@register_model("mobilenetv2", "MobileNetV2, CIFAR variant (MISLEADER CIFAR student)")
def mobilenetv2(in_channels: int, num_classes: int) -> nn.Module:
    return MobileNetV2(in_channels, num_classes)
