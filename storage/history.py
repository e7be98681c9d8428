"""What the database already knows about planned matches: identities and past wall times.

Used by tournaments to resume (skip what is done) and to estimate how long a plan takes.
"""

from __future__ import annotations

import json
from collections import defaultdict

from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from engines.spec import spec_identity
from storage.records import MatchRecord
from storage.tables import Match


def matches_by_identity(engine: Engine, specs: list) -> dict[str, list[MatchRecord]]:
    """Existing matches whose resolved spec equals one of `specs`, keyed by identity."""
    if not specs:
        return {}
    wanted = {s.identity() for s in specs}
    query = select(Match).where(
        Match.defender.in_({s.defender for s in specs}),
        Match.attacker.in_({s.attacker for s in specs}),
        Match.dataset.in_({s.dataset for s in specs}),
        Match.seed.in_({s.seed for s in specs}),
    )
    found: dict[str, list[MatchRecord]] = defaultdict(list)
    with Session(engine) as session:
        for match in session.exec(query):
            identity = spec_identity(json.loads(match.config_json))
            if identity in wanted:
                found[identity].append(MatchRecord.of(match))
    return dict(found)


def wall_time_estimates(engine: Engine) -> dict[tuple, float]:
    """Mean wall seconds of done matches, by (defender, attacker, label, dataset, budget) and coarser keys.

    Keys with None stand for "any": (None, attacker, label, dataset, budget) and
    (None, attacker, None, dataset, None)."""
    columns = (Match.defender, Match.attacker, Match.label_mode, Match.dataset, Match.query_budget)
    query = (
        select(*columns, func.sum(Match.wall_seconds), func.count())
        .where(Match.status == "done", Match.wall_seconds.is_not(None))
        .group_by(*columns)
    )
    sums: dict[tuple, list[float]] = defaultdict(lambda: [0.0, 0])
    with Session(engine) as session:
        for defender, attacker, label, dataset, budget, total, count in session.exec(query):
            for key in (
                (defender, attacker, label, dataset, budget),
                (None, attacker, label, dataset, budget),
                (None, attacker, None, dataset, None),
            ):
                sums[key][0] += total
                sums[key][1] += count
    return {key: total / count for key, (total, count) in sums.items()}
