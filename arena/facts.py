"""Registry facts stored with each match, so the leaderboard can judge rows without importing
the engine (torch): what an attacker adapts, whether it is data-free, what utility a defence
promises."""

from __future__ import annotations

from engines.spec import MatchSpec


def match_facts(spec: MatchSpec) -> dict:
    from engines.attackers import ATTACKERS
    from engines.data import DATASETS
    from engines.defenders import DEFENDERS

    attacker = ATTACKERS.get(spec.attacker)
    defender = DEFENDERS.get(spec.defender)
    tolerance = defender.utility_tolerance
    preserves_top1 = getattr(defender, "preserves_top1", None)
    if callable(preserves_top1) and preserves_top1(defender.Params.model_validate(spec.defender_params)):
        tolerance = 0.0  # top-1 unchanged on every input: served accuracy equals the victim's
    return {
        "attacker": {
            "base_attack": attacker.base_attack,
            "data_free": attacker.family == "data-free",
            "num_classes": DATASETS.get(spec.dataset).num_classes,
        },
        "defender": {"utility_tolerance": tolerance},
    }
