"""The defence ranking: each defence judged by its worst case over the attacks it faced.

Scoring (also in the README):
- a *cell* is one attack setting: (data set, attacker, label mode, query budget);
- in each cell a defence's final clone accuracy and fidelity (to the served answers) are
  averaged over seeds, with a 95% Student-t confidence interval;
- a defence's score is its *worst case*: the cell where the clone got highest accuracy
  (fidelity's worst case is reported beside it); lower is better;
- only defences that faced every cell played on their data set are ranked, so a defence
  tried only against weak attacks cannot rank first; the others are listed, unranked,
  with the cells they miss;
- rank = 1 + the number of defences whose worst-case interval lies entirely below this one's:
  defences whose intervals overlap share a rank (a tie is a tie, not a coin toss);
- the utility cost is the victim's clean accuracy minus the served clean accuracy.

Sanity flags (after RobustBench's flags on suspicious robustness) mark rows whose numbers
say more about the experiment than the defence; see `sanity_flags`.

This module imports neither torch nor the engine's registries, so `arena leaderboard` stays
fast on large databases: what it needs to know about an attacker or a defender (its base
attack, whether it is data-free, a stated utility tolerance) was recorded with each match.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy import cast, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from storage.tables import Match

# Two-sided 95% Student-t quantiles by degrees of freedom (from standard tables).
_T975 = {
    1: 12.706,
    2: 4.303,
    3: 3.182,
    4: 2.776,
    5: 2.571,
    6: 2.447,
    7: 2.365,
    8: 2.306,
    9: 2.262,
    10: 2.228,
    12: 2.179,
    15: 2.131,
    20: 2.086,
    25: 2.060,
    30: 2.042,
    40: 2.021,
    60: 2.000,
    120: 1.980,
}

GRADIENT_MASKING_MARGIN = 0.02  # hard-label clone beats soft-label clone by more than 2 points
UNDOING_MARGIN = 0.02  # an undoing attacker beats its base attack by more than 2 points
WIDE_SPREAD = 0.05  # a 95% interval half-width above 5 points is too wide to rank by
FAILED_START_FACTOR = 1.5  # a data-free clone never above 1.5x chance accuracy did not start


def t_quantile(df: int) -> float:
    """The 97.5% Student-t quantile; conservative (the next smaller tabulated df) between entries."""
    if df <= 0:
        return math.inf
    usable = [d for d in _T975 if d <= df]
    return _T975[max(usable)] if df <= 120 else 1.960


@dataclass(frozen=True)
class Interval:
    """Mean of n seeds with its 95% confidence interval (infinite for a single seed)."""

    mean: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Interval:
        n = len(values)
        mean = statistics.fmean(values)
        if n < 2:
            return cls(mean, -math.inf, math.inf, n)
        # sample standard deviation in floats (statistics.stdev's exact fractions are slow)
        spread = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
        half = t_quantile(n - 1) * spread / math.sqrt(n)
        return cls(mean, mean - half, mean + half, n)

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def below(self, other: Interval) -> bool:
        """True when this interval lies entirely below `other` (a separable difference)."""
        return self.high < other.low


@dataclass
class DefenceRow:
    dataset: str
    defence: str  # the defender's name, with its parameters where several settings were played
    defender: str
    defender_params: dict
    worst_attack: str  # "attacker/label@budget" of the worst-case cell
    worst_clone: Interval
    worst_fidelity: Interval
    served_accuracy: Interval
    utility_cost: Interval
    attacks: int  # cells faced
    seeds: int  # fewest seeds in any cell
    rank: int | None = None  # None: not comparable (misses cells the others faced)
    flags: list[str] = field(default_factory=list)
    worst_cell: tuple[str, str, int] | None = None  # (attacker, label mode, budget) of worst_attack

    def as_dict(self) -> dict:
        def number(x: float) -> float | None:
            return None if math.isinf(x) or math.isnan(x) else round(x, 6)

        return {
            "rank": self.rank,
            "dataset": self.dataset,
            "defence": self.defence,
            "worst_attack": self.worst_attack,
            "worst_clone_accuracy": number(self.worst_clone.mean),
            "worst_clone_ci_low": number(self.worst_clone.low),
            "worst_clone_ci_high": number(self.worst_clone.high),
            "worst_fidelity": number(self.worst_fidelity.mean),
            "served_accuracy": number(self.served_accuracy.mean),
            "utility_cost": number(self.utility_cost.mean),
            "utility_cost_ci_high": number(self.utility_cost.high),
            "attacks": self.attacks,
            "seeds": self.seeds,
            "flags": "; ".join(self.flags),
        }


RANKING_COLUMNS = (
    "rank", "dataset", "defence", "worst_attack", "worst_clone_accuracy", "worst_clone_ci_low", "worst_clone_ci_high",
    "worst_fidelity", "served_accuracy", "utility_cost", "utility_cost_ci_high", "attacks", "seeds", "flags",
)  # fmt: skip
RANKING_TABLE_COLUMNS = (
    "rank", "dataset", "defence", "worst_attack", "worst_clone_accuracy", "worst_fidelity", "utility_cost",
    "attacks", "seeds", "flags",
)  # fmt: skip


@dataclass(frozen=True)
class _Result:
    """One done match, reduced to what the ranking reads."""

    defence_key: tuple  # (defender, params json)
    cell: tuple  # (attacker, label_mode, query_budget)
    seed: int
    clone: float
    best_clone: float
    fidelity: float
    victim: float
    served: float


def _params_column(dialect: str):
    """The defender's parameters as JSON text, extracted by the database where it can (the
    whole spec would be parsed per row otherwise: the slow part on large leaderboards)."""
    if dialect == "sqlite":
        return func.json_extract(Match.config_json, "$.defender_params")
    if dialect == "postgresql":
        return cast(Match.config_json, JSONB)["defender_params"].astext
    return Match.config_json


def _load(engine: Engine, dataset: str | None) -> tuple[dict[str, list[_Result]], dict, dict]:
    dialect = engine.dialect.name
    query = select(
        Match.dataset, Match.defender, Match.attacker, Match.label_mode, Match.query_budget, Match.seed,
        Match.clone_accuracy, Match.best_clone_accuracy, Match.fidelity_served, Match.victim_accuracy,
        Match.defender_accuracy, _params_column(dialect),
    ).where(Match.status == "done", Match.clone_accuracy.is_not(None))  # fmt: skip
    if dataset is not None:
        query = query.where(Match.dataset == dataset)
    results: dict[str, list[_Result]] = defaultdict(list)
    canonical: dict[str | None, str] = {}  # params JSON as stored -> sorted-key JSON (few distinct values)
    with Session(engine) as session:
        for row in session.exec(query):
            (ds, defender, attacker, label, budget, seed, clone, best, fid, victim, served, params) = row
            if params not in canonical:
                value = json.loads(params) if params else {}
                if dialect not in ("sqlite", "postgresql"):
                    value = value.get("defender_params", {})
                canonical[params] = json.dumps(value, sort_keys=True)
            results[ds].append(
                _Result(
                    defence_key=(defender, canonical[params]),
                    cell=(attacker, label, budget),
                    seed=seed,
                    clone=clone,
                    best_clone=best if best is not None else clone,
                    fidelity=fid if fid is not None else math.nan,
                    victim=victim if victim is not None else math.nan,
                    served=served if served is not None else math.nan,
                )
            )
        attacker_facts = _facts(session, Match.attacker, "attacker")
        defender_facts = _facts(session, Match.defender, "defender")
    return results, attacker_facts, defender_facts


def _facts(session: Session, column, side: str) -> dict[str, dict]:
    """Registry facts per attacker (or defender), from its newest done match that recorded them."""
    newest = (
        select(func.max(Match.id))
        .where(Match.status == "done", Match.details_json.contains('"facts"'))
        .group_by(column)
    )
    rows = session.exec(select(column, Match.details_json).where(Match.id.in_(newest)))
    return {name: json.loads(details).get("facts", {}).get(side, {}) for name, details in rows}


def varying_params(settings: list[dict]) -> list[str]:
    """The parameter names whose values differ between these settings of one defender, sorted."""
    names = {k for s in settings for k in s}
    return sorted(k for k in names if len({json.dumps(s.get(k), sort_keys=True) for s in settings}) > 1)


def _display_names(keys: set[tuple]) -> dict[tuple, str]:
    """A defender's name, plus the parameters that differ between its settings played."""
    by_defender: dict[str, list[dict]] = defaultdict(list)
    for defender, params in keys:
        by_defender[defender].append(json.loads(params))
    names = {}
    for defender, params_json in keys:
        settings = by_defender[defender]
        if len(settings) == 1:
            names[(defender, params_json)] = defender
            continue
        params = json.loads(params_json)
        varying = [k for k in varying_params(settings) if k in params]
        names[(defender, params_json)] = f"{defender}[{', '.join(f'{k}={params[k]}' for k in varying)}]"
    return names


