"""The defence ranking: worst case over attacks, intervals, ties, completeness and sanity flags.

Rows are written straight into a database (no training), so each rule is checked on numbers
chosen to trigger it.
"""

import json
import math

import pytest

from storage import open_database
from storage.ranking import Interval, defence_ranking, t_quantile
from storage.tables import Match

FACTS = {
    "knockoff": {"base_attack": None, "data_free": False, "num_classes": 10},
    "argmax-clone": {"base_attack": "knockoff", "data_free": False, "num_classes": 10},
    "dfme": {"base_attack": None, "data_free": True, "num_classes": 10},
}


@pytest.fixture
def engine(tmp_path):
    engine = open_database(str(tmp_path / "rank.db"))
    yield engine
    engine.dispose()


def add(engine, defender, attacker, clones, label="soft", budget=100, served=0.97, victim=0.98, params=None,
        tolerance=None, best=None, dataset="mnist5k"):  # fmt: skip
    """One done match per seed, with the given final clone accuracies."""
    from sqlmodel import Session

    with Session(engine) as session:
        for seed, clone in enumerate(clones):
            details = {"facts": {"attacker": FACTS[attacker], "defender": {"utility_tolerance": tolerance}}}
            session.add(
                Match(
                    batch_id="b",
                    status="done",
                    defender=defender,
                    attacker=attacker,
                    dataset=dataset,
                    pool="in-distribution",
                    label_mode=label,
                    query_budget=budget,
                    seed=seed,
                    device="cpu",
                    config_json=json.dumps({"defender_params": params or {}}),
                    details_json=json.dumps(details),
                    clone_accuracy=clone,
                    best_clone_accuracy=best if best is not None else clone,
                    fidelity_served=clone,
                    fidelity_victim=clone,
                    victim_accuracy=victim,
                    defender_accuracy=served,
                )  # fmt: skip
            )
        session.commit()


def by_name(rows):
    return {row.defence: row for row in rows}


def test_t_quantiles_and_intervals():
    assert t_quantile(2) == pytest.approx(4.303) and t_quantile(1000) == pytest.approx(1.96)
    assert t_quantile(13) == pytest.approx(2.179)  # between table entries: the conservative one
    interval = Interval.of([0.5, 0.6, 0.7])
    assert interval.mean == pytest.approx(0.6)
    assert interval.high - interval.mean == pytest.approx(4.303 * 0.1 / math.sqrt(3))
    single = Interval.of([0.4])
    assert math.isinf(single.low) and math.isinf(single.high)


def test_worst_case_is_the_strongest_attack_and_ranks_separate_only_with_intervals(engine):
    add(engine, "strong", "knockoff", [0.30, 0.31, 0.29])
    add(engine, "strong", "argmax-clone", [0.40, 0.41, 0.39])
    add(engine, "weak", "knockoff", [0.90, 0.91, 0.89])
    add(engine, "weak", "argmax-clone", [0.80, 0.81, 0.79])
    add(engine, "close", "knockoff", [0.41, 0.43, 0.39])
    add(engine, "close", "argmax-clone", [0.20, 0.21, 0.19])
    rows = by_name(defence_ranking(engine))
    assert rows["strong"].worst_attack == "argmax-clone/soft@100"
    assert rows["strong"].worst_clone.mean == pytest.approx(0.40)
    assert rows["weak"].worst_attack == "knockoff/soft@100"
    # strong (0.40 +- 0.02) and close (0.41 +- 0.05) overlap: a tie; weak is separated from both
    assert rows["strong"].rank == rows["close"].rank == 1
    assert rows["weak"].rank == 3


def test_a_defence_tried_only_against_weak_attacks_is_not_ranked(engine):
    add(engine, "honest", "knockoff", [0.50, 0.51, 0.49])
    add(engine, "honest", "dfme", [0.60, 0.61, 0.59])
    add(engine, "cherry-picked", "knockoff", [0.10, 0.11, 0.09])  # never faced dfme
    rows = by_name(defence_ranking(engine))
    assert rows["honest"].rank == 1
    assert rows["cherry-picked"].rank is None
    assert any("not played against dfme/soft@100" in f for f in rows["cherry-picked"].flags)


def test_parameter_settings_are_separate_defences_named_by_what_varies(engine):
    add(engine, "randp", "knockoff", [0.5, 0.5], params={"eps": 0.1, "preserve_argmax": False})
    add(engine, "randp", "knockoff", [0.3, 0.3], params={"eps": 0.5, "preserve_argmax": False})
    names = {row.defence for row in defence_ranking(engine)}
    assert names == {"randp[eps=0.1]", "randp[eps=0.5]"}


def test_utility_cost_and_its_flag(engine):
    add(engine, "lossy", "knockoff", [0.5, 0.5, 0.5], served=0.90, victim=0.98, tolerance=0.015)
    add(engine, "faithful", "knockoff", [0.5, 0.5, 0.5], served=0.975, victim=0.98, tolerance=0.015)
    rows = by_name(defence_ranking(engine))
    assert rows["lossy"].utility_cost.mean == pytest.approx(0.08)
    assert any("below the victim" in f for f in rows["lossy"].flags)
    assert not any("below the victim" in f for f in rows["faithful"].flags)


def test_gradient_masking_and_reversible_perturbation_flags(engine):
    add(engine, "masked", "knockoff", [0.50, 0.50], label="soft")
    add(engine, "masked", "knockoff", [0.70, 0.70], label="hard")
    add(engine, "masked", "argmax-clone", [0.80, 0.80], label="soft")
    flags = by_name(defence_ranking(engine))["masked"].flags
    assert any(f.startswith("gradient masking?") for f in flags)
    assert any(f.startswith("reversible: argmax-clone beats knockoff") for f in flags)


def test_failed_data_free_start_and_seed_spread_flags(engine):
    add(engine, "lucky", "dfme", [0.11, 0.12, 0.10])  # never above 1.5x chance: not a defence success
    add(engine, "noisy", "dfme", [0.20, 0.70, 0.45])
    add(engine, "alone", "dfme", [0.50])
    rows = by_name(defence_ranking(engine))
    assert any("failed to start" in f for f in rows["lucky"].flags)
    assert any("seed spread too wide" in f for f in rows["noisy"].flags)
    assert any("single seed" in f for f in rows["alone"].flags)
    assert not any("failed to start" in f for f in rows["noisy"].flags)


def test_data_sets_are_ranked_separately(engine):
    add(engine, "a", "knockoff", [0.5, 0.5], dataset="mnist5k")
    add(engine, "a", "knockoff", [0.7, 0.7], dataset="mnist")
    rows = defence_ranking(engine)
    assert [(r.dataset, r.worst_clone.mean) for r in rows] == [("mnist", 0.7), ("mnist5k", 0.5)]
    assert [r.dataset for r in defence_ranking(engine, dataset="mnist")] == ["mnist"]


def test_cli_defence_leaderboard_json_and_bad_by(cli, tmp_path):
    db = tmp_path / "cli.db"
    engine = open_database(str(db))
    add(engine, "x", "knockoff", [0.5, 0.6, 0.55])
    engine.dispose()
    result = cli("leaderboard", "--by", "defence", "--db", db, "--format", "json")
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert row["defence"] == "x" and row["rank"] == 1 and row["worst_clone_accuracy"] == pytest.approx(0.55)
    assert row["worst_clone_ci_low"] < 0.55 < row["worst_clone_ci_high"]
    bad = cli("leaderboard", "--by", "defender-ish", "--db", db)
    assert bad.exit_code == 2 and "unknown --by" in bad.output
