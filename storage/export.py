"""Matches and checkpoints as plain rows for `arena export` (JSON or CSV)."""

from __future__ import annotations

import json

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from storage.tables import Checkpoint, Match

_JSON_COLUMNS = ("config_json", "provenance_json", "details_json")
MATCH_COLUMNS = tuple(name for name in Match.model_fields if name not in _JSON_COLUMNS) + _JSON_COLUMNS
CHECKPOINT_COLUMNS = ("match_id", *(n for n in Checkpoint.model_fields if n not in ("id", "match_id")))


def export_matches(engine: Engine, status: str | None = None, nested: bool = True) -> list[dict]:
    """Every match (oldest first). `nested`: JSON columns parsed and checkpoints included."""
    query = select(Match).order_by(Match.id)
    if status is not None:
        query = query.where(Match.status == status)
    with Session(engine) as session:
        matches = [m.model_dump() for m in session.exec(query)]
        checkpoints: dict[int, list[dict]] = {}
        if nested:
            for point in session.exec(select(Checkpoint).order_by(Checkpoint.match_id, Checkpoint.index)):
                checkpoints.setdefault(point.match_id, []).append(point.model_dump(exclude={"id", "match_id"}))
    if not nested:
        return matches
    for row in matches:
        for key in _JSON_COLUMNS:
            row[key.removesuffix("_json")] = json.loads(row.pop(key) or "{}")
        row["checkpoints"] = checkpoints.get(row["id"], [])
    return matches


def export_checkpoints(engine: Engine, status: str | None = None) -> list[dict]:
    """Every checkpoint of every match (or of matches with `status`), by match and index."""
    query = (
        select(Checkpoint).join(Match, Match.id == Checkpoint.match_id).order_by(Checkpoint.match_id, Checkpoint.index)
    )
    if status is not None:
        query = query.where(Match.status == status)
    with Session(engine) as session:
        return [point.model_dump(exclude={"id"}) for point in session.exec(query)]
