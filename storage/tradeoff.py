"""The trade-off view: for one defender against one attacker, the points (served clean
accuracy, final clone accuracy) of its finished matches, one point per defender parameter
setting (the knob value) and arena (data set, label mode, budget), mean and sample standard
deviation over seeds.

A defence judged at one knob setting has not been judged: this is the curve that
says what each point of protection costs in utility. Rows are plain dicts, like the
leaderboard's, so every output format renders them.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from storage.ranking import varying_params
from storage.tables import Match

TRADEOFF_COLUMNS = (
    "dataset",
    "label_mode",
    "query_budget",
    "knob",
    "knob_value",
    "defender_params",
    "seeds",
    "defender_accuracy",
    "defender_accuracy_std",
    "clone_accuracy",
    "clone_accuracy_std",
    "victim_accuracy",
    "match_ids",
)
TRADEOFF_TABLE_COLUMNS = (
    "dataset",
    "label_mode",
    "query_budget",
    "knob_value",
    "seeds",
    "defender_accuracy",
    "defender_accuracy_std",
    "clone_accuracy",
    "clone_accuracy_std",
    "defender_params",
)


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _sort_key(row: dict) -> tuple:
    """Per arena: numeric knob values in increasing order, other settings after them from the
    most useful (highest served clean accuracy) down."""
    value = row["knob_value"]
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    return (
        row["dataset"],
        row["label_mode"],
        row["query_budget"],
        0 if numeric else 1,
        value if numeric else 0,
        -(row["defender_accuracy"] or 0.0),
    )


def tradeoff(
    engine: Engine,
    defender: str,
    attacker: str,
    knob: str | None = None,
    label_mode: str | None = None,
    dataset: str | None = None,
    query_budget: int | None = None,
) -> list[dict]:
    """Trade-off points of `defender` against `attacker` from finished matches.

    Matches are grouped by (data set, label mode, budget, resolved defender params); each
    group is one point with the mean and sample std over its matches (seeds). `knob` names
    the parameter reported as `knob_value` (the defender's `knob`; None: no knob column)."""
    query = select(Match).where(Match.defender == defender, Match.attacker == attacker, Match.status == "done")
    if label_mode is not None:
        query = query.where(Match.label_mode == label_mode)
    if dataset is not None:
        query = query.where(Match.dataset == dataset)
    if query_budget is not None:
        query = query.where(Match.query_budget == query_budget)
    with Session(engine) as session:
        matches = session.exec(query.order_by(Match.id)).all()
        groups: dict[tuple, list[Match]] = defaultdict(list)
        for match in matches:
            params = json.loads(match.config_json).get("defender_params", {})
            key = (match.dataset, match.label_mode, match.query_budget, json.dumps(params, sort_keys=True))
            groups[key].append(match)
        rows = []
        for (data, mode, budget, params_json), members in groups.items():
            params = json.loads(params_json)
            served, served_std = _mean_std([m.defender_accuracy for m in members if m.defender_accuracy is not None])
            clone, clone_std = _mean_std([m.clone_accuracy for m in members if m.clone_accuracy is not None])
            victim, _ = _mean_std([m.victim_accuracy for m in members if m.victim_accuracy is not None])
            rows.append(
                {
                    "dataset": data,
                    "label_mode": mode,
                    "query_budget": budget,
                    "knob": knob,
                    "knob_value": params.get(knob) if knob else None,
                    "defender_params": params_json,
                    "seeds": len({m.seed for m in members}),
                    "defender_accuracy": served,
                    "defender_accuracy_std": served_std,
                    "clone_accuracy": clone,
                    "clone_accuracy_std": clone_std,
                    "victim_accuracy": victim,
                    "match_ids": ",".join(str(m.id) for m in members),
                }
            )
    return sorted(rows, key=_sort_key)


def setting_names(rows: list[dict]) -> list[str]:
    """Each point's defender setting as the parameters that differ between the points
    ("eps=0.5"; all of them for a single setting, "defaults" when it has none), for labels
    that need no registry (the defender's `knob` lives in the engine)."""
    settings = [json.loads(row["defender_params"]) for row in rows]
    shown = varying_params(settings) or sorted({k for s in settings for k in s})
    return [", ".join(f"{k}={s.get(k)}" for k in shown) or "defaults" for s in settings]
