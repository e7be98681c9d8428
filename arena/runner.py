"""Orchestration shared by `arena run`, `arena worker` and the TUI.

A batch is validated completely (names, parameters, budgets, data availability, device,
database) before the first row is written. Each match then runs with a `DatabaseRecorder`
observer: its status, phase, every checkpoint and its log are committed as they happen, so
a crash loses at most the checkpoint in progress.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import traceback
import uuid
from collections.abc import Iterable
from contextlib import contextmanager

from sqlalchemy.engine import Engine

from arena import lifecycle
from engines.errors import ArenaError, MatchCancelled
from engines.match import MatchEnvironment, MatchObserver
from engines.records import CheckpointRow, DefenderFacts, VictimFacts
from engines.spec import MatchSpec
from storage import liveness, queries
from storage.tables import utcnow


def validate_batch(specs: list[MatchSpec], env: MatchEnvironment) -> None:
    """Check everything that can be checked without training: raises ArenaError."""
    from engines.attackers import ATTACKERS
    from engines.data import load_dataset, load_pool
    from engines.defenders import DEFENDERS
    from engines.devices import resolve_device

    loaded: dict[str, object] = {}
    for spec in specs:
        resolve_device(spec.device)
        with _about("dataset"):
            if spec.dataset not in loaded:
                loaded[spec.dataset] = load_dataset(spec.dataset, env.data_root, env.cache_root, env.download)
        splits = loaded[spec.dataset]
        with _about("pool"):
            pool = load_pool(spec.pool, splits, env.data_root, env.cache_root, env.download)
        defender_cls = DEFENDERS.get(spec.defender)
        for name in defender_cls.datasets_needed(defender_cls.Params.model_validate(spec.defender_params)):
            with _about("defender_params"):
                if name not in loaded:
                    loaded[name] = load_dataset(name, env.data_root, env.cache_root, env.download)
        attacker_cls = ATTACKERS.get(spec.attacker)
        attacker = attacker_cls(attacker_cls.Params.model_validate(spec.attacker_params))
        with _about("label_mode"):  # with no queries asked, only the label mode can be refused
            attacker_cls.check(spec.label_mode, 0, len(pool))
        with _about("query_budget", keep=True):  # what is left: the budget against the attack's costs
            attacker.validate(spec.label_mode, spec.query_budget, len(pool))


@contextmanager
def _about(field: str, keep: bool = False):
    """An ArenaError raised inside is about `field` (unless `keep` and it names one already)."""
    try:
        yield
    except ArenaError as exc:
        if not (keep and exc.field):
            exc.at(field)
        raise


def enqueue(engine: Engine, specs: list[MatchSpec], retries: int = 1) -> tuple[str, list[int]]:
    from arena.provenance import provenance

    batch_id = uuid.uuid4().hex[:12]
    ids = queries.create_matches(engine, batch_id, specs, provenance("unresolved"))
    if retries != 1:  # the column's default
        liveness.set_retries(engine, ids, retries)
    return batch_id, ids


class DatabaseRecorder(MatchObserver):
    """Commits a match's life to the database; polls for cancellation at most once a second.

    A stop signal (arena.lifecycle) or a lost heartbeat stops the match at the next event."""

    def __init__(self, engine: Engine, match_id: int, poll_seconds: float = 1.0, heartbeat=None):
        self.engine = engine
        self.match_id = match_id
        self.poll_seconds = poll_seconds
        self.heartbeat = heartbeat
        self._checkpoints = 0
        self._last_poll = 0.0
        self._last_progress = 0.0

    def _stop_if_told(self) -> None:
        if lifecycle.stop_requested() is not None or (self.heartbeat is not None and self.heartbeat.lost):
            raise MatchCancelled()

    def phase(self, phase: str, detail: str = "") -> None:
        self._stop_if_told()
        queries.update_match(self.engine, self.match_id, phase=phase, progress_done=0, progress_total=0)
        queries.add_event(self.engine, self.match_id, "phase", f"{phase}: {detail}" if detail else phase)

    def progress(self, done: int, total: int, message: str) -> None:
        self._stop_if_told()
        now = time.monotonic()
        if now - self._last_progress >= 1.0 or done >= total:
            self._last_progress = now
            queries.update_match(self.engine, self.match_id, progress_done=done, progress_total=total)

    def log(self, message: str) -> None:
        queries.add_event(self.engine, self.match_id, "log", message)

    def defender_ready(self, victim: VictimFacts, defender: DefenderFacts) -> None:
        queries.record_defender_ready(self.engine, self.match_id, victim, defender)

    def checkpoint(self, row: CheckpointRow) -> None:
        queries.add_checkpoint(self.engine, self.match_id, self._checkpoints, row)
        self._checkpoints += 1

    def should_stop(self) -> None:
        self._stop_if_told()
        now = time.monotonic()
        if now - self._last_poll < self.poll_seconds:
            return
        self._last_poll = now
        if queries.is_cancel_requested(self.engine, self.match_id):
            raise MatchCancelled()


class FanOut(MatchObserver):
    """Sends every event to several observers (database, progress bar, event stream)."""

    def __init__(self, observers: Iterable[MatchObserver]):
        self.observers = list(observers)

    def phase(self, phase, detail=""):
        for o in self.observers:
            o.phase(phase, detail)

    def progress(self, done, total, message):
        for o in self.observers:
            o.progress(done, total, message)

    def log(self, message):
        for o in self.observers:
            o.log(message)

    def defender_ready(self, victim, defender):
        for o in self.observers:
            o.defender_ready(victim, defender)

    def checkpoint(self, row):
        for o in self.observers:
            o.checkpoint(row)

    def should_stop(self):
        for o in self.observers:
            o.should_stop()


class JsonLinesObserver(MatchObserver):
    """Appends one JSON object per event to a file (for scripts and external observers)."""

    def __init__(self, path: str, match_id: int):
        self.file = open(path, "a", buffering=1)
        self.match_id = match_id

    def _write(self, kind: str, **data) -> None:
        self.file.write(json.dumps({"match_id": self.match_id, "event": kind, "time": time.time(), **data}) + "\n")

    def phase(self, phase, detail=""):
        self._write("phase", phase=phase, detail=detail)

    def log(self, message):
        self._write("log", message=message)

    def checkpoint(self, row):
        self._write("checkpoint", **row.as_dict())

    def defender_ready(self, victim, defender):
        self._write("defender_ready", victim_accuracy=victim.test_accuracy, defender_accuracy=defender.clean_accuracy)


@contextmanager
def _sigterm_cancels():
    """SIGTERM (e.g. from the TUI or a scheduler) cancels the match cleanly."""

    def handler(signum, frame):
        raise MatchCancelled()

    if lifecycle.active():  # `arena run`/`arena worker` stop the whole command instead
        yield
        return
    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not in the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def apply_thread_setting() -> None:
    """$ARENA_THREADS caps torch's CPU threads (recorded in provenance as cpu_threads)."""
    value = os.environ.get("ARENA_THREADS")
    if value:
        import torch

        try:
            torch.set_num_threads(max(1, int(value)))
        except ValueError:
            raise ArenaError(f"ARENA_THREADS must be a whole number, got {value!r}") from None


