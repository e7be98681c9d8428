"""LeNet-5 and the narrower students of the MISLEADER MNIST ensemble (32x32 inputs).

Widths (conv1-conv2-fc1-fc2): lenet5 6-16-120-84, lenet5_half 3-8-60-42, lenet5_fifth 4-10-30-30.
"""

from torch import nn

from engines.models.base import register_model


class LeNet5(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, widths=(6, 16, 120, 84)):
        super().__init__()
        c1, c2, f1, f2 = widths
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 5),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c2 * 5 * 5, f1),
            nn.ReLU(inplace=True),
            nn.Linear(f1, f2),
            nn.ReLU(inplace=True),
            nn.Linear(f2, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


@register_model("lenet5", "LeNet-5 (6-16-120-84), 32x32 input")
def lenet5(in_channels: int, num_classes: int) -> nn.Module:
    return LeNet5(in_channels, num_classes, (6, 16, 120, 84))


@register_model("lenet5_half", "LeNet-5 at half width (3-8-60-42)")
def lenet5_half(in_channels: int, num_classes: int) -> nn.Module:
    return LeNet5(in_channels, num_classes, (3, 8, 60, 42))


@register_model("lenet5_fifth", "LeNet-5 narrow student (4-10-30-30)")
def lenet5_fifth(in_channels: int, num_classes: int) -> nn.Module:
    return LeNet5(in_channels, num_classes, (4, 10, 30, 30))
