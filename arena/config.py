"""Match specs from CLI options and TOML files, including grids.

A TOML file holds MatchSpec fields at top level, plus optionally:
- `[grid]`: field -> list of values; the cartesian product is played;
- `[[matches]]`: a list of tables, each overriding the top-level fields for one match.
CLI options override the file. On the command line a comma-separated value (`--seed 0,1,2`)
is a grid axis.
"""

from __future__ import annotations

import itertools
import tomllib
from pathlib import Path

from pydantic import ValidationError

from engines.errors import ArenaError
from engines.spec import MatchSpec

# What `arena run` plays with no options: every defender of the lineup against each attack.
DEFAULT_DEFENDERS = ["undefended", "misleader"]
DEFAULT_ATTACKS = [
    {"attacker": "knockoff", "label_mode": "soft"},
    {"attacker": "knockoff", "label_mode": "hard"},
    {"attacker": "dfme", "label_mode": "soft"},
]
GRID_AXES = ("defender", "attacker", "dataset", "pool", "label_mode", "seed", "query_budget")
_INT_AXES = {"seed", "query_budget"}


def parse_axis(name: str, raw: str | None) -> list | None:
    """'a,b' -> ['a', 'b'] (ints for numeric axes); None stays None."""
    if raw is None:
        return None
    values = [part.strip() for part in str(raw).split(",") if part.strip()]
    if not values:
        raise ArenaError(f"--{name.replace('_', '-')} needs a value", field=name)
    if name in _INT_AXES:
        try:
            return [int(v) for v in values]
        except ValueError:
            raise ArenaError(f"--{name.replace('_', '-')} takes whole numbers, got {raw!r}", field=name) from None
    return values


def load_toml(path: str) -> dict:
    file = Path(path)
    if not file.is_file():
        raise ArenaError(f"config file {path!r} not found; pass an existing --config FILE.toml", field="config")
    try:
        return tomllib.loads(file.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ArenaError(f"malformed TOML in {path}: {exc}; fix the file", field="config") from None
    except UnicodeDecodeError:
        raise ArenaError(f"{path} is not a text TOML file", field="config") from None


def _validated(fields: dict) -> MatchSpec:
    try:
        spec = MatchSpec.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "config"
        if first["type"] == "extra_forbidden":
            raise ArenaError(
                f"unknown key {where!r} in match config; see `arena run --help` for the fields", field="config"
            ) from None
        raise ArenaError(f"bad value for {where!r}: {first['msg']}", field=where) from None
    return spec.resolve()


def build_specs(file_fields: dict | None, cli_axes: dict[str, list | None], cli_fields: dict) -> list[MatchSpec]:
    """Combine a TOML config, CLI grid axes and CLI scalar fields into resolved specs."""
    base = dict(file_fields or {})
    grid = base.pop("grid", {}) or {}
    matches = base.pop("matches", None)
    if not isinstance(grid, dict):
        raise ArenaError("[grid] must be a table of field = [values]", field="config")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ArenaError(f"[grid] {key} must be a non-empty list", field="config")
    base.update({k: v for k, v in cli_fields.items() if v is not None})
    axes = {k: v for k, v in grid.items()}
    axes.update({k: v for k, v in cli_axes.items() if v is not None})
    for key in list(axes):
        if len(axes[key]) == 1:
            base[key] = axes.pop(key)[0]

    if matches is None and file_fields is None and not {"defender", "attacker", "label_mode"} & (set(axes) | set(base)):
        # The default lineup: defenders x the three reference attacks.
        matches = [{"defender": d, **attack} for d in DEFAULT_DEFENDERS for attack in DEFAULT_ATTACKS]
    entries = matches if matches is not None else [{}]
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ArenaError("[[matches]] must be a list of tables", field="config")

    specs: list[MatchSpec] = []
    names = list(axes)
    for entry in entries:
        for combo in itertools.product(*(axes[n] for n in names)) if names else [()]:
            fields = {**base, **entry, **dict(zip(names, combo))}
            specs.append(_validated(fields))
    return specs
