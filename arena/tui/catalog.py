"""What the registries offer (defenders, attackers, data sets, devices), for the new-match form.

The engine registries import torch, which must never load in the UI process. So the UI runs
`python -m arena.tui.catalog` once, reads its JSON from stdout, and caches it in the artifact
cache keyed by a fingerprint of the engine sources (a new plug-in file invalidates it).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from engines.errors import ArenaError

IN_DISTRIBUTION = "in-distribution"  # mirrors engines.data.loading.IN_DISTRIBUTION (that module imports torch)
ENGINES_DIR = Path(__file__).resolve().parents[2] / "engines"
CACHE_NAME = "tui-catalog.json"


@dataclass(frozen=True)
class AttackerInfo:
    name: str
    description: str
    family: str
    label_modes: tuple[str, ...]
    default_budget: int


@dataclass(frozen=True)
class Catalog:
    defenders: dict[str, str]  # name -> description
    attackers: dict[str, AttackerInfo]
    datasets: dict[str, str]  # name -> description
    devices: tuple[str, ...]  # auto, cpu, then the visible GPUs
    defaults: dict = field(default_factory=dict)  # MatchSpec defaults (defender, attacker, ...)

    @classmethod
    def from_dict(cls, data: dict) -> Catalog:
        return cls(
            defenders=dict(data["defenders"]),
            attackers={
                a["name"]: AttackerInfo(
                    a["name"], a["description"], a["family"], tuple(a["label_modes"]), int(a["default_budget"])
                )
                for a in data["attackers"]
            },
            datasets=dict(data["datasets"]),
            devices=tuple(data["devices"]),
            defaults=dict(data.get("defaults", {})),
        )

    def pools(self) -> list[str]:
        return [IN_DISTRIBUTION, *self.datasets]


def collect() -> dict:
    """Read the registries (imports torch: call only in a child process or in tests)."""
    import torch

    from engines.attackers import ATTACKERS
    from engines.data import DATASETS
    from engines.defenders import DEFENDERS
    from engines.spec import MatchSpec

    spec = MatchSpec()
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    devices = ["auto", "cpu"] + (["cuda"] + [f"cuda:{i}" for i in range(gpus)] if gpus else [])
    return {
        "defenders": {name: cls.description for name, cls in DEFENDERS.items()},
        "attackers": [
            {
                "name": name,
                "description": cls.description,
                "family": cls.family,
                "label_modes": sorted(cls.label_modes),
                "default_budget": cls.default_budget,
            }
            for name, cls in ATTACKERS.items()
        ],
        "datasets": {name: cls.description for name, cls in DATASETS.items()},
        "devices": devices,
        "defaults": {
            "defender": spec.defender,
            "attacker": spec.attacker,
            "dataset": spec.dataset,
            "pool": spec.pool,
            "label_mode": spec.label_mode,
            "seed": spec.seed,
            "device": spec.device,
        },
    }


def fingerprint() -> str:
    """Changes whenever a file of the engine package changes (new plug-in, edited description)."""
    digest = hashlib.sha256()
    for path in sorted(ENGINES_DIR.rglob("*.py")):
        stat = path.stat()
        digest.update(f"{path.relative_to(ENGINES_DIR)}:{stat.st_mtime_ns}:{stat.st_size};".encode())
    return digest.hexdigest()[:16]


def load(cache_dir: str | None, timeout: float = 300.0) -> Catalog:
    """The catalog from the cache file, else from a child process (then cached)."""
    key = fingerprint()
    cache_file = Path(cache_dir) / CACHE_NAME if cache_dir else None
    if cache_file is not None and cache_file.is_file():
        try:
            cached = json.loads(cache_file.read_text())
            if cached.get("fingerprint") == key:
                return Catalog.from_dict(cached["catalog"])
        except (OSError, ValueError, KeyError):
            pass  # unreadable cache: ask the registries again
    try:
        done = subprocess.run(
            [sys.executable, "-m", "arena.tui.catalog"],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise ArenaError(f"reading the registries took over {timeout:.0f} s; is the machine overloaded?") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ArenaError(f"could not read the registries ({last}); run `arena list` to see the error")
    data = json.loads(done.stdout)
    if cache_file is not None:
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_name(f"{CACHE_NAME}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"fingerprint": key, "catalog": data}))
            tmp.replace(cache_file)
        except OSError:
            pass  # a read-only cache only costs a child process next time
    return Catalog.from_dict(data)


if __name__ == "__main__":
    json.dump(collect(), sys.stdout)
