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


_OPTION_NAMES = {"label_mode": "--label", "query_budget": "--budget"}


def option_name(axis: str) -> str:
    return _OPTION_NAMES.get(axis, f"--{axis.replace('_', '-')}")


def parse_axis(name: str, raw: str | None) -> list | None:
    """'a,b' -> ['a', 'b'] (ints for numeric axes); None stays None.

    Strict: an empty item ('1,,2', '1,'), a repeated value or a malformed number is an error
    naming the option, never silently dropped or merged."""
    if raw is None:
        return None
    option = option_name(name)
    parts = [part.strip() for part in str(raw).split(",")]
    if not any(parts):
        raise ArenaError(f"{option} needs a value", field=name)
    if not all(parts):
        raise ArenaError(f"{option} has an empty item in {raw!r}; separate values with single commas", field=name)
    values: list = parts
    if name in _INT_AXES:
        if not all(part.isdecimal() or (part[0] in "+-" and part[1:].isdecimal()) for part in parts):
            raise ArenaError(f"{option} takes whole numbers, got {raw!r}", field=name)
        values = [int(part) for part in parts]
    _refuse_duplicates(option, values, field=name)
    return values


def _refuse_duplicates(where: str, values: list, field: str = "config") -> None:
    seen: list = []
    for value in values:
        if value in seen:
            raise ArenaError(f"{where} lists {value!r} twice; each grid value once", field=field)
        seen.append(value)


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
        _refuse_duplicates(f"[grid] {key}", values)
        if key in base:  # a top-level value the grid would silently replace
            raise ArenaError(f"{key!r} is set both at top level and in [grid]; keep one", field="config")
    if matches is not None and isinstance(matches, list):
        for entry in matches:
            clash = sorted(set(entry) & set(grid)) if isinstance(entry, dict) else []
            if clash:
                raise ArenaError(f"{clash[0]!r} is set both in [[matches]] and in [grid]; keep one", field="config")
    # The command line overrides the file: top level, [grid] and every [[matches]] entry alike.
    cli = {k: v for k, v in cli_fields.items() if v is not None}
    cli_grid = {k: v for k, v in cli_axes.items() if v is not None}
    for key in list(cli_grid):
        if len(cli_grid[key]) == 1:
            cli[key] = cli_grid.pop(key)[0]
    base.update(cli)
    axes = {k: v for k, v in grid.items() if k not in cli}
    axes.update(cli_grid)
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
            fields = {**base, **entry, **cli, **dict(zip(names, combo))}
            specs.append(_validated(fields))
    seen: dict[str, int] = {}
    for number, spec in enumerate(specs, 1):
        first = seen.setdefault(spec.model_dump_json(), number)
        if first != number:
            raise ArenaError(
                f"matches {first} and {number} of this batch are the same match; list each once", field="config"
            )
    return specs
