"""Reads and writes of the leaderboard. The one place where the engine's records
(engines/records.py) become table rows; reads return storage/records.py's read models
(plain objects, safe outside a session)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from engines.records import CheckpointRow, DefenderFacts, MatchSummary, VictimFacts
from storage.records import BOARD_COLUMNS, BoardRow, EventRecord, MatchRecord, StoredCheckpoint
from storage.tables import Checkpoint, Match, MatchEvent, utcnow

LEADERBOARD_TABLE_COLUMNS = (
    "rank",
    "id",
    "defender",
    "attacker",
    "label_mode",
    "dataset",
    "query_budget",
    "seed",
    "defender_accuracy",
    "clone_accuracy",
    "fidelity_served",
    "queries_used",
)
LEADERBOARD_COLUMNS = BOARD_COLUMNS


@dataclass
class LeaderboardFilter:
    dataset: str | None = None
    attacker: str | None = None
    defender: str | None = None
    label_mode: str | None = None
    status: str | None = "done"  # None: every status


def leaderboard(engine: Engine, filters: LeaderboardFilter | None = None) -> list[BoardRow]:
    """Matches ranked within each (data set, attacker, label mode, budget) arena.

    Rank 1 is the best defence: the lowest final clone accuracy (ties share a rank)."""
    filters = filters or LeaderboardFilter()
    rank = (
        func.rank()
        .over(
            partition_by=(Match.dataset, Match.attacker, Match.label_mode, Match.query_budget),
            order_by=Match.clone_accuracy.asc(),
        )
        .label("rank")
    )
    query = select(rank, Match)
    for column, value in (
        ("dataset", filters.dataset),
        ("attacker", filters.attacker),
        ("defender", filters.defender),
        ("label_mode", filters.label_mode),
        ("status", filters.status),
    ):
        if value is not None:
            query = query.where(getattr(Match, column) == value)
    query = query.order_by(Match.dataset, Match.attacker, Match.label_mode, Match.query_budget, "rank", Match.id)
    with Session(engine) as session:
        rows = session.exec(query).all()
    return [BoardRow.of(match, position) for position, match in rows]


def get_match(engine: Engine, match_id: int) -> MatchRecord | None:
    with Session(engine) as session:
        row = session.get(Match, match_id)
        return None if row is None else MatchRecord.of(row)


def statuses(engine: Engine, match_ids: list[int]) -> dict[int, str]:
    """id -> status for the given matches, in one query."""
    if not match_ids:
        return {}
    with Session(engine) as session:
        return dict(session.exec(select(Match.id, Match.status).where(Match.id.in_(match_ids))).all())


def list_matches(engine: Engine, limit: int = 200) -> list[MatchRecord]:
    with Session(engine) as session:
        return [MatchRecord.of(m) for m in session.exec(select(Match).order_by(Match.id.desc()).limit(limit)).all()]


def checkpoints(engine: Engine, match_id: int, after_index: int = -1) -> list[StoredCheckpoint]:
    with Session(engine) as session:
        query = (
            select(Checkpoint)
            .where(Checkpoint.match_id == match_id, Checkpoint.index > after_index)
            .order_by(Checkpoint.index)
        )
        return [StoredCheckpoint.of(c) for c in session.exec(query).all()]


def events(engine: Engine, match_id: int, after_id: int = 0) -> list[EventRecord]:
    with Session(engine) as session:
        query = (
            select(MatchEvent).where(MatchEvent.match_id == match_id, MatchEvent.id > after_id).order_by(MatchEvent.id)
        )
        return [EventRecord.of(e) for e in session.exec(query).all()]


def create_matches(engine: Engine, batch_id: str, specs: list, provenance: dict) -> list[int]:
    """Insert queued matches for resolved specs in one transaction; returns their ids."""
    with Session(engine, expire_on_commit=False) as session:
        rows = [
            Match(
                batch_id=batch_id,
                defender=s.defender,
                attacker=s.attacker,
                dataset=s.dataset,
                pool=s.pool,
                label_mode=s.label_mode,
                query_budget=s.query_budget,
                seed=s.seed,
                device=s.device,
                config_json=s.model_dump_json(),
                provenance_json=json.dumps(provenance),
            )
            for s in specs
        ]
        session.add_all(rows)
        session.commit()
        return [row.id for row in rows]


def request_cancel(engine: Engine, match_id: int) -> bool:
    """Ask a queued or running match to stop; True if it was still active."""
    with Session(engine) as session:
        match = session.get(Match, match_id)
        if match is None or match.status not in ("queued", "running"):
            return False
        match.cancel_requested = True
        if match.status == "queued":
            match.status, match.phase, match.finished_at = "cancelled", "cancelled", utcnow()
        session.add(match)
        session.commit()
        return True


def update_match(engine: Engine, match_id: int, **values) -> None:
    with Session(engine) as session:
        match = session.get(Match, match_id)
        for key, value in values.items():
            setattr(match, key, value)
        session.add(match)
        session.commit()


def add_event(engine: Engine, match_id: int, kind: str, message: str) -> None:
    with Session(engine) as session:
        session.add(MatchEvent(match_id=match_id, kind=kind, message=message))
        session.commit()


def add_checkpoint(engine: Engine, match_id: int, index: int, row: CheckpointRow) -> None:
    """One checkpoint and the match's running numbers, in one short transaction."""
    with Session(engine) as session:
        session.add(Checkpoint(match_id=match_id, index=index, **row.as_dict()))
        match = session.get(Match, match_id)
        for name, value in asdict(row.scores).items():
            setattr(match, name, value)
        match.queries_used = row.queries_used
        session.add(match)
        session.commit()


