"""Caching an attack's defender-independent stage (private helper, never auto-registered).

Some attacks spend most of their time on work that never touches the API: DFMS trains a GAN
on its proxy images before its first query. That stage is a deterministic function of the
proxy, the stage's parameters, the match seed and the device, so a tournament that plays the
same attack against many defences repeats it identically for every defence. `cached_stage`
runs it once per key and afterwards restores its whole end state: the networks' weights and
buffers, the optimizers' states and the random streams it consumed. The attack then continues
exactly as if it had run the stage itself (bit-identical: tests/test_attack_suite.py checks
queries and clones against an uncached run).

The cache is the match's artifact store (`AttackContext.artifacts`); without one (direct use
in tests or scripts) the stage simply runs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import torch
from torch import nn

from engines.attackers.base import AttackContext


def tensor_digest(tensor: torch.Tensor) -> str:
    """SHA-256 of a tensor's dtype, shape and bytes (identifies input data in a cache key)."""
    data = tensor.detach().cpu().contiguous()
    digest = hashlib.sha256(f"{data.dtype}{tuple(data.shape)}".encode())
    digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


def _snapshot(
    modules: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    streams: dict[str, torch.Generator],
) -> tuple[dict[str, torch.Tensor], dict]:
    tensors: dict[str, torch.Tensor] = {}
    numbers: dict[str, float] = {}
    for name, module in modules.items():
        tensors.update({f"module/{name}/{key}": value for key, value in module.state_dict().items()})
    for name, optimizer in optimizers.items():
        for index, state in optimizer.state_dict()["state"].items():
            for key, value in state.items():
                slot = f"optimizer/{name}/{index}/{key}"
                if isinstance(value, torch.Tensor):
                    tensors[slot] = value
                else:
                    numbers[slot] = value
    tensors.update({f"stream/{name}": stream.get_state() for name, stream in streams.items()})
    return tensors, {"numbers": numbers}


def _restore(
    tensors: dict[str, torch.Tensor],
    meta: dict,
    modules: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    streams: dict[str, torch.Generator],
) -> None:
    for name, module in modules.items():
        prefix = f"module/{name}/"
        module.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
    saved = {**{k: v for k, v in tensors.items() if k.startswith("optimizer/")}, **meta.get("numbers", {})}
    for name, optimizer in optimizers.items():
        state: dict[int, dict] = {}
        prefix = f"optimizer/{name}/"
        for slot, value in saved.items():
            if slot.startswith(prefix):
                index, key = slot[len(prefix) :].split("/", 1)
                state.setdefault(int(index), {})[key] = value
        optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})
    for name, stream in streams.items():
        stream.set_state(tensors[f"stream/{name}"])


def cached_stage(
    ctx: AttackContext,
    kind: str,
    key: dict,
    run: Callable[[], None],
    modules: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    streams: dict[str, torch.Generator],
) -> bool:
    """Run `run()` (which changes only `modules`, `optimizers` and `streams`), or restore their
    state after it from the cache entry for `key`. `key` must hold everything that determines
    the stage's outcome; the seed, the device and the torch version are added here.
    Returns whether the stage came from the cache."""
    if ctx.artifacts is None:
        run()
        return False

    def build() -> tuple[dict[str, torch.Tensor], dict]:
        run()
        return _snapshot(modules, optimizers, streams)

    spec = {**key, "seed": ctx.seed, "device": ctx.device.type, "torch": torch.__version__}
    tensors, meta, reused = ctx.artifacts.get_or_build(kind, spec, build)
    if reused:
        _restore(tensors, meta, modules, optimizers, streams)
        ctx.log(f"{kind}: restored from the artifact cache")
    return reused
