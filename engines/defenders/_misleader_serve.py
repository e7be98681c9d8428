"""Serving an ensemble: D(x) = (1/K) * sum_k softmax(d_k(x)) for a whole batch at once.

Every member answers from an inference copy (engines/serving.py: batch norm folded into the
convolutions, channels-last for CIFAR-size nets); the trained members in `members` are never
changed. How members are batched together is a fixed rule of their architectures and the
device, never a timing made at run time (that would make served numbers depend on machine
load):
- LeNet-5-shaped members (the MNIST preset, its ablations) are stacked into one network
  (`StackedLeNets`): one first convolution computes every member's first-layer channels
  (the input normalisation folded into it), the rest runs member by member on its own
  channels, with ReLU fused into the convolutions and linear layers where oneDNN serves them.
- other equal-architecture members are fused with torch.func (stacked weights, `vmap` over
  `functional_call`) on CUDA, where `benchmarks/misleader.py` measured it to pay;
- any other member is called on its own (on CUDA, groups run on separate streams).
Every member sees the whole batch (no per-image loop), and nothing depends on how queries are
batched: each image's answer is a function of that image alone. Answers equal the plain
members' mean of softmax outputs within float32 rounding (tests check 1e-6).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from engines.models.base import Classifier, Normalize
from engines.models.lenet import LeNet5
from engines.serving import ServingModel, max_pool_2x2


class _Single:
    def __init__(self, model: nn.Module):
        self.model = ServingModel(model)

    def prob_sum(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x).float(), dim=1)


class _Fused:
    """Equal-architecture members as one vmapped functional call."""

    def __init__(self, models: list[nn.Module]):
        from torch.func import functional_call, stack_module_state, vmap

        params, buffers = stack_module_state(models)
        self.params, self.buffers = params, buffers
        base = copy.deepcopy(models[0]).to("meta")

        def one(p, b, x):
            return functional_call(base, (p, b), (x,))

        self.call = vmap(one, in_dims=(0, 0, None))

    def prob_sum(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.call(self.params, self.buffers, x).float(), dim=2).sum(0)


def _lenet_layers(member: nn.Module) -> tuple[Normalize, list[nn.Conv2d], list[nn.Linear]] | None:
    if not (isinstance(member, Classifier) and isinstance(member[0], Normalize) and isinstance(member[1], LeNet5)):
        return None
    body = member[1]
    convs = [m for m in body.features if isinstance(m, nn.Conv2d)]
    linears = [m for m in body.classifier if isinstance(m, nn.Linear)]
    return member[0], convs, linears


def stackable_lenets(members: list[nn.Module]) -> bool:
    """Whether `members` are LeNet-5-shaped networks with one input normalisation (the rule
    for `StackedLeNets`)."""
    layers = [_lenet_layers(m) for m in members]
    if any(part is None for part in layers):
        return False
    first = layers[0][0]
    return (
        all(torch.equal(norm.mean, first.mean) and torch.equal(norm.std, first.std) for norm, _, _ in layers)
        and len({linears[-1].out_features for _, _, linears in layers}) == 1
    )


class StackedLeNets:
    """K LeNet-5-shaped members served as one network; `prob_sum` is the sum of their softmax
    outputs. The first convolution holds every member's filters side by side (its input is
    shared), with the normalisation (x - mean) / std folded into its weights and bias; from
    the second convolution on, each member reads its own slice of channels. ReLU is fused
    into the convolutions and hidden linear layers (oneDNN post-ops) on CPU."""

    def __init__(self, members: list[nn.Module]):
        layers = [_lenet_layers(m) for m in members]
        norm = layers[0][0]
        scale = 1.0 / norm.std.reshape(1, -1, 1, 1)
        shift = norm.mean.reshape(1, -1, 1, 1) * scale
        weights, biases, self.widths, self.rest = [], [], [], []
        for _, convs, linears in layers:
            w = convs[0].weight.detach()
            weights.append(w * scale)
            biases.append(convs[0].bias.detach() - (w * shift).sum(dim=(1, 2, 3)))
            self.widths.append(convs[0].out_channels)
            self.rest.append(
                (
                    convs[1].weight.detach().contiguous(),
                    convs[1].bias.detach(),
                    [(lin.weight.detach().contiguous(), lin.bias.detach()) for lin in linears],
                )
            )
        self.weight1 = torch.cat(weights).contiguous()
        self.bias1 = torch.cat(biases).contiguous()
        self.onednn = self.weight1.device.type == "cpu" and torch.backends.mkldnn.is_available()

    def _conv_relu(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        if self.onednn:
            return torch.ops.mkldnn._convolution_pointwise(x, weight, bias, [0, 0], [1, 1], [1, 1], 1, "relu", [], "")
        return torch.relu(F.conv2d(x, weight, bias))

    def _linear_relu(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        if self.onednn:
            return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "relu", [], "")
        return torch.relu(F.linear(x, weight, bias))

    def prob_sum(self, x: torch.Tensor) -> torch.Tensor:
        shared = max_pool_2x2(self._conv_relu(x.contiguous(), self.weight1, self.bias1))
        total, start = None, 0
        for width, (weight2, bias2, linears) in zip(self.widths, self.rest):
            own = shared[:, start : start + width].contiguous()
            start += width
            h = max_pool_2x2(self._conv_relu(own, weight2, bias2)).flatten(1)
            for weight, bias in linears[:-1]:
                h = self._linear_relu(h, weight, bias)
            probs = torch.softmax(F.linear(h, *linears[-1]).float(), dim=1)
            total = probs if total is None else total + probs
        return total


class EnsembleServer:
    def __init__(self, members: list[nn.Module], archs: list[str], device: torch.device, fuse: str = "auto"):
        if not members or len(members) != len(archs):
            raise ValueError("EnsembleServer needs one architecture name per member")
        if fuse not in ("auto", "always", "never"):
            raise ValueError(f"fuse must be auto, always or never, got {fuse!r}")
        self.k = len(members)
        self.device = device
        for member in members:
            member.to(device).eval()
            for p in member.parameters():
                p.requires_grad_(False)
        self.members = members  # the trained models, as loaded (serving uses copies)
        self.groups: list = []
        if fuse != "never" and stackable_lenets(members):
            self.groups.append(StackedLeNets(members))
        else:
            do_fuse = fuse == "always" or (fuse == "auto" and device.type == "cuda")
            by_arch: dict[str, list[nn.Module]] = {}
            for member, arch in zip(members, archs):
                by_arch.setdefault(arch, []).append(member)
            for group in by_arch.values():
                if do_fuse and len(group) > 1:
                    self.groups.append(_Fused(group))
                else:
                    self.groups.extend(_Single(m) for m in group)
        self.fused = any(isinstance(g, (_Fused, StackedLeNets)) for g in self.groups)
        self.streams = (
            [torch.cuda.Stream(device) for _ in self.groups] if device.type == "cuda" and len(self.groups) > 1 else None
        )

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.streams is None:
            total = self.groups[0].prob_sum(x)
            for group in self.groups[1:]:
                total = total + group.prob_sum(x)
            return total / self.k
        current = torch.cuda.current_stream(self.device)
        parts = []
        for group, stream in zip(self.groups, self.streams):
            stream.wait_stream(current)
            with torch.cuda.stream(stream):
                parts.append(group.prob_sum(x))
            x.record_stream(stream)
        for part, stream in zip(parts, self.streams):
            current.wait_stream(stream)
            part.record_stream(current)
        total = parts[0]
        for part in parts[1:]:
            total = total + part
        return total / self.k
