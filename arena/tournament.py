"""Tournaments: defenders x attackers x label modes x data sets x seeds, from one TOML spec.

A tournament expands into resolved `MatchSpec`s. Each match has an identity, the hash of
its resolved spec, so rerunning a tournament skips what is already done (or queued, or
running elsewhere) and replays only what is missing, failed or cancelled. Matches are
ordered victim by victim and defender by defender, so each defender is prepared (trained,
or loaded from the artifact cache) once per (victim, seed) and reused by every attack.

    name = "output defences"
    datasets = ["mnist5k"]
    seeds = [0, 1, 2]
    label_modes = ["soft", "hard"]          # for attackers that do not name their own
    defenders = ["undefended", { name = "randp", params = { eps = 0.5 } }]
    attackers = ["knockoff", { name = "dfme", budget = 40000, label_modes = ["soft"] }]

    [match]                                 # any other MatchSpec field, shared by all
    checkpoints = 6
    [match.victim.train]
    epochs = 10
"""

from __future__ import annotations

import json
import tomllib
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from engines.errors import ArenaError
from engines.spec import MatchSpec

LabelMode = Literal["soft", "hard", "topk"]
# Fields a tournament sets per match; [match] may not set them (it would silently win or lose).
_AXIS_FIELDS = {
    "defender",
    "defender_params",
    "attacker",
    "attacker_params",
    "dataset",
    "seed",
    "label_mode",
    "query_budget",
}


class DefenderEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    params: dict = Field(default_factory=dict)


class AttackerEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    params: dict = Field(default_factory=dict)
    label_modes: list[LabelMode] | None = None
    budget: int | None = Field(None, gt=0)


def _no_duplicates(values: list, what: str) -> list:
    repeated = [v for v, n in Counter(map(repr, values)).items() if n > 1]
    if repeated:
        raise ValueError(f"{what} lists {repeated[0]} more than once")
    return values


class TournamentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "tournament"
    datasets: list[str] = Field(default_factory=lambda: ["mnist5k"], min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    label_modes: list[LabelMode] = Field(default_factory=lambda: ["soft"], min_length=1)
    defenders: list[str | DefenderEntry] = Field(min_length=1)
    attackers: list[str | AttackerEntry] = Field(min_length=1)
    match: dict = Field(default_factory=dict)

    @field_validator("defenders")
    @classmethod
    def _defenders(cls, values):
        entries = [v if isinstance(v, DefenderEntry) else DefenderEntry(name=v) for v in values]
        return _no_duplicates(entries, "defenders")

    @field_validator("attackers")
    @classmethod
    def _attackers(cls, values):
        entries = [v if isinstance(v, AttackerEntry) else AttackerEntry(name=v) for v in values]
        return _no_duplicates(entries, "attackers")

    @field_validator("datasets", "seeds", "label_modes")
    @classmethod
    def _unique(cls, values, info):
        if info.field_name == "seeds" and any(s < 0 for s in values):
            raise ValueError("seeds must be >= 0")
        return _no_duplicates(values, info.field_name)

    @field_validator("match")
    @classmethod
    def _match(cls, value):
        clash = sorted(set(value) & _AXIS_FIELDS)
        if clash:
            raise ValueError(f"[match] cannot set {clash[0]!r}: the tournament's lists set it per match")
        return value

    def expand(self) -> list[MatchSpec]:
        """Every match, resolved, ordered so that a victim and a defender are prepared once."""
        from engines.attackers import ATTACKERS

        specs = []
        for dataset in self.datasets:
            for seed in self.seeds:
                for defender in self.defenders:
                    for attacker in self.attackers:
                        supported = ATTACKERS.get(attacker.name).label_modes
                        for mode in self._modes_for(attacker, supported):
                            specs.append(self._resolve(dataset, seed, defender, attacker, mode))
        return specs

    def _modes_for(self, attacker: AttackerEntry, supported) -> list[str]:
        if attacker.label_modes is not None:
            for mode in attacker.label_modes:
                if mode not in supported:
                    raise ArenaError(
                        f"attacker {attacker.name!r} does not support label mode {mode!r}; "
                        f"it takes {', '.join(sorted(supported))}",
                        field="attackers",
                    )
            return list(attacker.label_modes)
        modes = [m for m in self.label_modes if m in supported]
        if not modes:
            raise ArenaError(
                f"attacker {attacker.name!r} supports none of label_modes {self.label_modes}; "
                f"give it label_modes = [{', '.join(repr(m) for m in sorted(supported))}]",
                field="attackers",
            )
        return modes

    def _resolve(self, dataset, seed, defender: DefenderEntry, attacker: AttackerEntry, mode) -> MatchSpec:
        fields = {
            **self.match,
            "dataset": dataset,
            "seed": seed,
            "defender": defender.name,
            "defender_params": defender.params,
            "attacker": attacker.name,
            "attacker_params": attacker.params,
            "label_mode": mode,
            "query_budget": attacker.budget,
        }
        try:
            spec = MatchSpec.model_validate(fields)
        except ValidationError as exc:
            raise _one_line(exc, "match") from None
        return spec.resolve()


def _one_line(exc: ValidationError, owner: str) -> ArenaError:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or owner
    if first["type"] == "extra_forbidden":
        return ArenaError(f"unknown key {where!r} in the tournament spec; see `arena tournament --help`", field=where)
    return ArenaError(f"bad value for {where!r} in the tournament spec: {first['msg']}", field=where)


def load_tournament(path: str) -> TournamentSpec:
    file = Path(path)
    if not file.is_file():
        raise ArenaError(f"tournament spec {path!r} not found; pass an existing SPEC.toml", field="spec")
    try:
        raw = tomllib.loads(file.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ArenaError(f"malformed TOML in {path}: {exc}; fix the file", field="spec") from None
    except UnicodeDecodeError:
        raise ArenaError(f"{path} is not a text TOML file", field="spec") from None
    try:
        return TournamentSpec.model_validate(raw)
    except ValidationError as exc:
        raise _one_line(exc, "spec") from None


@dataclass
class TournamentPlan:
    """What a (re)run of a tournament will do, decided before anything is written."""

    specs: list[MatchSpec]
    identities: list[str]
    done: dict[int, int] = field(default_factory=dict)  # spec index -> match id already done
    queued: dict[int, int] = field(default_factory=dict)  # spec index -> match id waiting (resumed)
    running: dict[int, int] = field(default_factory=dict)  # spec index -> match id played elsewhere
    to_enqueue: list[int] = field(default_factory=list)  # spec indices that need a new row
    victims: int = 0  # distinct victims the tournament needs
    victims_cached: int = 0
    defender_preparations: int = 0  # distinct (defender, params, victim) preparations
    estimate_seconds: float | None = None
    estimate_missing: int = 0  # matches to play with no past row to estimate from

    def summary(self) -> dict:
        return {
            "matches": len(self.specs),
            "done": len(self.done),
            "queued": len(self.queued),
            "running_elsewhere": len(self.running),
            "to_enqueue": len(self.to_enqueue),
            "victims": self.victims,
            "victims_cached": self.victims_cached,
            "defender_preparations": self.defender_preparations,
            "estimated_seconds": self.estimate_seconds,
            "matches_without_estimate": self.estimate_missing,
        }


def plan_tournament(engine, spec: TournamentSpec, env) -> TournamentPlan:
    """Expand, validate everything a match can be checked for, and compare with the database
    (`engine` None: no database yet, nothing played)."""
    from arena.runner import validate_batch
    from engines.artifacts import artifact_key
    from engines.data import load_dataset
    from engines.match import victim_key
    from storage import history

    specs = spec.expand()
    validate_batch(specs, env)
    identities = [s.identity() for s in specs]
    existing = history.matches_by_identity(engine, specs) if engine is not None else {}
    plan = TournamentPlan(specs=specs, identities=identities)
    for index, identity in enumerate(identities):
        rows = existing.get(identity, [])
        by_status = {m.status: m.id for m in sorted(rows, key=lambda m: -m.id)}  # oldest of each wins
        if "done" in by_status:
            plan.done[index] = by_status["done"]
        elif "running" in by_status:
            plan.running[index] = by_status["running"]
        elif "queued" in by_status:
            plan.queued[index] = by_status["queued"]
        else:  # never played, or only failed/cancelled attempts: play it (again)
            plan.to_enqueue.append(index)

    victims, preparations = set(), set()
    splits_by_dataset = {}
    for s in specs:
        if s.dataset not in splits_by_dataset:
            splits_by_dataset[s.dataset] = load_dataset(s.dataset, env.data_root, env.cache_root, env.download)
        key = artifact_key("victim", victim_key(s, splits_by_dataset[s.dataset]))
        victims.add(key)
        preparations.add((s.defender, json.dumps(s.defender_params, sort_keys=True), key))
    plan.victims = len(victims)
    plan.victims_cached = sum(1 for key in victims if (Path(env.cache_root) / "victim" / f"{key}.safetensors").exists())
    plan.defender_preparations = len(preparations)

    pending = [specs[i] for i in plan.to_enqueue] + [specs[i] for i in plan.queued]
    estimates = history.wall_time_estimates(engine) if engine is not None else {}
    total, missing = 0.0, 0
    for s in pending:
        seconds = _estimate(estimates, s)
        if seconds is None:
            missing += 1
        else:
            total += seconds
    plan.estimate_seconds = total if pending and missing < len(pending) else (0.0 if not pending else None)
    plan.estimate_missing = missing
    return plan


def _estimate(estimates: dict, s: MatchSpec) -> float | None:
    for key in (
        (s.defender, s.attacker, s.label_mode, s.dataset, s.query_budget),
        (None, s.attacker, s.label_mode, s.dataset, s.query_budget),
        (None, s.attacker, None, s.dataset, None),
    ):
        if key in estimates:
            return estimates[key]
    return None


def enqueue_plan(engine, plan: TournamentPlan) -> list[tuple[int, MatchSpec]]:
    """Write the missing matches as queued rows; returns (id, spec) to play, new and resumed."""
    from arena.provenance import provenance
    from storage import queries

    to_play = [(match_id, plan.specs[index]) for index, match_id in plan.queued.items()]
    if plan.to_enqueue:
        specs = [plan.specs[i] for i in plan.to_enqueue]
        new_ids = queries.create_matches(engine, f"t-{uuid.uuid4().hex[:10]}", specs, provenance("unresolved"))
        to_play.extend(zip(new_ids, specs))
    return sorted(to_play, key=lambda pair: pair[0])
