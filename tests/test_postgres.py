"""PostgreSQL as a shared leaderboard: every command on a postgresql:// URL, safe claims."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlmodel import SQLModel

from tests.postgres import PostgresServer

ROOT = Path(__file__).resolve().parents[1]
TINY = """
query_budget = 30
device = "cpu"
checkpoints = 3
[victim.train]
epochs = 1
batch_size = 128
[attacker_params]
epochs = 1
min_steps = 4
"""


@pytest.fixture(scope="module")
def server():
    pg = PostgresServer()
    yield pg
    pg.stop()


@pytest.fixture
def pg_url(server):
    return server.new_database()


def test_schema_is_built_by_the_migrations(pg_url):
    from storage import open_database

    engine = open_database(pg_url)
    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), SQLModel.metadata) == []
    engine.dispose()


def test_every_command_works_on_postgresql(cli, tmp_path, pg_url, cache_dir):
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    played = cli("run", "-a", "knockoff", "-l", "soft,hard", "--config", config, "--db", pg_url,
                 "--cache-dir", cache_dir, "--format", "json")  # fmt: skip
    assert played.exit_code == 0, played.output
    assert [r["status"] for r in json.loads(played.stdout)] == ["done", "done"]
    board = json.loads(cli("leaderboard", "--db", pg_url, "--format", "json").stdout)
    assert len(board) == 2 and {r["label_mode"] for r in board} == {"soft", "hard"}
    ranking = json.loads(cli("leaderboard", "--by", "defence", "--db", pg_url, "--format", "json").stdout)
    assert ranking[0]["defence"] == "undefended" and ranking[0]["attacks"] == 2
    shown = json.loads(cli("show", "1", "--db", pg_url, "--format", "json").stdout)
    assert len(shown["checkpoints"]) == 3
    exported = json.loads(cli("export", "--db", pg_url).stdout)
    assert [m["id"] for m in exported] == [1, 2]
    assert cli("cancel", "1", "--db", pg_url).exit_code == 2  # done: nothing to cancel


def test_concurrent_workers_claim_each_match_once(pg_url):
    from arena import runner
    from engines.spec import MatchSpec
    from storage import open_database

    engine = open_database(pg_url)
    spec = MatchSpec(device="cpu", query_budget=30).resolve()
    runner.enqueue(engine, [spec.model_copy(update={"seed": seed}) for seed in range(40)])
    engine.dispose()
    claimer = textwrap.dedent(f"""
        import json
        from storage import open_database, queries
        engine = open_database({pg_url!r})
        claimed = []
        while (match_id := queries.claim_oldest_queued(engine)) is not None:
            claimed.append(match_id)
        print(json.dumps(claimed))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", claimer], cwd=ROOT, stdout=subprocess.PIPE, text=True)
             for _ in range(4)]  # fmt: skip
    claims = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    every = [match_id for claimed in claims for match_id in claimed]
    assert sorted(every) == list(range(1, 41))  # each match claimed exactly once, none lost


def test_unreachable_postgresql_is_a_one_line_error(cli, tmp_path):
    result = cli("leaderboard", "--db", f"postgresql+psycopg://arena@/postgres?host={tmp_path}/no-socket")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: cannot") and len(result.stderr.strip().splitlines()) == 1