def _cell_name(cell: tuple) -> str:
    attacker, label, budget = cell
    return f"{attacker}/{label}@{budget}"


def defence_ranking(engine: Engine, dataset: str | None = None) -> list[DefenceRow]:
    """Ranked defences per data set (see the module docstring for the formula)."""
    loaded, attacker_facts, defender_facts = _load(engine, dataset)
    out: list[DefenceRow] = []
    for ds in sorted(loaded):
        results = loaded[ds]
        names = _display_names({r.defence_key for r in results})
        by_defence: dict[tuple, dict[tuple, list[_Result]]] = defaultdict(lambda: defaultdict(list))
        for r in results:
            by_defence[r.defence_key][r.cell].append(r)
        all_cells = {r.cell for r in results}
        rows = []
        for key, cells in by_defence.items():
            row = _defence_row(ds, key, names[key], cells)
            missing = sorted(all_cells - set(cells))
            if missing:
                shown = ", ".join(_cell_name(c) for c in missing[:3]) + (" ..." if len(missing) > 3 else "")
                row.flags.append(f"unranked: not played against {shown}")
            row.flags.extend(sanity_flags(row, cells, attacker_facts, defender_facts.get(key[0], {})))
            rows.append((row, not missing))
        comparable = [row for row, complete in rows if complete]
        for row in comparable:
            row.rank = 1 + sum(other.worst_clone.below(row.worst_clone) for other in comparable if other is not row)
        rows.sort(key=lambda item: (item[0].rank is None, item[0].rank or 0, item[0].worst_clone.mean))
        out.extend(row for row, _ in rows)
    return out


