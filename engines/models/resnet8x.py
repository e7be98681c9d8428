"""CIFAR-style ResNet-18/34 ("8x" naming of the data-free extraction literature).

3x3 stem without max-pooling, four stages of BasicBlocks (64-128-256-512), global average
pooling; works for 32x32 inputs.
"""

import torch.nn.functional as F
from torch import nn

from engines.models.base import register_model


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet8x(nn.Module):
    def __init__(self, blocks: list[int], in_channels: int, num_classes: int):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True)
        )
        layers, in_planes = [], 64
        for i, (planes, count) in enumerate(zip((64, 128, 256, 512), blocks)):
            for j in range(count):
                stride = 2 if (i > 0 and j == 0) else 1
                layers.append(BasicBlock(in_planes, planes, stride))
                in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.head = nn.Linear(512, num_classes)

    def forward(self, x):
        out = self.layers(self.stem(x))
        return self.head(F.adaptive_avg_pool2d(out, 1).flatten(1))


@register_model("resnet18_8x", "ResNet-18, CIFAR variant (3x3 stem, 11M params)")
def resnet18_8x(in_channels: int, num_classes: int) -> nn.Module:
    return ResNet8x([2, 2, 2, 2], in_channels, num_classes)


@register_model("resnet34_8x", "ResNet-34, CIFAR variant (MISLEADER's CIFAR teacher)")
def resnet34_8x(in_channels: int, num_classes: int) -> nn.Module:
    return ResNet8x([3, 4, 6, 3], in_channels, num_classes)
