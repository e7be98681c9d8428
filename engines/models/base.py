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
