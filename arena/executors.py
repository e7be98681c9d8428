"""Executors: who plays a list of queued matches. `local` plays them here (one at a time, or
N worker processes); `ray` makes each match one Ray task, on this machine or a cluster.

Every executor plays a match with the same `arena.runner.run_match` (`play_one` below), so
results land in the same tables whichever executor played them.

Ray executor:

A task opens the database itself and plays its match with the same `run_match` that local
workers use, so results land in the same tables whichever executor played them. One GPU per
task where the cluster has GPUs, one CPU otherwise. A task that dies (worker crash, node
lost, an exception outside the match) leaves its match `failed` with the error; cancelling
a match (`arena cancel`, or stopping the driver) cancels its task.

Ray is optional: `pip install -e '.[ray]'`. SQLite works for a one-machine Ray; a cluster
needs a database every node reaches (`--db postgresql://...`).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from arena import lifecycle
from engines.errors import ArenaError

POLL_SECONDS = 0.5
STOP_GRACE_SECONDS = 30.0  # after a stop, how long running matches get to record `cancelled`


EXECUTORS = ("local", "ray")


def check_executor(name: str) -> str:
    if name not in EXECUTORS:
        raise ArenaError(f"unknown executor {name!r}; use local or ray", field="executor")
    return name


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ArenaError("the ray executor needs Ray: pip install -e '.[ray]'", field="executor") from None
    return ray


def absolute_db_url(url: str) -> str:
    """Ray workers may start in another folder: make a SQLite path absolute."""
    from storage.engine import resolve_db_url

    url = resolve_db_url(url)
    prefix = "sqlite:///"
    if url.startswith(prefix) and url[len(prefix) :] not in ("", ":memory:") and not url.startswith(prefix + "/"):
        return prefix + str(Path(url[len(prefix) :]).resolve())
    return url


def portable_env(env) -> dict:
    """The match environment with absolute paths, for processes that start elsewhere."""
    paths = ("data_root", "cache_root")
    return {k: (str(Path(v).resolve()) if k in paths else v) for k, v in dataclasses.asdict(env).items()}


def play_in_pool(db_url: str, match_ids: list[int], env, workers: int, on_done=None) -> list[str]:
    """Play `match_ids` in `workers` local processes (spawned: no torch or engine shared by fork)."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    from storage import open_database

    db_url, env_dict = absolute_db_url(db_url), portable_env(env)
    threads = os.environ.get("ARENA_THREADS")
    statuses: dict[int, str] = {}
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        pending = {pool.submit(play_one, db_url, mid, env_dict, threads): mid for mid in match_ids}
        try:
            while pending:
                done, _ = wait(list(pending), timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
                for future in done:
                    mid = pending.pop(future)
                    try:
                        statuses[mid] = future.result()
                    except Exception as exc:  # the worker process broke, not the match
                        engine = open_database(db_url)
                        message = f"worker process failed: {exc.__class__.__name__}: {exc}"
                        statuses[mid] = mark_broken(engine, mid, "failed", message)
                        engine.dispose()
                    if on_done is not None:
                        on_done(mid, statuses[mid])
                if pending and lifecycle.stop_requested():
                    for future in pending:
                        future.cancel()  # not started yet: never starts
                    _cancel_in_database(db_url, list(pending.values()))  # running: stops at its next poll
                    wait(list(pending), timeout=STOP_GRACE_SECONDS)
                    break
        except BaseException:
            _cancel_in_database(db_url, list(pending.values()))
            for future in pending:
                future.cancel()
            raise
    return _final_statuses(db_url, match_ids, statuses)


def check_ray_address(address: str) -> None:
    """Refuse an unreachable cluster at once (Ray itself keeps retrying for minutes)."""
    import socket

    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ArenaError(
            f"malformed Ray address {address!r}; use HOST:PORT, ray://HOST:PORT or auto", field="ray_address"
        )
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise ArenaError(
            f"cannot reach Ray at {address} ({exc.strerror or exc.__class__.__name__}); check --ray-address",
            field="ray_address",
        ) from None


def connect(address: str | None) -> None:
    """Join the cluster at `address`, or start a one-machine instance on the loopback address."""
    ray = _import_ray()
    if address:
        check_ray_address(address)
    if ray.is_initialized():
        return
    local = {} if address else {"_node_ip_address": "127.0.0.1"}  # a local instance stays on this machine
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False, **local)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = address or "a new local instance"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise ArenaError(f"cannot start Ray at {where}: {reason}; check --ray-address", field="ray_address") from None


