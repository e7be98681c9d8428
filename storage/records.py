"""Read models: what `storage.queries` hands to the CLI and the TUI (plain frozen objects,
safe outside a session, no torch). Each is built from its table row in one place here; the
engine's own records (engines/records.py) are what gets written.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime

from engines.records import CheckpointRow

ACTIVE = ("queued", "running")


def as_utc(moment: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; the arena stores UTC."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def _json(text: str | None) -> dict:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class MatchRecord:
    """One match: its spec, status, running numbers and (parsed) JSON columns."""

    id: int
    batch_id: str
    status: str
    phase: str
    defender: str
    attacker: str
    dataset: str
    pool: str
    label_mode: str
    query_budget: int
    seed: int
    device: str
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    progress_done: int
    progress_total: int
    victim_accuracy: float | None
    defender_accuracy: float | None
    clone_accuracy: float | None
    best_clone_accuracy: float | None
    fidelity_served: float | None
    fidelity_victim: float | None
    queries_used: int
    serving_seconds_per_query: float | None
    queries_per_second: float | None
    wall_seconds: float | None
    error: str | None
    cancel_requested: bool
    pid: int | None
    host: str | None
    heartbeat_at: datetime | None  # last sign of life of its worker (storage.liveness)
    retries: int  # re-queues allowed after a lost worker
    attempts: int  # times a worker has started it
    config: dict = field(default_factory=dict)  # the resolved MatchSpec
    provenance: dict = field(default_factory=dict)  # versions, device name, git commit, host
    details: dict = field(default_factory=dict)  # split sizes, victim and defender facts

    @classmethod
    def of(cls, row) -> MatchRecord:
        """From a `storage.tables.Match` row."""
        json_columns = {"config": row.config_json, "provenance": row.provenance_json, "details": row.details_json}
        plain = {f.name: getattr(row, f.name) for f in fields(cls) if f.name not in json_columns}
        for name in ("created_at", "started_at", "finished_at", "heartbeat_at"):
            plain[name] = as_utc(plain[name])
        return cls(**plain, **{name: _json(text) for name, text in json_columns.items()})

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    @property
    def title(self) -> str:
        return f"#{self.id} {self.defender} vs {self.attacker} ({self.label_mode}) on {self.dataset}"

    def queries_now(self) -> int:
        """Queries spent so far: live progress while attacking, else the last checkpoint's count."""
        if self.phase == "attacking" and self.progress_total == self.query_budget:
            return max(self.queries_used, self.progress_done)
        return self.queries_used


@dataclass(frozen=True)
class StoredCheckpoint(CheckpointRow):
    """A checkpoint row as stored: the engine's CheckpointRow, its position and time."""

    index: int = 0
    created_at: datetime | None = None

    @classmethod
    def of(cls, row) -> StoredCheckpoint:
        """From a `storage.tables.Checkpoint` row."""
        values = {f.name: getattr(row, f.name) for f in fields(CheckpointRow)}
        return cls(**values, index=row.index, created_at=as_utc(row.created_at))

    @property
    def row(self) -> CheckpointRow:
        """The engine's record, without the storage fields."""
        return CheckpointRow(**{f.name: getattr(self, f.name) for f in fields(CheckpointRow)})

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class EventRecord:
    """One line of a match's log (kind: phase, log or error)."""

    id: int
    created_at: datetime | None
    kind: str
    message: str

    @classmethod
    def of(cls, row) -> EventRecord:
        return cls(row.id, as_utc(row.created_at), row.kind, row.message)


@dataclass(frozen=True)
class BoardRow:
    """One leaderboard line. `rank` is set for finished matches only (rank 1 = best defence)."""

    rank: int | None
    id: int
    defender: str
    attacker: str
    label_mode: str
    dataset: str
    pool: str
    query_budget: int
    seed: int
    status: str
    victim_accuracy: float | None
    defender_accuracy: float | None
    clone_accuracy: float | None
    best_clone_accuracy: float | None
    fidelity_served: float | None
    fidelity_victim: float | None
    queries_used: int
    serving_seconds_per_query: float | None
    wall_seconds: float | None

    @classmethod
    def of(cls, match, rank: int | None) -> BoardRow:
        """From a `storage.tables.Match` row or a MatchRecord."""
        return cls(rank=rank, **{f.name: getattr(match, f.name) for f in fields(cls) if f.name != "rank"})

    def as_dict(self) -> dict:
        return asdict(self)


BOARD_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(BoardRow))
