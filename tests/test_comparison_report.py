"""benchmarks/comparison.py's report logic: which cell is bold, and how the grid's work is counted."""

import json
from types import SimpleNamespace

from benchmarks.comparison import grid_seconds, interval, separated_best


def test_bold_only_where_the_best_interval_separates_from_every_other():
    column = {"a": interval([0.10, 0.11, 0.12]), "b": interval([0.50, 0.52, 0.51]), "c": interval([0.60, 0.61, 0.62])}
    assert separated_best(column, higher_is_better=False) == "a"
    assert separated_best(column, higher_is_better=True) == "c"
    column["d"] = interval([0.05, 0.40, 0.12])  # lowest mean, but its interval overlaps a's
    assert separated_best(column, higher_is_better=False) is None
    assert separated_best({"a": interval([0.1]), "b": interval([0.5, 0.6])}, higher_is_better=False) is None


def _match(defender, seed, wall, attack, defence=None, victim_reused=True):
    details = {"attack_seconds": attack, "victim": {"train_seconds": 12.0, "reused": victim_reused}}
    if defence is not None:
        details["defender"] = defence
    return SimpleNamespace(
        defender=defender,
        seed=seed,
        wall_seconds=wall,
        details_json=json.dumps(details),
        config_json=json.dumps({"defender_params": {}}),
    )


def test_grid_work_counts_each_training_once_and_not_the_waits():
    matches = [
        _match("undefended", 0, 20.0, 10.0, victim_reused=False),  # trained the victim (12 s)
        _match("m", 0, 110.0, 10.0, {"train_seconds": 90.0, "reused": False}),
        _match("m", 0, 100.0, 9.0, {"train_seconds": 90.0, "reused": True}),  # waited for the training
        _match("m", 0, 11.0, 10.0, {"train_seconds": 90.0, "reused": True}),
        _match("m", 1, 101.0, 10.0, {"train_seconds": 80.0, "reused": False}),  # another seed: its own
        _match("undefended", 1, 11.0, 10.0),
        _match("undefended", 2, 11.0, 10.0),
    ]
    work = grid_seconds(matches)
    assert work["attacks"] == 69.0 and work["defences"] == 170.0 and work["victims"] == 3 * 12.0  # one victim per seed
    assert work["setup_each"] == 1.0  # the median of 91 (a wait), 1, 1, 1
    assert work["total"] == 69.0 + 170.0 + 36.0 + 7 * 1.0