def _defence_row(dataset: str, key: tuple, name: str, cells: dict[tuple, list[_Result]]) -> DefenceRow:
    clone = {cell: Interval.of([r.clone for r in rs]) for cell, rs in cells.items()}
    fidelity = {cell: Interval.of([r.fidelity for r in rs]) for cell, rs in cells.items()}
    worst = max(clone, key=lambda c: (clone[c].mean, _cell_name(c)))
    worst_fid = max(fidelity, key=lambda c: (fidelity[c].mean, _cell_name(c)))
    per_seed: dict[int, _Result] = {}
    for rs in cells.values():
        for r in rs:
            per_seed.setdefault(r.seed, r)  # served accuracy depends on (defence, seed), not the attack
    served = Interval.of([r.served for r in per_seed.values()])
    cost = Interval.of([r.victim - r.served for r in per_seed.values()])
    return DefenceRow(
        dataset=dataset,
        defence=name,
        defender=key[0],
        defender_params=json.loads(key[1]),
        worst_attack=_cell_name(worst),
        worst_clone=clone[worst],
        worst_fidelity=fidelity[worst_fid],
        served_accuracy=served,
        utility_cost=cost,
        attacks=len(cells),
        seeds=min(len(rs) for rs in cells.values()),
        worst_cell=worst,
    )


def sanity_flags(row: DefenceRow, cells: dict[tuple, list[_Result]], attacker_facts: dict, defender_facts: dict):
    """Warnings that the numbers may not mean what the rank suggests."""
    flags = []
    means = {cell: statistics.fmean(r.clone for r in rs) for cell, rs in cells.items()}
    for (attacker, label, budget), hard in means.items():
        soft = means.get((attacker, "soft", budget))
        if label == "hard" and soft is not None and hard > soft + GRADIENT_MASKING_MARGIN:
            flags.append(f"gradient masking? {attacker} hard labels beat soft by {100 * (hard - soft):.1f} pts")
    for (attacker, label, budget), undone in means.items():
        base = attacker_facts.get(attacker, {}).get("base_attack")
        base_mean = means.get((base, label, budget)) if base else None
        if base_mean is None and base:  # undoing attacks may run at their own budget
            candidates = [m for (a, lab, _), m in means.items() if a == base and lab == label]
            base_mean = max(candidates) if candidates else None
        if base_mean is not None and undone > base_mean + UNDOING_MARGIN:
            flags.append(f"reversible: {attacker} beats {base} by {100 * (undone - base_mean):.1f} pts")
    for (attacker, label, _budget), rs in cells.items():
        facts = attacker_facts.get(attacker, {})
        classes = facts.get("num_classes")
        if facts.get("data_free") and classes and max(r.best_clone for r in rs) < FAILED_START_FACTOR / classes:
            flags.append(f"{attacker}/{label} never left chance: the attack failed to start, not a defence success")
    tolerance = defender_facts.get("utility_tolerance")
    if tolerance is not None and row.utility_cost.mean > tolerance + 1e-9:
        flags.append(
            f"served accuracy {100 * row.utility_cost.mean:.1f} pts below the victim (stated tolerance "
            f"{100 * tolerance:.1f})"
        )
    if row.seeds < 2:
        flags.append("single seed: no interval, cannot rank")
    elif row.worst_clone.half_width > WIDE_SPREAD:
        flags.append(f"seed spread too wide to rank (±{100 * row.worst_clone.half_width:.1f} pts)")
    return flags
