"""The trade-off view (storage/tradeoff.py) and `arena tradeoff`, on a tiny database filled
through the storage functions (no match is played)."""

from __future__ import annotations

import csv
import io
import json

import pytest

from engines.spec import MatchSpec
from storage import open_database
from storage.queries import create_matches, update_match
from storage.tradeoff import tradeoff

# (eps, seed, served clean accuracy, clone accuracy)
RANDP_RESULTS = [
    (0.1, 0, 0.95, 0.90),
    (0.1, 1, 0.93, 0.88),
    (0.5, 0, 0.90, 0.80),
    (0.5, 1, 0.88, 0.70),
    (2.0, 0, 0.10, 0.20),
    (2.0, 1, 0.12, 0.30),
]


@pytest.fixture
def db(tmp_path):
    path = str(tmp_path / "tradeoff.db")
    engine = open_database(path)
    specs, results = [], []
    for eps, seed, served, clone in RANDP_RESULTS:
        specs.append(MatchSpec(defender="randp", defender_params={"eps": eps}, attacker="knockoff", seed=seed))
        results.append((served, clone))
    # noise the query must leave out: another attacker, another label mode, an unfinished match
    specs.append(MatchSpec(defender="randp", defender_params={"eps": 0.5}, attacker="dfme", seed=0))
    specs.append(MatchSpec(defender="randp", defender_params={"eps": 0.5}, label_mode="hard", seed=0))
    results += [(0.5, 0.5), (0.85, 0.6)]
    specs.append(MatchSpec(defender="randp", defender_params={"eps": 1.0}, seed=0))
    ids = create_matches(engine, "batch", [s.resolve() for s in specs], {})
    for match_id, (served, clone) in zip(ids, results):
        update_match(
            engine, match_id, status="done", defender_accuracy=served, clone_accuracy=clone, victim_accuracy=0.96
        )
    # the last one (eps 1.0) stays queued: not a point yet
    engine.dispose()
    return path


def test_points_are_grouped_by_knob_value_and_averaged_over_seeds(db):
    engine = open_database(db, write=False, create=False)
    rows = tradeoff(engine, "randp", "knockoff", knob="eps", label_mode="soft")
    assert [r["knob_value"] for r in rows] == [0.1, 0.5, 2.0]
    assert [r["seeds"] for r in rows] == [2, 2, 2]
    assert rows[1]["defender_accuracy"] == pytest.approx(0.89)
    assert rows[1]["clone_accuracy"] == pytest.approx(0.75)
    assert rows[1]["clone_accuracy_std"] == pytest.approx(0.1 / 2**0.5)  # sample std of 0.8, 0.7
    assert json.loads(rows[0]["defender_params"]) == {"eps": 0.1, "preserve_argmax": False}
    # without the label filter the hard-label match is its own arena
    both = tradeoff(engine, "randp", "knockoff", knob="eps")
    assert [(r["label_mode"], r["knob_value"]) for r in both] == [
        ("hard", 0.5),
        ("soft", 0.1),
        ("soft", 0.5),
        ("soft", 2.0),
    ]
    assert tradeoff(engine, "randp", "knockoff", knob="eps", dataset="cifar10") == []


def test_cli_table_json_and_csv(cli, db):
    out = cli(
        "tradeoff", "--defender", "randp", "--attacker", "knockoff", "--label", "soft", "--format", "json", "--db", db
    )
    assert out.exit_code == 0, out.output
    rows = json.loads(out.stdout)
    assert [(r["knob_value"], round(r["clone_accuracy"], 6)) for r in rows] == [(0.1, 0.89), (0.5, 0.75), (2.0, 0.25)]
    out = cli("tradeoff", "-d", "randp", "-a", "knockoff", "-l", "soft", "--format", "csv", "--db", db)
    parsed = list(csv.DictReader(io.StringIO(out.stdout)))
    assert [row["knob_value"] for row in parsed] == ["0.1", "0.5", "2.0"]
    out = cli("tradeoff", "-d", "randp", "-a", "knockoff", "-l", "soft", "--db", db)
    assert out.exit_code == 0
    assert "trade-off: randp (knob eps) vs knockoff" in out.stdout
    assert "89.0%" in out.stdout and "75.0%" in out.stdout  # the eps 0.5 point in the table
    assert "served clean accuracy" in out.stdout  # the chart's x label


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-d", "no-such-defence", "-a", "knockoff"], "unknown defender"),
        (["-d", "randp", "-a", "no-such-attack"], "unknown attacker"),
        (["-d", "randp", "-a", "knockoff", "--label", "fuzzy"], "unknown label mode"),
    ],
)
def test_bad_input_is_one_line_exit_2(cli, db, args, message):
    out = cli("tradeoff", *args, "--db", db)
    assert out.exit_code == 2
    assert message in out.stderr and out.stderr.count("\n") == 1


def test_no_points_says_how_to_get_them(cli, db):
    out = cli("tradeoff", "-d", "rounding", "-a", "knockoff", "--db", db)
    assert out.exit_code == 0 and "no finished matches of rounding vs knockoff" in out.stderr


def test_show_lists_the_other_settings_played_in_the_match_arena(cli, db):
    # match 1 is randp eps 0.1, seed 0: its arena (knockoff, soft, default budget) has three settings
    out = cli("show", "1", "--db", db)
    assert out.exit_code == 0, out.output
    assert "trade-off: randp settings vs knockoff (soft, budget" in out.stdout
    table = out.stdout.split("trade-off:")[1]
    for setting in ("* eps=0.1", "  eps=0.5", "  eps=2.0"):
        assert setting in table, setting
    assert "89.0%" in table and "75.0%" in table  # the eps 0.5 point: served and clone means over seeds
    # the dfme match (7) and the hard-label one (8) are alone in their arenas: no table
    for alone in ("7", "8"):
        out = cli("show", alone, "--db", db)
        assert out.exit_code == 0 and "trade-off:" not in out.stdout
