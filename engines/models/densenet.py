"""DenseNet-121, CIFAR variant: growth rate 32, blocks 6-12-24-16, 3x3 stem, compression 0.5."""

import math

import torch
import torch.nn.functional as F
from torch import nn

from engines.models.base import register_model


class Bottleneck(nn.Module):
    def __init__(self, in_planes: int, growth: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, 4 * growth, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4 * growth)
        self.conv2 = nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False)

    def forward(self, x):
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return torch.cat([out, x], 1)


class Transition(nn.Module):
    def __init__(self, in_planes: int, out_planes: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(in_planes)
        self.conv = nn.Conv2d(in_planes, out_planes, 1, bias=False)

    def forward(self, x):
        return F.avg_pool2d(self.conv(F.relu(self.bn(x))), 2)


class DenseNet(nn.Module):
    def __init__(self, blocks: list[int], growth: int, in_channels: int, num_classes: int, reduction: float = 0.5):
        super().__init__()
        planes = 2 * growth
        self.stem = nn.Conv2d(in_channels, planes, 3, padding=1, bias=False)
        stages = []
        for i, count in enumerate(blocks):
            for _ in range(count):
                stages.append(Bottleneck(planes, growth))
                planes += growth
            if i < len(blocks) - 1:
                out_planes = int(math.floor(planes * reduction))
                stages.append(Transition(planes, out_planes))
                planes = out_planes
        self.stages = nn.Sequential(*stages)
        self.bn = nn.BatchNorm2d(planes)
        self.head = nn.Linear(planes, num_classes)

    def forward(self, x):
        out = F.relu(self.bn(self.stages(self.stem(x))))
        return self.head(F.adaptive_avg_pool2d(out, 1).flatten(1))


@register_model("densenet121", "DenseNet-121, CIFAR variant (MISLEADER CIFAR student)")
def densenet121(in_channels: int, num_classes: int) -> nn.Module:
    return DenseNet([6, 12, 24, 16], 32, in_channels, num_classes)
