"""DenseNet-121 for 32x32 inputs: growth rate 32, blocks 6-12-24-16, bottleneck width 4x,
compression 0.5 (Huang et al., "Densely Connected Convolutional Networks", CVPR 2017).

Two registered variants, kept under distinct names so that a cached artifact never loads into
the other architecture:
- `densenet121`: the arena's first CIFAR variant; a bare 3x3 stem and no down-sampling before
  the first dense block (all of block 1 runs at 32x32).
- `densenet121_pool`: the variant the MISLEADER public code trains as its CIFAR student; a
  3x3 stride-1 stem followed by batch norm, ReLU and a 3x3 stride-2 max-pool (padding 1), so
  the dense blocks run at 16-8-4-2 instead of 32-16-8-4: the same parameter count (up to the
  stem's batch norm) at about a quarter of the multiply-accumulates. Its dense layers append
  their new features after the input (the other variant prepends them; a fixed channel
  permutation, no change of shape or cost) and its weights start from the public code's
  initialisation (He-normal convolutions, unit batch norms, zero linear bias).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from engines.models.base import register_model


class Bottleneck(nn.Module):
    def __init__(self, in_planes: int, growth: int, new_first: bool = True):
        super().__init__()
        self.new_first = new_first
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, 4 * growth, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4 * growth)
        self.conv2 = nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False)

    def forward(self, x):
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return torch.cat([out, x] if self.new_first else [x, out], 1)


class Transition(nn.Module):
    def __init__(self, in_planes: int, out_planes: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(in_planes)
        self.conv = nn.Conv2d(in_planes, out_planes, 1, bias=False)

    def forward(self, x):
        return F.avg_pool2d(self.conv(F.relu(self.bn(x))), 2)


class DenseNet(nn.Module):
    def __init__(
        self,
        blocks: list[int],
        growth: int,
        in_channels: int,
        num_classes: int,
        reduction: float = 0.5,
        stem_pool: bool = False,
    ):
        super().__init__()
        planes = 2 * growth
        if stem_pool:
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, planes, 3, padding=1, bias=False),
                nn.BatchNorm2d(planes),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, stride=2, padding=1),
            )
        else:
            self.stem = nn.Conv2d(in_channels, planes, 3, padding=1, bias=False)
        stages = []
        for i, count in enumerate(blocks):
            for _ in range(count):
                stages.append(Bottleneck(planes, growth, new_first=not stem_pool))
                planes += growth
            if i < len(blocks) - 1:
                out_planes = int(math.floor(planes * reduction))
                stages.append(Transition(planes, out_planes))
                planes = out_planes
        self.stages = nn.Sequential(*stages)
        self.bn = nn.BatchNorm2d(planes)
        self.head = nn.Linear(planes, num_classes)
        if stem_pool:
            for module in self.modules():
                if isinstance(module, nn.Conv2d):
                    nn.init.kaiming_normal_(module.weight)
                elif isinstance(module, nn.BatchNorm2d):
                    nn.init.ones_(module.weight)
                    nn.init.zeros_(module.bias)
                elif isinstance(module, nn.Linear):
                    nn.init.zeros_(module.bias)

    def forward(self, x):
        out = F.relu(self.bn(self.stages(self.stem(x))))
        return self.head(F.adaptive_avg_pool2d(out, 1).flatten(1))


@register_model("densenet121", "DenseNet-121, arena CIFAR variant (no stem pooling; 4x densenet121_pool's cost)")
def densenet121(in_channels: int, num_classes: int) -> nn.Module:
    return DenseNet([6, 12, 24, 16], 32, in_channels, num_classes)


@register_model("densenet121_pool", "DenseNet-121 with a stride-2 stem max-pool (MISLEADER public code's student)")
def densenet121_pool(in_channels: int, num_classes: int) -> nn.Module:
    return DenseNet([6, 12, 24, 16], 32, in_channels, num_classes, stem_pool=True)
