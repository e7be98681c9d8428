"""Engine factory: SQLite by default (WAL, busy timeout, immediate write transactions),
any SQLAlchemy URL otherwise. One engine per process; never share one across fork."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import event, inspect
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlmodel import Session, SQLModel, create_engine, select

from engines.errors import ArenaError
from storage.tables import SchemaInfo

SCHEMA_VERSION = 2  # 2: matches.heartbeat_at, retries, attempts (see upgrade_v1_to_v2)
DEFAULT_DB_URL = "sqlite:///arena.db"


def resolve_db_url(value: str | None) -> str:
    """`--db` value, else $ARENA_DB, else ./arena.db. A bare path means a SQLite file."""
    value = value or os.environ.get("ARENA_DB") or DEFAULT_DB_URL
    if "://" not in value:
        value = f"sqlite:///{value}"
    return value


def _configure_sqlite(engine: Engine, write: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        # Let SQLAlchemy's `begin` event issue BEGIN itself (pysqlite's implicit BEGIN is deferred).
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        # Writers take the lock up front: a deferred read-then-write transaction would get
        # SQLITE_BUSY at once instead of waiting busy_timeout.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def open_database(url: str | None = None, write: bool = True, create: bool = True) -> Engine:
    """Open (and, for writers, create) the database, checking its schema version.

    Raises ArenaError with a one-line fix for unreachable URLs and version mismatches."""
    url = resolve_db_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ArenaError(f"malformed database URL {url!r}; pass --db PATH or a SQLAlchemy URL") from None
    is_sqlite = parsed.get_backend_name() == "sqlite"
    if is_sqlite and parsed.database not in (None, "", ":memory:"):
        path = Path(parsed.database)
        if not path.parent.exists():
            raise ArenaError(
                f"cannot open database {url!r}: folder {str(path.parent)!r} does not exist; "
                "create it or pass another --db"
            )
        if not create and not path.exists():
            raise ArenaError(f"no database at {str(path)!r}; play a match first (`arena run`) or pass --db")
    try:
        engine = create_engine(url, connect_args={"timeout": 30} if is_sqlite else {})
    except (ImportError, SQLAlchemyError) as exc:
        raise ArenaError(f"cannot use database {url!r} ({exc.__class__.__name__}); check --db / ARENA_DB") from None
    if is_sqlite:
        _configure_sqlite(engine, write)
    try:
        _check_schema(engine, create)
    except SQLAlchemyError as exc:
        engine.dispose()
        reason = str(getattr(exc, "orig", exc)).splitlines()[0]
        raise ArenaError(f"cannot open database {url!r}: {reason}; check --db / ARENA_DB") from None
    return engine


def _check_schema(engine: Engine, create: bool) -> None:
    tables = set(inspect(engine).get_table_names())
    if "schema_info" not in tables:
        if tables - set(SQLModel.metadata.tables):
            raise ArenaError("the database holds tables that are not an arena leaderboard; pass another --db")
        if not create:
            raise ArenaError("the database is empty; play a match first (`arena run`)")
        SQLModel.metadata.create_all(engine)
        with Session(engine) as session:
            session.add(SchemaInfo(id=1, version=SCHEMA_VERSION))
            session.commit()
        return
    with Session(engine) as session:
        info = session.exec(select(SchemaInfo)).first()
    found = info.version if info else None
    if found == 1:
        upgrade_v1_to_v2(engine)
        found = 2
    if found != SCHEMA_VERSION:
        raise ArenaError(
            f"database schema version {found} does not match this arena's {SCHEMA_VERSION}; "
            "use a new --db file (or migrate the old one)"
        )


def upgrade_v1_to_v2(engine: Engine) -> None:
    """In-place upgrade of a version-1 database: add the liveness columns of `matches`.

    Old rows get no heartbeat, one retry and zero attempts; the reaper then judges a
    `running` match from an old worker by its `started_at`. (Stop-gap until migrations
    are managed by a tool; idempotent, so two processes upgrading at once is harmless.)"""
    with engine.begin() as conn:
        version = conn.exec_driver_sql("SELECT version FROM schema_info WHERE id = 1").scalar()
        if version != 1:
            return  # another process upgraded it first
        present = {column["name"] for column in inspect(conn).get_columns("matches")}
        for name, ddl in (
            ("heartbeat_at", "DATETIME"),
            ("retries", "INTEGER NOT NULL DEFAULT 1"),
            ("attempts", "INTEGER NOT NULL DEFAULT 0"),
        ):
            if name not in present:
                conn.exec_driver_sql(f"ALTER TABLE matches ADD COLUMN {name} {ddl}")
        conn.exec_driver_sql("UPDATE schema_info SET version = 2 WHERE id = 1")


def session(engine: Engine) -> Session:
    return Session(engine, expire_on_commit=False)
