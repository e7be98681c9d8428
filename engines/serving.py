"""Inference-only copies of trained models for answering queries (victims, ensemble members).

A served model never trains again, so its eval-mode batch norm is an affine map that can be
folded into the convolution before it, and its weights can be laid out for the CPU's
convolution kernels. `inference_copy` does both on a deep copy (the original keeps training,
attacking and checkpointing as before); `ServingModel` wraps the copy with the input layout
it wants. Answers equal the unoptimised model's within float32 rounding (tests check 1e-5).

Which optimisations apply is a fixed rule of the architecture, never a timing made at run time
(that would make served numbers depend on machine load): channels-last only where the model
has a convolution with at least `CHANNELS_LAST_MIN_WIDTH` output channels (CIFAR-size nets,
where oneDNN's blocked kernels pay; LeNet-size nets keep the default layout and, having no
batch norm, stay bit-identical to the training model).
"""

from __future__ import annotations

import copy

import torch
import torch.fx
from torch import nn
from torch.fx.experimental.optimization import fuse

CHANNELS_LAST_MIN_WIDTH = 32


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of `model` with every BatchNorm2d that directly follows a Conv2d
    folded into that convolution (weights and bias rescaled). Batch norms after other layers
    (DenseNet's pre-activation ones) stay as they are. A model that torch.fx cannot trace is
    returned as an eval-mode copy, unfolded."""
    model = copy.deepcopy(model).eval()
    if not any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        return model
    try:
        return fuse(model, inplace=True)
    except (torch.fx.proxy.TraceError, TypeError, NotImplementedError):
        return model


def wants_channels_last(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) and m.out_channels >= CHANNELS_LAST_MIN_WIDTH for m in model.modules())


def inference_copy(model: nn.Module, channels_last: bool | None = None) -> nn.Module:
    """A frozen (no-grad, eval-mode) copy of `model` with batch norm folded and, by the fixed
    rule above or when asked, weights in channels-last layout."""
    served = fold_batchnorm(model)
    for parameter in served.parameters():
        parameter.requires_grad_(False)
    if wants_channels_last(model) if channels_last is None else channels_last:
        served = served.to(memory_format=torch.channels_last)
        served.channels_last = True
    else:
        served.channels_last = False
    return served


class ServingModel:
    """Logits of an inference copy of `model`; call under torch.inference_mode()."""

    def __init__(self, model: nn.Module, channels_last: bool | None = None):
        self.model = inference_copy(model, channels_last)
        self.channels_last = self.model.channels_last

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.model(images).contiguous()
