"""Schema migrations (Alembic): every `arena` command brings an older database up to date.

- an empty database gets every migration from the first, so a new database and an upgraded
  one have exactly the same schema (a test compares both with the tables' metadata);
- a database from before migrations existed (it has `schema_info` but no `alembic_version`)
  is stamped with the revision its `schema_info.version` corresponds to, then upgraded;
- a database at a revision this arena does not know was made by a newer arena: refused.

Check and upgrade run in one transaction that writers take up front (SQLite: BEGIN
IMMEDIATE; PostgreSQL: an advisory lock), so processes opening one new database at once
create it once.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from engines.errors import ArenaError

MIGRATIONS = Path(__file__).parent / "migrations"
# The newest revision in migrations/versions (a test keeps them equal): a database already
# there opens without importing Alembic, which keeps read-only commands fast.
HEAD_REVISION = "0002"
# schema_info.version of databases made before migrations -> the revision they are at.
LEGACY_REVISIONS = {1: "0001"}
_ARENA_TABLES = {"matches", "checkpoints", "match_events", "schema_info", "alembic_version"}
_PG_LOCK_ID = 2506_02362  # any constant: serialises schema work between PostgreSQL clients


def _config(connection: Connection):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision among the migration scripts (what HEAD_REVISION must say)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(MIGRATIONS)).get_current_head()


def _at_head(engine: Engine) -> bool:
    try:
        with engine.connect() as connection:
            return connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == HEAD_REVISION
    except SQLAlchemyError:  # no alembic_version table (new or pre-migration database)
        return False


def prepare_schema(engine: Engine, create: bool) -> None:
    """Create or upgrade the schema to this arena's head revision (ArenaError when impossible)."""
    if _at_head(engine):
        return
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _PG_LOCK_ID})
        tables = set(inspect(connection).get_table_names())
        if not tables & _ARENA_TABLES:
            if tables:
                raise ArenaError("the database holds tables that are not an arena leaderboard; pass another --db")
            if not create:
                raise ArenaError("the database is empty; play a match first (`arena run`)")
        current = MigrationContext.configure(connection).get_current_revision()
        if current is None and "schema_info" in tables:
            version = connection.execute(text("SELECT version FROM schema_info")).scalar()
            if version not in LEGACY_REVISIONS:
                raise ArenaError(f"database schema version {version} is unknown to this arena; use another --db")
            command.stamp(_config(connection), LEGACY_REVISIONS[version])
            current = LEGACY_REVISIONS[version]
        script = ScriptDirectory(str(MIGRATIONS))
        if current is not None and current not in {rev.revision for rev in script.walk_revisions()}:
            raise ArenaError(
                f"the database schema (revision {current}) is newer than this arena's ({script.get_current_head()}); "
                "upgrade the arena (pip install -e .) or pass another --db"
            )
        if current != script.get_current_head():
            command.upgrade(_config(connection), "head")
