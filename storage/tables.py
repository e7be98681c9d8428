"""The leaderboard schema. Any change here comes with a new Alembic revision in
storage/migrations/versions/ (tests/test_migrations.py checks that they agree)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlmodel import Field, SQLModel

MATCH_STATUSES = ("queued", "running", "done", "failed", "cancelled")


def utcnow() -> datetime:
    return datetime.now(UTC)


class SchemaInfo(SQLModel, table=True):  # kept: databases from before Alembic carry their version here
    __tablename__ = "schema_info"
    id: int = Field(default=1, primary_key=True)
    version: int


class Match(SQLModel, table=True):
    __tablename__ = "matches"
    id: int | None = Field(default=None, primary_key=True)
    batch_id: str = Field(index=True)  # one `arena run` call (a single match or a grid)
    status: str = Field(default="queued", index=True)
    defender: str = Field(index=True)
    attacker: str = Field(index=True)
    dataset: str = Field(index=True)
    pool: str
    label_mode: str = Field(index=True)
    query_budget: int
    seed: int
    device: str
    config_json: str  # the full resolved MatchSpec
    provenance_json: str = "{}"  # versions, device name, git commit, host
    details_json: str = "{}"  # split sizes, victim and defender training facts
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    phase: str = "queued"
    progress_done: int = 0
    progress_total: int = 0
    victim_accuracy: float | None = None
    defender_accuracy: float | None = None
    clone_accuracy: float | None = None
    best_clone_accuracy: float | None = None
    fidelity_served: float | None = None
    fidelity_victim: float | None = None
    queries_used: int = 0
    serving_seconds_per_query: float | None = None
    queries_per_second: float | None = None
    wall_seconds: float | None = None
    error: str | None = None
    cancel_requested: bool = False
    pid: int | None = None
    host: str | None = None
    # Liveness (storage.liveness): the worker's heartbeat, and how often a lost match may be re-queued.
    heartbeat_at: datetime | None = None
    retries: int = 1  # re-queues allowed after a lost worker (`arena run --retries`)
    attempts: int = 0  # times a worker has started this match


class Checkpoint(SQLModel, table=True):
    __tablename__ = "checkpoints"
    id: int | None = Field(default=None, primary_key=True)
    match_id: int = Field(foreign_key="matches.id", index=True, ondelete="CASCADE")
    index: int
    queries_used: int
    clone_accuracy: float
    best_clone_accuracy: float
    fidelity_served: float
    fidelity_victim: float
    wall_seconds: float
    serving_seconds: float
    created_at: datetime = Field(default_factory=utcnow)


class MatchEvent(SQLModel, table=True):
    __tablename__ = "match_events"
    id: int | None = Field(default=None, primary_key=True)
    match_id: int = Field(foreign_key="matches.id", index=True, ondelete="CASCADE")
    created_at: datetime = Field(default_factory=utcnow)
    kind: str  # phase | log | error
    message: str
