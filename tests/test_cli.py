"""The CLI end to end: a tiny real match into a temporary database, and bad input."""

import json
import sqlite3
import subprocess
import sys

import pytest

TINY = """
query_budget = 30
[victim.train]
epochs = 2
batch_size = 128
[attacker_params]
epochs = 2
min_steps = 10
"""


@pytest.fixture
def tiny_config(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


def test_run_records_match_and_checkpoints(cli, tmp_path, tiny_config, cache_dir):
    db = tmp_path / "arena.db"
    result = cli(
        "run",
        "-a",
        "knockoff",
        "-l",
        "soft,hard",
        "--config",
        tiny_config,
        "--device",
        "cpu",
        "--db",
        db,
        "--cache-dir",
        cache_dir,
        "--format",
        "json",
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["label_mode"] for r in rows] == ["soft", "hard"]
    assert all(r["status"] == "done" and r["queries_used"] == 30 for r in rows)

    con = sqlite3.connect(db)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    matches = con.execute("SELECT id, status, config_json, provenance_json, details_json FROM matches").fetchall()
    assert len(matches) == 2
    config = json.loads(matches[0][2])
    assert config["query_budget"] == 30 and config["seed"] == 0 and config["attacker_params"]["min_steps"] == 10
    provenance = json.loads(matches[0][3])
    assert provenance["torch"] and provenance["device"] == "cpu"
    details = json.loads(matches[0][4])
    assert details["split"]["sizes"]["attacker_pool"] == 1200
    count = con.execute(
        "SELECT COUNT(*), MAX(queries_used) FROM checkpoints WHERE match_id = ?", (matches[0][0],)
    ).fetchone()
    assert count[0] >= 10 and count[1] == 30

    board = cli("leaderboard", "--db", db, "--format", "csv")
    assert board.exit_code == 0
    lines = board.stdout.strip().splitlines()
    assert lines[0].startswith("rank,id,defender") and len(lines) == 3
    filtered = cli("leaderboard", "--db", db, "--format", "json", "--label", "hard")
    assert [r["label_mode"] for r in json.loads(filtered.stdout)] == ["hard"]

    shown = cli("show", "1", "--db", db)
    assert shown.exit_code == 0 and "clone accuracy" in shown.stdout and "queries" in shown.stdout
    shown_json = json.loads(cli("show", "1", "--db", db, "--format", "json").stdout)
    assert len(shown_json["checkpoints"]) == count[0]


def test_list_names_everything(cli):
    result = cli("list", "--format", "json")
    names = {(r["kind"], r["name"]) for r in json.loads(result.stdout)}
    assert {
        ("defender", "undefended"),
        ("attacker", "knockoff"),
        ("attacker", "dfme"),
        ("dataset", "mnist5k"),
        ("model", "lenet5"),
    } <= names


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "--defender", "nope"], "unknown defender"),
        (["run", "--attacker", "nope"], "unknown attacker"),
        (["run", "-a", "knockoff", "--budget", "0"], "query_budget"),
        (["run", "-a", "knockoff", "--budget", "-3"], "query_budget"),
        (["run", "-a", "knockoff", "--budget", "99999"], "exceeds the query pool"),
        (["run", "-a", "dfme", "--label", "hard"], "does not support"),
        (["run", "-a", "knockoff", "--dataset", "cifar10", "--data-root", "/nonexistent"], "--data-root"),
        (["run", "-a", "knockoff", "--device", "tpu"], "device"),
        (["run", "-a", "knockoff", "--config", "/nonexistent.toml"], "not found"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(cli, tmp_path, args, message):
    db = tmp_path / "never.db"
    result = cli(*args, "--db", db)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not db.exists()


@pytest.mark.parametrize(
    "args, config, field",
    [
        (["--defender", "nope"], None, "defender"),
        (["-a", "knockoff", "--budget", "0"], None, "query_budget"),
        (["-a", "knockoff", "--budget", "99999"], None, "query_budget"),
        (["-a", "dfme", "--label", "hard"], None, "label_mode"),
        (["-a", "knockoff", "--device", "tpu"], None, "device"),
        (["-a", "knockoff", "--dataset", "cifar10", "--data-root", "/nonexistent"], None, "dataset"),
        (["-a", "knockoff", "--pool", "cifar10", "--data-root", "/nonexistent"], None, "pool"),
        (["-a", "knockoff"], "[attacker_params]\nepochs = 0", "attacker_params.epochs"),
        (["-a", "knockoff"], "budget = [", "config"),
        (["-a", "knockoff"], "colour = 1", "config"),
    ],
)
def test_refusal_with_format_json_names_its_field_on_stdout(cli, tmp_path, args, config, field):
    if config is not None:
        (tmp_path / "c.toml").write_text(config)
        args = [*args, "--config", tmp_path / "c.toml"]
    result = cli("run", "--enqueue", "--format", "json", *args, "--db", tmp_path / "never.db")
    assert result.exit_code == 2
    error = json.loads(result.stdout)["error"]
    assert error["field"] == field and "\n" not in error["message"]
    assert result.stderr.strip() == f"error: {error['message']}"
    assert not (tmp_path / "never.db").exists()


def test_malformed_toml_and_unknown_keys(cli, tmp_path):
    bad = tmp_path / "bad.toml"
    for text, message in (("budget = [", "malformed TOML"), ("colour = 1", "unknown key")):
        bad.write_text(text)
        result = cli("run", "--config", bad, "--db", tmp_path / "x.db")
        assert result.exit_code == 2 and message in result.stderr
        assert not (tmp_path / "x.db").exists()


def test_unreachable_database(cli, tmp_path, tiny_config):
    result = cli("run", "-a", "knockoff", "--config", tiny_config, "--db", "/nonexistent/dir/a.db")
    assert result.exit_code == 2 and "does not exist" in result.stderr
    result = cli("leaderboard", "--db", tmp_path / "missing.db")
    assert result.exit_code == 2 and "no database" in result.stderr
    result = cli("run", "-a", "knockoff", "--config", tiny_config, "--db", "postgresql://u:p@127.0.0.1:1/x")
    assert result.exit_code == 2 and result.stderr.startswith("error: cannot")


def test_enqueue_then_worker(cli, tmp_path, tiny_config, cache_dir):
    db = tmp_path / "q.db"
    queued = cli("run", "-a", "knockoff", "--config", tiny_config, "--device", "cpu", "--db", db, "--enqueue")
    assert queued.exit_code == 0 and "queued 1" in queued.stderr and queued.stdout == ""
    again = cli("run", "-a", "knockoff", "-s", "1,2", "--config", tiny_config, "--db", db, "--enqueue", "-f", "json")
    reply = json.loads(again.stdout)
    assert again.exit_code == 0 and reply["match_ids"] == [2, 3] and len(reply["batch_id"]) == 12
    for match_id in reply["match_ids"]:
        assert cli("cancel", match_id, "--db", db).exit_code == 0
    board = json.loads(cli("leaderboard", "--db", db, "--status", "queued", "--format", "json").stdout)
    assert len(board) == 1
    worked = cli("worker", "--db", db, "--cache-dir", cache_dir)
    assert worked.exit_code == 0
    done = json.loads(cli("leaderboard", "--db", db, "--format", "json").stdout)
    assert done[0]["status"] == "done" and done[0]["queries_used"] == 30


def test_headless_path_never_imports_textual(tmp_path):
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from arena.cli import app\n"
        "import arena.runner, engines.match, storage.queries\n"
        "r = CliRunner().invoke(app, ['list', '--format', 'json'])\n"
        "assert r.exit_code == 0\n"
        "bad = sorted(m for m in sys.modules if m == 'textual' or m.startswith('textual.'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)


@pytest.mark.parametrize(
    "defender, params, message",
    [
        ("edm", "{ k = 1 }", "k"),
        ("dnf", "{ exit_threshold = 1.5 }", "exit_threshold"),
        ("dnf", "{ exit_threshold = -0.1 }", "exit_threshold"),
        ("act", "{ no_such_knob = 1 }", "no_such_knob"),
        ("meco", "{ no_such_knob = 1 }", "no_such_knob"),
    ],
)
def test_impossible_defence_parameters_are_one_line_exit_2_and_write_nothing(cli, tmp_path, defender, params, message):
    config = tmp_path / "match.toml"
    config.write_text(f'defender = "{defender}"\nattacker = "knockoff"\ndefender_params = {params}\n')
    db = tmp_path / "never.db"
    result = cli("run", "--config", config, "--db", db)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not db.exists()
