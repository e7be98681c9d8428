"""Reliability: heartbeats and the reaper, a clean stop on SIGINT/SIGTERM, concurrent workers
and artifact builds, strict grid input, and the in-place upgrade of a version-1 database.

Processes are real (`python -m arena.cli ...`); every wait polls the database for a state
with a deadline, so a slow machine makes these tests slower, never wrong."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from arena import runner
from arena.config import build_specs, parse_axis
from engines.errors import ArenaError
from engines.match import MatchEnvironment, MatchObserver
from engines.records import CheckpointRow
from engines.spec import MatchSpec
from storage import liveness, open_database, queries
from storage.tables import utcnow

ROOT = Path(__file__).resolve().parent.parent
TINY_VICTIM = {"arch": None, "train": {"epochs": 1, "batch_size": 128, "lr": 0.05}}
TINY = """\
query_budget = 40
checkpoints = 3
attacker_params = { epochs = 1, min_steps = 10 }
[victim]
train = { epochs = 1, batch_size = 128, lr = 0.05 }
"""
# The same victim (cached), but an attack slow enough to be caught in the act.
SLOW = TINY.replace("min_steps = 10", "min_steps = 3000")
DEADLINE = 240  # seconds; the machine may be shared
FAST_LIVENESS = {"ARENA_HEARTBEAT_SECONDS": "0.5", "ARENA_HEARTBEAT_TIMEOUT": "3"}


def wait_for(condition, timeout: float = DEADLINE, what: str = "a condition"):
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def rows(db: Path, sql: str, *args) -> list[tuple]:
    """A read with a fresh connection (the database may not exist yet)."""
    if not db.exists():
        return []
    con = sqlite3.connect(db, timeout=30)
    try:
        return con.execute(sql, args).fetchall()
    except sqlite3.OperationalError:  # tables not created yet
        return []
    finally:
        con.close()


def arena(*args, env: dict | None = None, **popen) -> subprocess.Popen:
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "ARENA_THREADS": "1", **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "arena.cli", *map(str, args)],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


@pytest.fixture
def processes():
    """Processes a test starts; any still alive at the end are killed."""
    started: list[subprocess.Popen] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


@pytest.fixture
def configs(tmp_path):
    (tmp_path / "tiny.toml").write_text(TINY)
    (tmp_path / "slow.toml").write_text(SLOW)
    return {"tiny": tmp_path / "tiny.toml", "slow": tmp_path / "slow.toml"}


def tiny_spec(**fields) -> MatchSpec:
    return MatchSpec(
        **{"device": "cpu", "attacker": "knockoff", "query_budget": 40, "checkpoints": 3, "victim": TINY_VICTIM}
        | {"attacker_params": {"epochs": 1, "min_steps": 10}}
        | fields
    ).resolve()


# -- heartbeats and the reaper ---------------------------------------------------------------------
def test_heartbeat_stays_fresh_while_the_match_thread_is_busy(tmp_path, cache_dir, monkeypatch):
    monkeypatch.setenv("ARENA_HEARTBEAT_SECONDS", "0.2")
    engine = open_database(str(tmp_path / "h.db"))
    _, (match_id,) = runner.enqueue(engine, [tiny_spec()])
    seen = []

    class BusyAtFirstCheckpoint(MatchObserver):
        """Blocks the match thread (as a long training step does) until a new heartbeat lands."""

        def checkpoint(self, row):
            if not seen:
                first = queries.get_match(engine, match_id).heartbeat_at
                seen.append(wait_for(lambda: queries.get_match(engine, match_id).heartbeat_at != first, 60, "a beat"))

    env = MatchEnvironment(cache_root=cache_dir)
    assert runner.run_match(engine, match_id, env, extra=[BusyAtFirstCheckpoint()]) == "done"
    match = queries.get_match(engine, match_id)
    assert seen and match.attempts == 1 and match.pid == os.getpid()
    assert liveness.reap_lost_matches(engine, timeout=0.0) == []  # finished matches are never reaped
    engine.dispose()


def _running_since(engine, match_id: int, seconds_ago: float) -> None:
    queries.update_match(engine, match_id, status="running", phase="attacking")
    liveness.begin_attempt(engine, match_id)
    queries.update_match(engine, match_id, heartbeat_at=utcnow() - timedelta(seconds=seconds_ago))


def test_reaper_requeues_while_retries_last_then_fails(tmp_path):
    engine = open_database(str(tmp_path / "r.db"))
    _, (match_id, fresh_id) = runner.enqueue(engine, [tiny_spec(), tiny_spec(seed=1)])
    _running_since(engine, match_id, 120)
    _running_since(engine, fresh_id, 1)
    row = CheckpointRow(queries_used=4, clone_accuracy=0.3, best_clone_accuracy=0.3, fidelity_served=0.3,
                        fidelity_victim=0.3, wall_seconds=1.0, serving_seconds=0.1)  # fmt: skip
    queries.add_checkpoint(engine, match_id, 0, row)
    assert liveness.reap_lost_matches(engine, timeout=60) == [(match_id, "queued")]  # retries default to 1
    assert queries.get_match(engine, fresh_id).status == "running"
    assert len(queries.checkpoints(engine, match_id)) == 1  # kept and shown while it waits

    assert runner.claim_next(engine) == match_id  # the retry replaces the lost attempt's checkpoints
    assert liveness.begin_attempt(engine, match_id) == 2
    assert queries.checkpoints(engine, match_id) == [] and queries.get_match(engine, match_id).queries_used == 0
    queries.update_match(engine, match_id, heartbeat_at=utcnow() - timedelta(seconds=120))
    assert liveness.reap_lost_matches(engine, timeout=60) == [(match_id, "failed")]
    match = queries.get_match(engine, match_id)
    assert match.status == "failed" and match.error.startswith("worker lost: no heartbeat since ")
    assert not liveness.beat(engine, match_id, 2)  # a frozen worker that wakes up learns it lost the match
    assert any("re-queued" in e.message for e in queries.events(engine, match_id))
    engine.dispose()


def test_reaper_settings_are_checked(monkeypatch):
    monkeypatch.setenv("ARENA_HEARTBEAT_TIMEOUT", "soon")
    with pytest.raises(ArenaError, match="ARENA_HEARTBEAT_TIMEOUT"):
        liveness.heartbeat_timeout()
    monkeypatch.setenv("ARENA_HEARTBEAT_TIMEOUT", "1")
    monkeypatch.setenv("ARENA_HEARTBEAT_SECONDS", "1")
    with pytest.raises(ArenaError, match="twice"):
        liveness.heartbeat_timeout()


def test_kill_9_of_a_worker_leaves_running_through_the_reaper(tmp_path, configs, cache_dir, processes):
    db = tmp_path / "k.db"
    queued = arena("run", "-a", "knockoff", "--config", configs["slow"], "--device", "cpu", "--db", db, "--enqueue")
    assert queued.wait(timeout=DEADLINE) == 0, queued.stderr.read()
    worker = arena("worker", "--db", db, "--cache-dir", cache_dir, env=FAST_LIVENESS)
    processes.append(worker)
    wait_for(lambda: rows(db, "SELECT COUNT(*) FROM checkpoints")[0][0] >= 1, what="a first checkpoint")
    worker.kill()
    worker.wait(timeout=60)
    assert rows(db, "SELECT status FROM matches") == [("running",)]  # the zombie the reaper is for

    def board() -> list[dict]:
        shown = arena("leaderboard", "--db", db, "--status", "all", "--format", "json", env=FAST_LIVENESS)
        out, err = shown.communicate(timeout=DEADLINE)
        assert shown.returncode == 0, err
        return [row for row in json.loads(out) if row["status"] != "running"]

    (row,) = wait_for(board, what="the reaper")
    assert row["status"] == "queued" and row["queries_used"] >= 1  # one retry left; what was done is shown
    assert rows(db, "SELECT COUNT(*) FROM checkpoints")[0][0] >= 1
    events = [m for (m,) in rows(db, "SELECT message FROM match_events WHERE kind = 'error'")]
    assert len(events) == 1 and events[0].startswith("worker lost: no heartbeat since ")


def test_tui_store_reaps_on_open(tmp_path):
    from arena.tui.data import ArenaStore

    path = str(tmp_path / "t.db")
    engine = open_database(path)
    _, (match_id,) = runner.enqueue(engine, [tiny_spec()], retries=0)
    _running_since(engine, match_id, 3600)
    store = ArenaStore(path)
    try:
        assert store.match(match_id).status == "failed"
    finally:
        store.close()
        engine.dispose()


# -- a clean stop ---------------------------------------------------------------------------------
@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_a_grid_and_cancels_the_rest(tmp_path, configs, cache_dir, processes, signum, status):
    db = tmp_path / "g.db"
    seeds = ",".join(str(s) for s in range(12))
    grid = arena(
        "run", "-a", "knockoff", "--seed", seeds, "--config", configs["slow"], "--device", "cpu",
        "--db", db, "--cache-dir", cache_dir, "--format", "csv",
    )  # fmt: skip
    processes.append(grid)
    wait_for(lambda: rows(db, "SELECT id FROM matches WHERE phase = 'attacking'"), what="a match attacking")
    grid.send_signal(signum)
    _, err = grid.communicate(timeout=DEADLINE)
    assert grid.returncode == status, err
    statuses = rows(db, "SELECT status, COUNT(*) FROM matches GROUP BY status")
    assert statuses == [("cancelled", 12)], statuses
    (first,) = rows(db, "SELECT message FROM match_events WHERE message LIKE 'match cancelled%'")
    assert "checkpoints so far are kept" in first[0]


def test_sigterm_stops_a_worker_and_leaves_the_queue_to_others(tmp_path, configs, cache_dir, processes):
    db = tmp_path / "w.db"
    queued = arena("run", "-a", "knockoff", "--seed", "0,1", "--config", configs["slow"], "--device", "cpu",
                   "--db", db, "--enqueue")  # fmt: skip
    assert queued.wait(timeout=DEADLINE) == 0, queued.stderr.read()
    worker = arena("worker", "--db", db, "--cache-dir", cache_dir)
    processes.append(worker)
    wait_for(lambda: rows(db, "SELECT id FROM matches WHERE phase = 'attacking'"), what="a match attacking")
    worker.terminate()
    _, err = worker.communicate(timeout=DEADLINE)
    assert worker.returncode == 143, err
    assert rows(db, "SELECT status FROM matches ORDER BY id") == [("cancelled",), ("queued",)]


def test_a_second_signal_exits_at_once(tmp_path):
    probe = (
        "import os, signal, threading\n"
        "from arena.lifecycle import graceful_stop, stop_requested\n"
        "with graceful_stop():\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    assert stop_requested() == signal.SIGINT\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    threading.Event().wait(60)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=DEADLINE,
    )  # fmt: skip
    assert done.returncode == 130 and "interrupted again" in done.stderr, done.stderr


# -- concurrency ----------------------------------------------------------------------------------
def _build_shared_artifact(root: str, log: str, barrier) -> str:
    import hashlib

    import torch

    from engines.artifacts import ArtifactStore

    def build():
        with open(log, "a") as fh:
            fh.write(f"{os.getpid()}\n")
        torch.manual_seed(0)
        weights = torch.randn(256, 256)
        for _ in range(50):  # some work, so that the others arrive while this one builds
            weights = torch.tanh(weights @ weights.T / 256)
        return {"w": weights}, {"by": os.getpid()}

    torch.set_num_threads(1)
    barrier.wait(timeout=120)
    tensors, meta, _ = ArtifactStore(root).get_or_build("victim", {"shared": 1}, build)
    return hashlib.sha256(tensors["w"].numpy().tobytes()).hexdigest() + f" {meta['by']}"


def test_concurrent_processes_build_an_artifact_once(tmp_path):
    context = multiprocessing.get_context("spawn")
    log = tmp_path / "builds.log"
    with context.Manager() as manager:
        barrier = manager.Barrier(4)
        with context.Pool(4) as pool:
            results = pool.starmap(_build_shared_artifact, [(str(tmp_path / "cache"), str(log), barrier)] * 4)
    assert len(log.read_text().splitlines()) == 1  # built once ...
    assert len(set(results)) == 1  # ... and every process read the same, whole file
    assert not list((tmp_path / "cache").rglob(".tmp-*"))


def test_four_workers_share_one_database(tmp_path, cache_dir, processes):
    db = tmp_path / "w.db"
    engine = open_database(str(db))
    env = MatchEnvironment(cache_root=cache_dir)
    _, (warm,) = runner.enqueue(engine, [tiny_spec(query_budget=30)])
    assert runner.run_match(engine, warm, env) == "done"  # the shared victim is in the cache now
    runner.enqueue(engine, [tiny_spec(query_budget=31 + i) for i in range(12)])
    engine.dispose()
    workers = [arena("worker", "--db", db, "--cache-dir", cache_dir) for _ in range(4)]
    processes.extend(workers)
    errors = [w.communicate(timeout=DEADLINE)[1] for w in workers]
    assert [w.returncode for w in workers] == [0] * 4, errors
    assert not any("locked" in e for e in errors)
    assert rows(db, "SELECT status, COUNT(*), SUM(attempts) FROM matches GROUP BY status") == [("done", 13, 13)]
    per_match = rows(db, 'SELECT match_id, COUNT(*), COUNT(DISTINCT "index") FROM checkpoints GROUP BY match_id')
    assert len(per_match) == 13 and all(count == distinct == 3 for _, count, distinct in per_match)
    played_by = {pid for (pid,) in rows(db, "SELECT DISTINCT pid FROM matches WHERE id > ?", warm)}
    assert len(played_by) >= 1


# -- strict input ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args, message",
    [
        (["--seed", "1,,2"], "--seed has an empty item"),
        (["--seed", "1,2,"], "--seed has an empty item"),
        (["--seed", ","], "--seed needs a value"),
        (["--seed", "1,1"], "--seed lists 1 twice"),
        (["--seed", "1_0"], "--seed takes whole numbers"),
        (["--label", "soft,soft"], "--label lists 'soft' twice"),
        (["--budget", "40,40"], "--budget lists 40 twice"),
        (["--retries", "-1"], "--retries must be 0 or more"),
    ],
)
def test_sloppy_lists_are_refused(cli, tmp_path, args, message):
    db = tmp_path / "never.db"
    result = cli("run", "-a", "knockoff", *args, "--db", db)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not db.exists()


@pytest.mark.parametrize(
    "toml, message",
    [
        ("seed = 1\n[grid]\nseed = [2, 3]\n", "'seed' is set both at top level and in [grid]"),
        ("[grid]\nseed = [2, 2]\n", "[grid] seed lists 2 twice"),
        ("[grid]\nattacker = ['knockoff', 'dfme']\n", "'attacker' is set both at top level and in [grid]"),
        ("[grid]\nseed = [1, 2]\n[[matches]]\nseed = 4\n", "'seed' is set both in [[matches]] and in [grid]"),
        ("[[matches]]\nseed = 4\n[[matches]]\nseed = 4\n", "matches 1 and 2 of this batch are the same match"),
    ],
)
def test_conflicting_config_files_are_refused(cli, tmp_path, toml, message):
    config = tmp_path / "c.toml"
    config.write_text('attacker = "knockoff"\n' + toml)
    result = cli("run", "--config", config, "--db", tmp_path / "never.db")
    assert result.exit_code == 2 and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "never.db").exists()


def test_the_command_line_overrides_every_matches_entry():
    file = {"attacker": "knockoff", "matches": [{"seed": 4, "label_mode": "hard"}, {"seed": 5}]}
    specs = build_specs(file, {"seed": parse_axis("seed", "7")}, {"device": "cpu"})
    assert [(s.seed, s.label_mode) for s in specs] == [(7, "hard"), (7, "soft")]
