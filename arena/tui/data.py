"""The UI's window on the database: short read transactions that return plain objects.

Workers write with BEGIN IMMEDIATE in WAL mode; the UI reads with plain BEGIN, so a
training match never blocks the screen. The only writes are a cancellation request and the
reaper's verdict on lost matches.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import text
from sqlmodel import Session, select

from storage import Match, liveness, open_database, queries, resolve_db_url
from storage import ranking as ranking_module
from storage import tradeoff as tradeoff_module
from storage.queries import LeaderboardFilter
from storage.ranking import DefenceRow
from storage.records import ACTIVE, BoardRow, EventRecord, MatchRecord, StoredCheckpoint
from storage.tables import MATCH_STATUSES as STATUSES

FINAL = ("done", "failed", "cancelled")


@dataclass(frozen=True)
class BoardFilter:
    dataset: str | None = None
    attacker: str | None = None
    label_mode: str | None = None
    status: str | None = None  # None: every status


@dataclass(frozen=True)
class LiveSnapshot:
    match: MatchRecord
    points: list[StoredCheckpoint]  # new since the caller's last index
    events: list[EventRecord]  # new since the caller's last id


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
        others = []
        if wanted in (None, *ACTIVE, "failed", "cancelled"):
            for match in queries.list_matches(self._reader, limit=1000):
                if match.status == "done" or (wanted is not None and match.status != wanted):
                    continue
                if not self._keep(match, filters):
                    continue
                row = BoardRow.of(match, rank=None)
                (rows if match.status in ACTIVE else others).append(row)
        if wanted in (None, "done"):
            ranked = queries.leaderboard(
                self._reader,
                LeaderboardFilter(
                    dataset=filters.dataset, attacker=filters.attacker, label_mode=filters.label_mode, status="done"
                ),
            )
            rows.extend(ranked)
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

    def defence_ranking(self, dataset: str | None = None) -> list[DefenceRow]:
        """`arena leaderboard --by defence`'s rows (storage/ranking.py)."""
        return ranking_module.defence_ranking(self._reader, dataset)

    def tradeoff(self, defender: str, attacker: str, label_mode: str, dataset: str, query_budget: int) -> list[dict]:
        """`arena tradeoff`'s points for one arena (storage/tradeoff.py), each with its `setting`
        name (the defender parameters that differ between the points)."""
        rows = tradeoff_module.tradeoff(
            self._reader, defender, attacker, label_mode=label_mode, dataset=dataset, query_budget=query_budget
        )
        return [{**row, "setting": name} for row, name in zip(rows, tradeoff_module.setting_names(rows))]

    def match(self, match_id: int) -> MatchRecord | None:
        return queries.get_match(self._reader, match_id)

    def points(self, match_id: int, after_index: int = -1) -> list[StoredCheckpoint]:
        return queries.checkpoints(self._reader, match_id, after_index)

    def events(self, match_id: int, after_id: int = 0) -> list[EventRecord]:
        return queries.events(self._reader, match_id, after_id)

    def snapshot(self, match_id: int, after_index: int = -1, after_event: int = 0) -> LiveSnapshot | None:
        match = self.match(match_id)
        if match is None:
            return None
        return LiveSnapshot(match, self.points(match_id, after_index), self.events(match_id, after_event))

    def recent(self, limit: int = 200, exclude: int | None = None) -> list[MatchRecord]:
        """Matches worth comparing against (newest first), for the compare picker."""
        return [m for m in queries.list_matches(self._reader, limit=limit) if m.id != exclude]

    def request_cancel(self, match_id: int) -> bool:
        return queries.request_cancel(self._writer, match_id)
