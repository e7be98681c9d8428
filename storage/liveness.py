"""Liveness of running matches: a worker's heartbeat, and the reaper of lost matches.

A worker that plays a match stamps `matches.heartbeat_at` every `heartbeat_interval()`
seconds from a daemon thread (so a long training phase, which reports nothing, keeps it
fresh). A worker killed with SIGKILL, or a machine that lost power, stops stamping; the next
`arena` command that reads or claims matches calls `reap_lost_matches`, which turns every
`running` match whose last sign of life is older than `heartbeat_timeout()` into

- `queued` again, when it has retries left (`attempts <= retries`): its checkpoints stay
  visible until a worker starts the retry, which removes them and replays the match from
  the start (same seed, so on CPU the same numbers come back); or
- `failed`, with error "worker lost: no heartbeat since <time>", keeping its checkpoints.

Settings (environment): ARENA_HEARTBEAT_SECONDS (default 5) and ARENA_HEARTBEAT_TIMEOUT
(default 45), so a lost match leaves `running` within about a minute of the loss.
"""

from __future__ import annotations

import os
import socket
import threading
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from engines.errors import ArenaError
from storage.tables import Checkpoint, Match, MatchEvent, utcnow

DEFAULT_HEARTBEAT_SECONDS = 5.0
DEFAULT_HEARTBEAT_TIMEOUT = 45.0


def _seconds(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ArenaError(f"{name} must be a positive number of seconds, got {raw!r}")
    return value


def heartbeat_interval() -> float:
    """Seconds between two heartbeats of a running match ($ARENA_HEARTBEAT_SECONDS)."""
    return _seconds("ARENA_HEARTBEAT_SECONDS", DEFAULT_HEARTBEAT_SECONDS)


def heartbeat_timeout() -> float:
    """Silence after which a running match counts as lost ($ARENA_HEARTBEAT_TIMEOUT)."""
    timeout = _seconds("ARENA_HEARTBEAT_TIMEOUT", DEFAULT_HEARTBEAT_TIMEOUT)
    if timeout <= 2 * heartbeat_interval():
        raise ArenaError(
            "ARENA_HEARTBEAT_TIMEOUT must exceed twice ARENA_HEARTBEAT_SECONDS, "
            "or a slow but live worker would be reaped"
        )
    return timeout


def _as_utc(moment: datetime | None) -> datetime | None:
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)  # SQLite hands back naive datetimes; the arena stores UTC


def begin_attempt(engine: Engine, match_id: int) -> int:
    """Record that this process starts a (claimed) match: returns the attempt number.

    A retry starts from scratch: the lost attempt's checkpoints are removed here, in the same
    transaction that stamps the first heartbeat, and an event says how many."""
    with Session(engine) as session:
        match = session.get(Match, match_id)
        match.attempts += 1
        match.heartbeat_at = utcnow()
        match.pid, match.host = os.getpid(), socket.gethostname()
        attempt = match.attempts
        session.add(match)
        if attempt > 1:
            for name in ("clone_accuracy", "best_clone_accuracy", "fidelity_served", "fidelity_victim"):
                setattr(match, name, None)
            match.queries_used = 0
            old = session.exec(select(func.count()).where(Checkpoint.match_id == match_id)).one()
            session.exec(delete(Checkpoint).where(Checkpoint.match_id == match_id))
            session.add(
                MatchEvent(
                    match_id=match_id,
                    kind="log",
                    message=f"attempt {attempt} starts from scratch; "
                    f"the {old} checkpoint(s) of the lost attempt are replaced",
                )
            )
        session.commit()
        return attempt


def beat(engine: Engine, match_id: int, attempt: int) -> bool:
    """Stamp the heartbeat; False when this attempt no longer owns the match (reaped)."""
    with Session(engine) as session:
        result = session.exec(
            update(Match)
            .where(Match.id == match_id, Match.status == "running", Match.attempts == attempt)
            .values(heartbeat_at=utcnow())
        )
        session.commit()
        return result.rowcount == 1


class Heartbeat:
    """A daemon thread that stamps a match's heartbeat until stopped (use as a context manager).

    `lost` becomes True if the match was reaped under it (the process was frozen longer than
    the timeout): the worker must then stop playing it without writing a final status.
    Every few beats it also reaps other workers' lost matches, so a busy pool notices losses."""

    def __init__(self, engine: Engine, match_id: int, attempt: int, interval: float | None = None):
        self.engine = engine
        self.match_id = match_id
        self.attempt = attempt
        self.interval = interval or heartbeat_interval()
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{match_id}", daemon=True)

    def _run(self) -> None:
        beats = 0
        while not self._stop.wait(self.interval):
            try:
                if not beat(self.engine, self.match_id, self.attempt):
                    self.lost = True
                    return
                beats += 1
                if beats % 6 == 0:
                    reap_lost_matches(self.engine)
            except Exception:  # noqa: BLE001 - a busy database must not kill the worker; retry next beat
                continue

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 30)


def reap_lost_matches(engine: Engine, timeout: float | None = None) -> list[tuple[int, str]]:
    """Re-queue or fail every running match silent for longer than `timeout` seconds.

    Returns (match id, new status) pairs. Cheap when nothing is lost (one read). Each match is
    changed by a conditional UPDATE, so a heartbeat that arrives meanwhile wins the race."""
    timeout = heartbeat_timeout() if timeout is None else timeout
    cutoff = utcnow() - timedelta(seconds=timeout)
    last_sign = func.coalesce(Match.heartbeat_at, Match.started_at, Match.created_at)
    with Session(engine) as session:
        lost = session.exec(
            select(Match.id, Match.heartbeat_at, Match.started_at, Match.attempts, Match.retries).where(
                Match.status == "running", last_sign < cutoff
            )
        ).all()
    reaped: list[tuple[int, str]] = []
    for match_id, heartbeat_at, started_at, attempts, retries in lost:
        since = _as_utc(heartbeat_at or started_at)
        stamp = since.strftime("%Y-%m-%d %H:%M:%S UTC") if since else "the start"
        retry = attempts <= retries
        with Session(engine) as session:
            still_lost = (
                Match.id == match_id,
                Match.status == "running",
                Match.attempts == attempts,
                last_sign < cutoff,
            )
            if retry:
                values = dict(status="queued", phase="queued", heartbeat_at=None, pid=None, host=None)
                message = f"worker lost: no heartbeat since {stamp}; re-queued (retry {attempts} of {retries})"
            else:
                values = dict(
                    status="failed",
                    phase="failed",
                    finished_at=utcnow(),
                    error=f"worker lost: no heartbeat since {stamp}",
                )
                message = f"worker lost: no heartbeat since {stamp}; no retries left, marked failed"
            result = session.exec(update(Match).where(*still_lost).values(**values))
            if result.rowcount == 1:
                session.add(MatchEvent(match_id=match_id, kind="error", message=message))
                reaped.append((match_id, values["status"]))
            session.commit()
    return reaped


def set_retries(engine: Engine, match_ids: list[int], retries: int) -> None:
    """Record how often each match may be re-queued after a lost worker (`--retries`)."""
    if retries < 0:
        raise ArenaError(f"--retries must be 0 or more, got {retries}")
    with Session(engine) as session:
        session.exec(update(Match).where(Match.id.in_(match_ids)).values(retries=retries))
        session.commit()
