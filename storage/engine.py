"""Engine factory: SQLite by default (WAL, busy timeout, immediate write transactions),
any SQLAlchemy URL otherwise. One engine per process; never share one across fork."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlmodel import Session, create_engine

from engines.errors import ArenaError

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
    from storage.migrate import prepare_schema

    prepare_schema(engine, create)


def session(engine: Engine) -> Session:
    return Session(engine, expire_on_commit=False)
