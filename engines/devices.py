"""Device selection: `auto`, `cpu`, `cuda` or `cuda:N`."""

from __future__ import annotations

import re

import torch

from engines.errors import ArenaError

_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def validate_device_name(name: str) -> str:
    if not _DEVICE_RE.match(name):
        raise ArenaError(f"unknown device {name!r}; use --device auto, cpu, cuda or cuda:N", field="device")
    return name


def resolve_device(name: str) -> torch.device:
    """Turn a user's device name into a torch.device, checking that it exists."""
    validate_device_name(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ArenaError(f"device {name!r} asked for, but no CUDA GPU is visible; use --device cpu", field="device")
    device = torch.device(name)
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ArenaError(
            f"device {name!r} does not exist ({torch.cuda.device_count()} GPU(s) visible); choose a smaller index",
            field="device",
        )
    return device


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work so that wall-clock timings are honest."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
