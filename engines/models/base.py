"""Model registry and the shared normalisation layer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from engines.registry import Registry


@dataclass(frozen=True)
class ModelInfo:
    builder: Callable[[int, int], nn.Module]  # (in_channels, num_classes) -> body taking normalised input
    description: str


MODELS: Registry[ModelInfo] = Registry("model", "engines.models")


def register_model(name: str, description: str):
    def decorator(builder: Callable[[int, int], nn.Module]):
        MODELS.register(name)(ModelInfo(builder, description))
        return builder

    return decorator


class Normalize(nn.Module):
    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Classifier(nn.Sequential):
    """Normalize -> body. Kept as a Sequential so state-dict keys are stable (0.*, 1.*)."""


def build_model(
    name: str, in_channels: int, num_classes: int, mean: tuple[float, ...], std: tuple[float, ...]
) -> nn.Module:
    info = MODELS.get(name)
    return Classifier(Normalize(mean, std), info.builder(in_channels, num_classes))


def default_model_for(family: str) -> str:
    """The victim architecture the MISLEADER paper uses for each data set family."""
    return "lenet5" if family == "mnist" else "resnet34_8x"


def multiply_accumulates(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass of one input of `input_shape` (C, H, W) through
    the convolutions and linear layers of `model` (the usual cost measure of a CNN; element-wise
    layers, pooling and batch norm are not counted). Counted from the layers' output shapes,
    never timed."""
    total = 0

    def count(module: nn.Module, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        per_output = output[0].numel()
        if isinstance(module, nn.Conv2d):
            total += per_output * (module.in_channels // module.groups) * module.kernel_size[0] * module.kernel_size[1]
        elif isinstance(module, nn.Linear):
            total += per_output * module.in_features

    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    handles = [m.register_forward_hook(count) for m in layers]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros((1, *input_shape)))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return total