def record_defender_ready(engine: Engine, match_id: int, victim: VictimFacts, defender: DefenderFacts) -> None:
    update_match(engine, match_id, victim_accuracy=victim.test_accuracy, defender_accuracy=defender.clean_accuracy)


def finish_match(
    engine: Engine, match_id: int, summary: MatchSummary, wall_seconds: float, facts: dict | None = None
) -> None:
    """A played match: status done, its summary's numbers, and its facts as details
    (`facts`: what the registries say of its attacker and defender, for the defence ranking)."""
    details = {
        "split": summary.split,
        "victim": summary.victim.as_dict(),
        "defender": summary.defender.as_dict(),
        "attack_seconds": summary.attack_seconds,
    }
    if facts:
        details["facts"] = facts
    update_match(
        engine,
        match_id,
        status="done",
        phase="done",
        finished_at=utcnow(),
        wall_seconds=wall_seconds,
        details_json=json.dumps(details, default=str),
        serving_seconds_per_query=summary.serving_seconds_per_query,
        queries_per_second=summary.queries_per_second,
        queries_used=summary.queries_used,
        victim_accuracy=summary.victim.test_accuracy,
        defender_accuracy=summary.defender.clean_accuracy,
    )


def is_cancel_requested(engine: Engine, match_id: int) -> bool:
    with Session(engine) as session:
        value = session.exec(select(Match.cancel_requested).where(Match.id == match_id)).first()
        return bool(value)


def start_match(engine: Engine, match_id: int) -> bool:
    """queued -> running, atomically; False if the match was not queued any more."""
    from sqlalchemy import update

    with Session(engine) as session:
        result = session.exec(
            update(Match)
            .where(Match.id == match_id, Match.status == "queued", Match.cancel_requested == False)  # noqa: E712
            .values(status="running", phase="starting", started_at=utcnow())
        )
        session.commit()
        return result.rowcount == 1


def claim_oldest_queued(engine: Engine) -> int | None:
    with Session(engine) as session:  # writers BEGIN IMMEDIATE: select and update are one step
        match = session.exec(
            select(Match)
            .where(Match.status == "queued", Match.cancel_requested == False)  # noqa: E712
            .order_by(Match.id)
            .limit(1)
            # PostgreSQL: concurrent claimers skip a row another one has locked instead of
            # waiting for it (SQLite has no row locks; BEGIN IMMEDIATE serialises claims there).
            .with_for_update(skip_locked=True)
        ).first()
        if match is None:
            return None
        match.status, match.phase, match.started_at = "running", "starting", utcnow()
        session.add(match)
        session.commit()
        return match.id
