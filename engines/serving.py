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

Max-pooling over 2x2 windows with stride 2 (LeNet's) is computed as the element-wise maximum
of the four strided views of its input (`max_pool_2x2`): the same values bit for bit (a
maximum is exact), without the CPU kernel's index bookkeeping, which measured about 50x
slower on LeNet-size maps (benchmarks/serving.py). Every served model gets it, victims too.

On CPU, `ServingModel` also splits a large batch into micro-batches small enough that the largest
activation of one micro-batch fits in `MICRO_BATCH_ACTIVATION_BYTES` (half the 32 MiB L3
cache of the machine's CPU class), so each layer's output is still in cache when the next
layer reads it. The micro-batch size is a fixed function of the architecture and the input
shape (the largest per-image activation, found by shape propagation of one image), never a
timing; each image's answer depends on that image alone, so splitting changes answers only
within float32 rounding. LeNet-size nets have small activations and are never split.
"""

from __future__ import annotations

import copy

import torch
import torch.fx
from torch import nn
from torch.fx.experimental.optimization import fuse

CHANNELS_LAST_MIN_WIDTH = 32
MICRO_BATCH_ACTIVATION_BYTES = 16 * 2**20


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


def max_pool_2x2(x: torch.Tensor) -> torch.Tensor:
    """F.max_pool2d(x, 2) (kernel 2, stride 2, no padding, floor mode), bit-identical, as the
    element-wise maximum of the four strided views of `x`."""
    h, w = 2 * (x.shape[-2] // 2), 2 * (x.shape[-1] // 2)
    top = torch.maximum(x[..., 0:h:2, 0:w:2], x[..., 0:h:2, 1:w:2])
    return torch.maximum(top, torch.maximum(x[..., 1:h:2, 0:w:2], x[..., 1:h:2, 1:w:2]))


class MaxPool2x2(nn.Module):
    """nn.MaxPool2d(2) for serving (see `max_pool_2x2`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return max_pool_2x2(x)


def _is_plain_2x2_pool(module: nn.Module) -> bool:
    def pair(v):
        return v if isinstance(v, tuple) else (v, v)

    return (
        isinstance(module, nn.MaxPool2d)
        and pair(module.kernel_size) == (2, 2)
        and pair(module.stride) == (2, 2)
        and pair(module.padding) == (0, 0)
        and pair(module.dilation) == (1, 1)
        and not module.ceil_mode
        and not module.return_indices
    )


def replace_2x2_pools(model: nn.Module) -> nn.Module:
    """Swap every plain 2x2 nn.MaxPool2d submodule of `model` (in place) for `MaxPool2x2`."""
    for name, child in list(model.named_children()):
        if _is_plain_2x2_pool(child):
            setattr(model, name, MaxPool2x2())
        else:
            replace_2x2_pools(child)
    return model


def wants_channels_last(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) and m.out_channels >= CHANNELS_LAST_MIN_WIDTH for m in model.modules())


def inference_copy(model: nn.Module, channels_last: bool | None = None) -> nn.Module:
    """A frozen (no-grad, eval-mode) copy of `model` with batch norm folded, 2x2 max-pools
    computed from strided views and, by the fixed rule above or when asked, weights in
    channels-last layout."""
    served = replace_2x2_pools(fold_batchnorm(model))
    for parameter in served.parameters():
        parameter.requires_grad_(False)
    if wants_channels_last(model) if channels_last is None else channels_last:
        served = served.to(memory_format=torch.channels_last)
        served.channels_last = True
    else:
        served.channels_last = False
    return served


def largest_activation_bytes(model: nn.Module, image_shape: tuple[int, ...], device: torch.device) -> int:
    """Bytes of the largest output of any layer of `model` for one image of `image_shape`
    (C, H, W), by running one zero image through it (shape propagation; nothing is timed)."""
    largest = 0

    def record(_module, _inputs, output) -> None:
        nonlocal largest
        if isinstance(output, torch.Tensor):
            largest = max(largest, output.numel() * output.element_size())

    handles = [m.register_forward_hook(record) for m in model.modules() if m is not model]
    try:
        with torch.inference_mode():
            model(torch.zeros((1, *image_shape), device=device))
    finally:
        for handle in handles:
            handle.remove()
    return largest


class ServingModel:
    """Logits of an inference copy of `model`, a batch at a time in cache-sized micro-batches;
    call under torch.inference_mode()."""

    def __init__(self, model: nn.Module, channels_last: bool | None = None):
        self.model = inference_copy(model, channels_last)
        self.channels_last = self.model.channels_last
        self._micro_batch: dict[tuple[int, ...], int] = {}

    def micro_batch(self, image_shape: tuple[int, ...], device: torch.device) -> int:
        """Images per micro-batch for inputs of `image_shape` (a fixed rule, cached)."""
        if image_shape not in self._micro_batch:
            largest = largest_activation_bytes(self.model, image_shape, device)
            self._micro_batch[image_shape] = max(1, MICRO_BATCH_ACTIVATION_BYTES // max(1, largest))
        return self._micro_batch[image_shape]

    def _forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.model(images).contiguous()

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.device.type != "cpu":  # accelerators want whole batches; the rule is for CPU caches
            return self._forward(images)
        step = self.micro_batch(tuple(images.shape[1:]), images.device)
        if len(images) <= step:
            return self._forward(images)
        return torch.cat([self._forward(chunk) for chunk in images.split(step)])
