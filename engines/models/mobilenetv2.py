"""MobileNetV2 for 32x32 inputs (Sandler et al., "MobileNetV2: Inverted Residuals and Linear
Bottlenecks", CVPR 2018): stride-1 3x3 stem and a stride-1 second stage, so the network
down-samples 32 -> 16 -> 8 -> 4 (stages 3, 4 and 6).

Two registered variants, kept under distinct names so that a cached artifact never loads into
the other architecture:
- `mobilenetv2`: the arena's first CIFAR variant; every block has a 1x1 expansion convolution
  (also at expansion 1) and stride-1 blocks that change width get a 1x1 projection shortcut.
- `mobilenetv2_paper`: the blocks of the paper, as the MISLEADER public code trains its CIFAR
  student: no expansion convolution at expansion 1, a residual only where input and output
  shapes agree, dropout 0.2 before the classifier, and the public code's initialisation
  (He-normal fan-out convolutions, unit batch norms, N(0, 0.01) linear weights).
"""

import torch.nn.functional as F
from torch import nn

from engines.models.base import register_model

# (expansion, out_planes, repeats, stride); strides of the first stages are 1 for 32x32 inputs
_CFG = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


class InvertedResidual(nn.Module):
    def __init__(self, in_planes: int, out_planes: int, expansion: int, stride: int, paper: bool = False):
        super().__init__()
        hidden = expansion * in_planes
        self.use_residual = stride == 1 and in_planes == out_planes
        expand = [] if paper and expansion == 1 else [nn.Conv2d(in_planes, hidden, 1, bias=False)]
        expand += [nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True)] if expand else []
        self.block = nn.Sequential(
            *expand,
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, out_planes, 1, bias=False),
            nn.BatchNorm2d(out_planes),
        )
        self.project = None
        if not paper and stride == 1 and in_planes != out_planes:  # keep a residual path where shapes allow
            self.project = nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, bias=False), nn.BatchNorm2d(out_planes))

    def forward(self, x):
        out = self.block(x)
        if self.use_residual:
            return out + x
        if self.project is not None:
            return out + self.project(x)
        return out


class MobileNetV2(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, paper: bool = False):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU6(inplace=True)
        )
        layers, in_planes = [], 32
        for expansion, out_planes, repeats, stride in _CFG:
            for i in range(repeats):
                layers.append(InvertedResidual(in_planes, out_planes, expansion, stride if i == 0 else 1, paper))
                in_planes = out_planes
        self.layers = nn.Sequential(*layers)
        self.tail = nn.Sequential(nn.Conv2d(320, 1280, 1, bias=False), nn.BatchNorm2d(1280), nn.ReLU6(inplace=True))
        self.head = (
            nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes)) if paper else nn.Linear(1280, num_classes)
        )
        if paper:
            for module in self.modules():
                if isinstance(module, nn.Conv2d):
                    nn.init.kaiming_normal_(module.weight, mode="fan_out")
                elif isinstance(module, nn.BatchNorm2d):
                    nn.init.ones_(module.weight)
                    nn.init.zeros_(module.bias)
                elif isinstance(module, nn.Linear):
                    nn.init.normal_(module.weight, 0, 0.01)
                    nn.init.zeros_(module.bias)

    def forward(self, x):
        out = self.tail(self.layers(self.stem(x)))
        return self.head(F.adaptive_avg_pool2d(out, 1).flatten(1))


@register_model("mobilenetv2", "MobileNetV2, arena CIFAR variant (projection shortcuts, expansion conv at t=1)")
def mobilenetv2(in_channels: int, num_classes: int) -> nn.Module:
    return MobileNetV2(in_channels, num_classes)


@register_model("mobilenetv2_paper", "MobileNetV2 with the paper's blocks (MISLEADER public code's student)")
def mobilenetv2_paper(in_channels: int, num_classes: int) -> nn.Module:
    return MobileNetV2(in_channels, num_classes, paper=True)
