"""Tournaments: spec validation, expansion, resuming, the dry-run plan, export and reproduce."""

import json
import sqlite3
import textwrap

import pytest

from arena.tournament import TournamentSpec, load_tournament
from engines.errors import ArenaError

TINY_MATCH = """
[match]
checkpoints = 3
device = "cpu"
[match.victim.train]
epochs = 1
batch_size = 128
lr = 0.05
"""
KO = '{ name = "knockoff", budget = 30, params = { epochs = 1, min_steps = 4 } }'
ARGMAX = '{ name = "argmax-clone", budget = 30, label_modes = ["soft"], params = { epochs = 1, min_steps = 4 } }'


def write(tmp_path, body: str, name="t.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


@pytest.fixture
def tiny_spec(tmp_path):
    return write(
        tmp_path,
        f"""
        name = "tiny"
        seeds = [0, 1]
        label_modes = ["soft", "hard"]
        defenders = ["undefended"]
        attackers = [{KO}, {ARGMAX}]
        {TINY_MATCH}
        """,
    )


def test_expansion_orders_matches_and_intersects_label_modes(tiny_spec):
    spec = load_tournament(str(tiny_spec))
    specs = spec.expand()
    got = [(s.seed, s.defender, s.attacker, s.label_mode) for s in specs]
    assert got == [
        (0, "undefended", "knockoff", "soft"),
        (0, "undefended", "knockoff", "hard"),
        (0, "undefended", "argmax-clone", "soft"),
        (1, "undefended", "knockoff", "soft"),
        (1, "undefended", "knockoff", "hard"),
        (1, "undefended", "argmax-clone", "soft"),
    ]
    assert all(s.query_budget == 30 and s.checkpoints == 3 for s in specs)
    assert len({s.identity() for s in specs}) == len(specs)
    assert specs[0].identity() == spec.expand()[0].identity()  # identity is a function of the spec


@pytest.mark.parametrize(
    "body, message",
    [
        ('defenders = ["undefended"]\nattackers = ["knockoff"]\nseeds = [1, 1]', "seeds lists 1 more than once"),
        ('defenders = ["undefended"]\nattackers = ["knockoff"]\ncolour = "red"', "unknown key 'colour'"),
        ('defenders = []\nattackers = ["knockoff"]', "defenders"),
        ('defenders = ["undefended"]\nattackers = ["knockoff"]\n[match]\nseed = 3', "cannot set 'seed'"),
        ('defenders = ["undefended"]\nattackers = [{ name = "dfme", label_modes = ["hard"] }]', "does not support"),
        ('defenders = ["nobody"]\nattackers = ["knockoff"]', "unknown defender"),
        ('defenders = ["undefended"]\nattackers = [{ name = "knockoff", budget = -5 }]', "attackers"),
        ("defenders = [", "malformed TOML"),
    ],
)
def test_bad_specs_are_one_line_errors(tmp_path, body, message):
    path = write(tmp_path, body)
    with pytest.raises(ArenaError) as caught:
        load_tournament(str(path)).expand()
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_cli_bad_spec_and_executor_exit_2_and_write_nothing(cli, tmp_path, tiny_spec):
    db = tmp_path / "never.db"
    bad = write(tmp_path, 'defenders = ["undefended"]\nattackers = ["knockoff"]\nseeds = [0, 0]', "bad.toml")
    for args in ((bad,), (tiny_spec, "--executor", "slurm"), (tmp_path / "missing.toml",)):
        result = cli("tournament", *args, "--db", db)
        assert result.exit_code == 2, result.output
        assert len(result.output.strip().splitlines()) == 1
    assert not db.exists()


def test_dry_run_plans_without_writing(cli, tmp_path, tiny_spec, cache_dir):
    db = tmp_path / "plan.db"
    result = cli("tournament", tiny_spec, "--dry-run", "--db", db, "--cache-dir", cache_dir, "--format", "json")
    assert result.exit_code == 0, result.output
    (plan,) = json.loads(result.stdout)
    assert plan["matches"] == 6 and plan["to_enqueue"] == 6 and plan["done"] == 0
    assert plan["victims"] == 2 and plan["defender_preparations"] == 2
    assert plan["estimated_seconds"] is None  # nothing played yet to estimate from
    assert not db.exists()


def test_tournament_resumes_and_replays_only_what_is_missing(cli, tmp_path, tiny_spec, cache_dir):
    db = tmp_path / "t.db"
    first = cli("tournament", tiny_spec, "--db", db, "--cache-dir", cache_dir, "--format", "json")
    assert first.exit_code == 0, first.output
    rows = json.loads(first.stdout)
    assert len(rows) == 6 and all(r["status"] == "done" for r in rows)

    con = sqlite3.connect(db)
    con.execute("UPDATE matches SET status = 'failed' WHERE id = 2")  # as if it had crashed
    con.commit()
    plan = cli("tournament", tiny_spec, "--dry-run", "--db", db, "--cache-dir", cache_dir, "--format", "json")
    (summary,) = json.loads(plan.stdout)
    assert summary["done"] == 5 and summary["to_enqueue"] == 1
    assert summary["estimated_seconds"] > 0  # from the rows just played

    again = cli("tournament", tiny_spec, "--db", db, "--cache-dir", cache_dir, "--format", "json")
    assert again.exit_code == 0, again.output
    count, replayed = con.execute("SELECT count(*), max(id) FROM matches").fetchone()
    assert count == 7 and replayed == 7  # one new row for the failed match, nothing else
    # the replay is the same spec, seed included: the same numbers as the first attempt
    numbers = con.execute("SELECT clone_accuracy, fidelity_served FROM matches WHERE id IN (2, 7)").fetchall()
    assert numbers[0] == numbers[1]
    third = cli("tournament", tiny_spec, "--db", db, "--cache-dir", cache_dir)
    assert third.exit_code == 0 and con.execute("SELECT count(*) FROM matches").fetchone()[0] == 7


def test_each_defender_is_prepared_once_per_victim(cli, tmp_path, cache_dir):
    spec = write(
        tmp_path,
        f"""
        defenders = [{{ name = "misleader", params = {{ epochs = 1, batch_size = 32, train_limit = 64 }} }}]
        attackers = [{KO}, {ARGMAX}]
        {TINY_MATCH}
        """,
    )
    db = tmp_path / "m.db"
    result = cli("tournament", spec, "--db", db, "--cache-dir", str(tmp_path / "cache"), "--format", "json")
    assert result.exit_code == 0, result.output
    details = [json.loads(d) for (d,) in sqlite3.connect(db).execute("SELECT details_json FROM matches ORDER BY id")]
    assert [d["defender"]["reused"] for d in details] == [False, True]
    assert details[0]["facts"]["defender"]["utility_tolerance"] == 0.015
    assert details[1]["facts"]["attacker"]["base_attack"] == "knockoff"


def test_export_and_reproduce(cli, tmp_path, cache_dir):
    db = tmp_path / "e.db"
    spec = write(tmp_path, f'defenders = ["undefended"]\nattackers = [{KO}]\n{TINY_MATCH}')
    assert cli("tournament", spec, "--db", db, "--cache-dir", cache_dir).exit_code == 0

    exported = cli("export", "--db", db)
    (match,) = json.loads(exported.stdout)
    assert match["config"]["attacker"] == "knockoff" and len(match["checkpoints"]) == 3
    csv_rows = cli("export", "--what", "checkpoints", "--format", "csv", "--db", db).stdout.strip().splitlines()
    assert csv_rows[0].startswith("match_id,index,queries_used") and len(csv_rows) == 4
    assert cli("export", "--format", "table", "--db", db).exit_code == 2

    same = cli("reproduce", "1", "--db", db, "--format", "json")
    assert same.exit_code == 0, same.output
    assert all(row["equal"] for row in json.loads(same.stdout))
    con = sqlite3.connect(db)
    con.execute("UPDATE checkpoints SET clone_accuracy = clone_accuracy + 1e-9 WHERE match_id = 1 AND `index` = 2")
    con.commit()
    differs = cli("reproduce", "1", "--db", db, "--format", "json")
    assert differs.exit_code == 1
    unequal = [row["what"] for row in json.loads(differs.stdout) if not row["equal"]]
    assert unequal == ["checkpoint 2 clone_accuracy"]
    assert cli("reproduce", "99", "--db", db).exit_code == 2


def test_spec_identity_is_stable_across_equal_specs():
    spec = TournamentSpec(defenders=["undefended"], attackers=["knockoff"], match={"device": "cpu"})
    (a,), (b,) = spec.expand(), spec.expand()
    assert a.identity() == b.identity() and a.model_copy(update={"seed": 5}).identity() != a.identity()