def play_one(db_url: str, match_id: int, env: dict, threads: str | None) -> str:
    """Play one queued match in this process with its own database engine (a pool or Ray task)."""
    if threads:
        os.environ["ARENA_THREADS"] = threads
    from arena import runner
    from engines.match import MatchEnvironment
    from storage import open_database

    runner.apply_thread_setting()
    engine = open_database(db_url)
    try:
        return runner.run_match(engine, match_id, MatchEnvironment(**env))
    finally:
        engine.dispose()


def play_on_ray(db_url: str, match_ids: list[int], env, address: str | None = None, on_done=None) -> list[str]:
    """Play `match_ids` as Ray tasks; returns their final statuses in the same order."""
    ray = _import_ray()
    from storage import open_database, queries

    connect(address)
    db_url = absolute_db_url(db_url)
    env_dict = portable_env(env)
    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    task = ray.remote(play_one).options(num_cpus=0 if gpus else 1, num_gpus=gpus, max_retries=0)
    threads = os.environ.get("ARENA_THREADS")
    pending = {task.remote(db_url, mid, env_dict, threads): mid for mid in match_ids}
    statuses: dict[int, str] = {}
    engine = open_database(db_url)
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_SECONDS)
            for ref in ready:
                mid = pending.pop(ref)
                statuses[mid] = _outcome(ray, ref, mid, engine, queries)
                if on_done is not None:
                    on_done(mid, statuses[mid])
            if pending and lifecycle.stop_requested():
                _cancel_in_database(db_url, list(pending.values()))  # running tasks stop at their next poll
                for ref in pending:
                    ray.cancel(ref, force=False)  # queued tasks never start
                ray.wait(list(pending), num_returns=len(pending), timeout=STOP_GRACE_SECONDS)
                break
            _cancel_requested(ray, pending, engine, queries)
    except BaseException:  # an error in the driver itself: stop every task it started
        _cancel_in_database(db_url, list(pending.values()))
        for ref in pending:
            ray.cancel(ref, force=False)
        raise
    finally:
        engine.dispose()
    return _final_statuses(db_url, match_ids, statuses)


def _cancel_in_database(db_url: str, match_ids: list[int]) -> None:
    from storage import open_database, queries

    engine = open_database(db_url)
    for mid in match_ids:
        queries.request_cancel(engine, mid)
    engine.dispose()


def _final_statuses(db_url: str, match_ids: list[int], known: dict[int, str]) -> list[str]:
    """Statuses in `match_ids` order; those not reported by a task (a stop) read from the database."""
    missing = [mid for mid in match_ids if mid not in known]
    if missing:
        from storage import open_database, queries

        engine = open_database(db_url)
        known = {**known, **queries.statuses(engine, missing)}
        engine.dispose()
    return [known[mid] for mid in match_ids]


def _outcome(ray, ref, match_id: int, engine, queries) -> str:
    try:
        return ray.get(ref)
    except Exception as exc:  # the task itself broke: record it on the match
        if isinstance(exc, ray.exceptions.TaskCancelledError):
            message, status = "cancelled: its Ray task was cancelled", "cancelled"
        else:
            cause = getattr(exc, "cause", None) or exc
            message, status = f"Ray task failed: {cause.__class__.__name__}: {_one_line(cause)}", "failed"
        return mark_broken(engine, match_id, status, message)


def _one_line(exc: BaseException) -> str:
    """The first informative lines of an error (no help links), joined on one line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip() and "://" not in line]
    return " ".join(lines[:3])[:300]


def mark_broken(engine, match_id: int, status: str, message: str) -> str:
    """Record that the process playing a match died or was cancelled before the match could say so."""
    from storage import queries
    from storage.tables import utcnow

    match = queries.get_match(engine, match_id)
    if match is not None and match.status in ("queued", "running"):
        queries.update_match(engine, match_id, status=status, phase=status, error=message, finished_at=utcnow())
        return status
    return match.status if match is not None else status


def _cancel_requested(ray, pending: dict, engine, queries) -> None:
    """A queued match cancelled in the database: cancel its task before it starts. (A running
    match notices the request itself and ends `cancelled`.)"""
    statuses = queries.statuses(engine, list(pending.values()))
    for ref, mid in list(pending.items()):
        if statuses.get(mid) == "cancelled":
            ray.cancel(ref, force=False)