def run_match(
    engine: Engine,
    match_id: int,
    env: MatchEnvironment,
    extra: list[MatchObserver] = (),
    claimed: bool = False,
    poll_seconds: float = 1.0,
) -> str:
    """Play a queued match; returns its final status (done, failed, cancelled).

    "lost" means the reaper took the match from this process (no heartbeat for too long):
    nothing more is written, the match's row belongs to the reaper's verdict."""
    from arena.facts import match_facts
    from arena.provenance import provenance
    from engines.devices import resolve_device
    from engines.match import play_match

    match = queries.get_match(engine, match_id)
    if match is None:
        raise ArenaError(f"no match {match_id} in this database")
    if not claimed and not queries.start_match(engine, match_id):
        return queries.get_match(engine, match_id).status  # someone else runs (or ran) it
    spec = MatchSpec.model_validate(match.config)
    device = str(resolve_device(spec.device))
    queries.update_match(
        engine,
        match_id,
        phase="starting",
        provenance_json=json.dumps(provenance(device)),
        pid=os.getpid(),
        host=socket.gethostname(),
    )
    heartbeat = liveness.Heartbeat(engine, match_id, liveness.begin_attempt(engine, match_id))
    recorder = DatabaseRecorder(engine, match_id, poll_seconds, heartbeat)
    observer = FanOut([recorder, *extra])
    started = time.perf_counter()
    try:
        with heartbeat, _sigterm_cancels():
            summary = play_match(spec, observer, env)
    except (MatchCancelled, KeyboardInterrupt) as exc:
        if heartbeat.lost:  # reaped while this process was frozen: the match is no longer ours
            return "lost"
        queries.update_match(
            engine,
            match_id,
            status="cancelled",
            phase="cancelled",
            finished_at=utcnow(),
            wall_seconds=time.perf_counter() - started,
        )
        queries.add_event(engine, match_id, "log", "match cancelled; checkpoints so far are kept")
        if isinstance(exc, KeyboardInterrupt):
            raise
        return "cancelled"
    except Exception as exc:  # the match failed; the batch goes on and the error is kept
        if heartbeat.lost:
            return "lost"
        message = str(exc) if isinstance(exc, ArenaError) else f"{exc.__class__.__name__}: {exc}"
        queries.update_match(
            engine,
            match_id,
            status="failed",
            phase="failed",
            finished_at=utcnow(),
            error=message,
            wall_seconds=time.perf_counter() - started,
        )
        queries.add_event(engine, match_id, "error", traceback.format_exc())
        return "failed"
    if heartbeat.lost:
        return "lost"
    queries.finish_match(engine, match_id, summary, wall_seconds=time.perf_counter() - started, facts=match_facts(spec))
    return "done"


def claim_next(engine: Engine) -> int | None:
    """Atomically take the oldest queued match and mark it running (safe across workers)."""
    return queries.claim_oldest_queued(engine)
