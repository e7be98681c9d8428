"""Alembic migrations: old databases upgrade in place, new ones match the tables, newer ones are refused."""

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlmodel import SQLModel

from engines.errors import ArenaError
from storage import open_database, queries
from storage.migrate import HEAD_REVISION, head_revision

SHIPPED_V1 = Path(__file__).parent / "data" / "arena_v1.db"  # made by the arena before migrations existed


def _revision(db: Path) -> str:
    return sqlite3.connect(db).execute("SELECT version_num FROM alembic_version").fetchone()[0]


def test_the_fast_path_knows_the_newest_revision():
    assert HEAD_REVISION == head_revision()


def test_a_new_database_is_exactly_the_tables(tmp_path):
    engine = open_database(str(tmp_path / "new.db"))
    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), SQLModel.metadata) == []
    engine.dispose()
    assert _revision(tmp_path / "new.db") == head_revision()


def test_a_database_from_before_migrations_upgrades_in_place(tmp_path):
    db = tmp_path / "arena.db"
    shutil.copy(SHIPPED_V1, db)
    engine = open_database(str(db), write=False, create=False)  # even a reader upgrades it
    assert _revision(db) == head_revision()
    matches = queries.list_matches(engine)
    assert [(m.id, m.status, m.label_mode) for m in sorted(matches, key=lambda m: m.id)] == [
        (1, "done", "soft"),
        (2, "done", "hard"),
    ]
    assert len(queries.checkpoints(engine, 1)) == 3
    old = queries.get_match(engine, 1)  # liveness columns (revision 0002) with their defaults
    assert (old.retries, old.attempts, old.heartbeat_at) == (1, 0, None)
    assert queries.leaderboard(engine)[0].clone_accuracy == pytest.approx(0.1, abs=0.02)
    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), SQLModel.metadata) == []
    engine.dispose()


def test_a_newer_or_unknown_schema_is_refused(cli, tmp_path):
    db = tmp_path / "future.db"
    open_database(str(db)).dispose()
    con = sqlite3.connect(db)
    con.execute("UPDATE alembic_version SET version_num = 'f00dfeed'")
    con.commit()
    with pytest.raises(ArenaError, match="newer than this arena"):
        open_database(str(db))
    result = cli("leaderboard", "--db", db)
    assert result.exit_code == 2 and "newer than this arena" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1

    legacy = tmp_path / "legacy.db"
    shutil.copy(SHIPPED_V1, legacy)
    con = sqlite3.connect(legacy)
    con.execute("UPDATE schema_info SET version = 999")
    con.commit()
    with pytest.raises(ArenaError, match="schema version 999 is unknown"):
        open_database(str(legacy))


def test_foreign_tables_are_refused(tmp_path):
    db = tmp_path / "other.db"
    sqlite3.connect(db).execute("CREATE TABLE invoices (id INTEGER)")
    with pytest.raises(ArenaError, match="not an arena leaderboard"):
        open_database(str(db))


def test_processes_creating_one_database_at_once_create_it_once(tmp_path):
    db = tmp_path / "race.db"
    code = f"from storage import open_database; open_database({str(db)!r}).dispose()"
    root = Path(__file__).resolve().parents[1]
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=root, stderr=subprocess.PIPE) for _ in range(4)]
    errors = [p.communicate(timeout=120)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], errors
    assert _revision(db) == head_revision()
