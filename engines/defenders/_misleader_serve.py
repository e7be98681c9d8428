"""Serving an ensemble: D(x) = (1/K) * sum_k softmax(d_k(x)) for a whole batch at once.

Members are grouped by architecture. A group of equal-architecture members can be fused with
torch.func (stacked weights, `vmap` over `functional_call`), so K equal members cost one call;
a group of one member is called directly. On CUDA, groups run on separate streams. Every
member sees the whole batch (no per-image loop), and nothing depends on how queries are
batched: each image's answer is a function of that image alone (members are in eval mode).

Fusion is chosen by a fixed rule, never by timing at run time (that would make served numbers
depend on machine load): `auto` fuses on CUDA and leaves members unfused on CPU, where
`benchmarks/misleader.py` measured the fused call to be slower for LeNet-size members.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class _Single:
    def __init__(self, model: nn.Module):
        self.model = model

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


class EnsembleServer:
    def __init__(self, members: list[nn.Module], archs: list[str], device: torch.device, fuse: str = "auto"):
        if not members or len(members) != len(archs):
            raise ValueError("EnsembleServer needs one architecture name per member")
        if fuse not in ("auto", "always", "never"):
            raise ValueError(f"fuse must be auto, always or never, got {fuse!r}")
        self.k = len(members)
        self.device = device
        do_fuse = fuse == "always" or (fuse == "auto" and device.type == "cuda")
        for member in members:
            member.to(device).eval()
            for p in member.parameters():
                p.requires_grad_(False)
        by_arch: dict[str, list[nn.Module]] = {}
        for member, arch in zip(members, archs):
            by_arch.setdefault(arch, []).append(member)
        self.groups: list = []
        for group in by_arch.values():
            if do_fuse and len(group) > 1:
                self.groups.append(_Fused(group))
            else:
                self.groups.extend(_Single(m) for m in group)
        self.fused = any(isinstance(g, _Fused) for g in self.groups)
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
