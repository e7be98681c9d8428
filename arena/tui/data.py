"""The UI's window on the database: short read transactions that return plain objects.

Workers write with BEGIN IMMEDIATE in WAL mode; the UI reads with plain BEGIN, so a
training match never blocks the screen. The only writes are a cancellation request and the
reaper's verdict on lost matches.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime

from sqlalchemy import text
from sqlmodel import Session, select

from storage import Match, liveness, open_database, queries, resolve_db_url
from storage.queries import LeaderboardFilter

ACTIVE = ("queued", "running")
FINAL = ("done", "failed", "cancelled")
STATUSES = ("queued", "running", "done", "failed", "cancelled")


@dataclass(frozen=True)
class MatchInfo:
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
    config: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    details: dict = field(default_factory=dict)

    @classmethod
    def of(cls, row) -> MatchInfo:
        plain = {f.name: getattr(row, f.name) for f in fields(cls) if f.name not in ("config", "provenance", "details")}
        return cls(
            **plain,
            config=_json(row.config_json),
            provenance=_json(row.provenance_json),
            details=_json(row.details_json),
        )

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
class Point:
    index: int
    queries_used: int
    clone_accuracy: float
    best_clone_accuracy: float
    fidelity_served: float
    fidelity_victim: float
    wall_seconds: float
    created_at: datetime | None = None


@dataclass(frozen=True)
class Event:
    id: int
    created_at: datetime | None
    kind: str
    message: str


@dataclass(frozen=True)
class BoardRow:
    """One leaderboard line. `rank` is set for finished matches only (rank 1 = best defence)."""

    rank: int | None
    id: int
    status: str
    defender: str
    attacker: str
    label_mode: str
    dataset: str
    query_budget: int
    seed: int
    defender_accuracy: float | None
    clone_accuracy: float | None
    fidelity_served: float | None
    queries_used: int


@dataclass(frozen=True)
class BoardFilter:
    dataset: str | None = None
    attacker: str | None = None
    label_mode: str | None = None
    status: str | None = None  # None: every status


@dataclass(frozen=True)
class LiveSnapshot:
    match: MatchInfo
    points: list[Point]  # new since the caller's last index
    events: list[Event]  # new since the caller's last id


def _json(text: str | None) -> dict:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def as_utc(moment: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; the arena stores UTC."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


class ArenaStore:
    """Reads for the screens (any thread), plus the cancellation request."""

    def __init__(self, db: str | None):
        self.url = resolve_db_url(db)
        # Create the file and schema if needed (no torch involved), then read with plain BEGIN.
        self._writer = open_database(self.url, write=True, create=True)
        self._reader = open_database(self.url, write=False, create=False)
        self._last_reap = float("-inf")
        self.reap()

    def reap(self) -> None:
        """Re-queue or fail matches whose worker went silent; at most once per heartbeat interval."""
        now = time.monotonic()
        if now - self._last_reap >= liveness.heartbeat_interval():
            self._last_reap = now
            liveness.reap_lost_matches(self._writer)

    def close(self) -> None:
        self._reader.dispose()
        self._writer.dispose()

    def board(self, filters: BoardFilter = BoardFilter()) -> list[BoardRow]:
        """Active matches first (newest first), then ranked finished ones, then failed/cancelled."""
        wanted = filters.status
        rows: list[BoardRow] = []
        names = [f.name for f in fields(BoardRow)]
        others = []
        if wanted in (None, *ACTIVE, "failed", "cancelled"):
            for match in queries.list_matches(self._reader, limit=1000):
                if match.status == "done" or (wanted is not None and match.status != wanted):
                    continue
                if not self._keep(match, filters):
                    continue
                row = BoardRow(rank=None, **{n: getattr(match, n) for n in names if n != "rank"})
                (rows if match.status in ACTIVE else others).append(row)
        if wanted in (None, "done"):
            ranked = queries.leaderboard(
                self._reader,
                LeaderboardFilter(
                    dataset=filters.dataset, attacker=filters.attacker, label_mode=filters.label_mode, status="done"
                ),
            )
            rows.extend(BoardRow(**{n: r[n] for n in names}) for r in ranked)
        return rows + others

    @staticmethod
    def _keep(match, filters: BoardFilter) -> bool:
        return all(
            value is None or getattr(match, name) == value
            for name, value in (
                ("dataset", filters.dataset),
                ("attacker", filters.attacker),
                ("label_mode", filters.label_mode),
            )
        )

    def board_token(self) -> tuple:
        """A one-row summary that changes whenever a leaderboard row would: polled every second,
        so the full leaderboard is only read again when something changed."""
        self.reap()
        statuses = " ".join(STATUSES)
        query = text(
            "select count(*), coalesce(max(id), 0), coalesce(sum(queries_used), 0), "
            f"coalesce(sum(instr('{statuses}', status) * id), 0), coalesce(sum(clone_accuracy), 0), "
            "coalesce(sum(fidelity_served), 0), coalesce(sum(defender_accuracy), 0) from matches"
        )
        with self._reader.connect() as conn:
            return tuple(conn.execute(query).one())

    def choices(self) -> dict[str, list[str]]:
        """Distinct data sets, attackers and label modes present, for the filter menus."""
        out = {}
        with Session(self._reader) as session:
            for name in ("dataset", "attacker", "label_mode"):
                column = getattr(Match, name)
                out[name] = sorted(session.exec(select(column).distinct()).all())
        return out

    def match(self, match_id: int) -> MatchInfo | None:
        row = queries.get_match(self._reader, match_id)
        return None if row is None else MatchInfo.of(row)

    def points(self, match_id: int, after_index: int = -1) -> list[Point]:
        return [
            Point(
                p.index,
                p.queries_used,
                p.clone_accuracy,
                p.best_clone_accuracy,
                p.fidelity_served,
                p.fidelity_victim,
                p.wall_seconds,
                as_utc(p.created_at),
            )
            for p in queries.checkpoints(self._reader, match_id)
            if p.index > after_index
        ]

    def events(self, match_id: int, after_id: int = 0) -> list[Event]:
        return [
            Event(e.id, as_utc(e.created_at), e.kind, e.message)
            for e in queries.events(self._reader, match_id, after_id)
        ]

    def snapshot(self, match_id: int, after_index: int = -1, after_event: int = 0) -> LiveSnapshot | None:
        match = self.match(match_id)
        if match is None:
            return None
        return LiveSnapshot(match, self.points(match_id, after_index), self.events(match_id, after_event))

    def recent(self, limit: int = 200, exclude: int | None = None) -> list[MatchInfo]:
        """Matches worth comparing against (newest first), for the compare picker."""
        return [MatchInfo.of(m) for m in queries.list_matches(self._reader, limit=limit) if m.id != exclude]

    def request_cancel(self, match_id: int) -> bool:
        return queries.request_cancel(self._writer, match_id)
