"""How fast a lost worker is noticed and how fast a signal stops a batch.

    .venv/bin/python benchmarks/liveness.py            # ~3 min: default heartbeat settings
    .venv/bin/python benchmarks/liveness.py --write    # also rewrite the `liveness` section of docs/results.md

1. kill -9: an `arena worker` plays a slow tiny KnockoffNets match; after its first
   checkpoint the worker is killed with SIGKILL. Every 0.5 s this script then calls
   `storage.liveness.reap_lost_matches` (what every `arena` command does first) until the
   match is no longer `running`, and reports the seconds from the kill to that moment, with
   the settings in force ($ARENA_HEARTBEAT_SECONDS / $ARENA_HEARTBEAT_TIMEOUT, defaults 5/45).
2. stop: `arena run` on a 12-match grid (seeds 0..11); once the first match is attacking (or,
   for the last row, while its victim trains), SIGTERM or SIGINT is sent and the seconds until
   the process exits are reported, with its exit status and the statuses left in the database.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._results import write_section  # noqa: E402

SLOW = """\
query_budget = 40
checkpoints = 3
device = "cpu"
attacker = "knockoff"
attacker_params = {{ epochs = 1, min_steps = 3000 }}
[victim]
train = {{ epochs = {epochs}, batch_size = 128, lr = 0.05 }}
"""


def arena(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ARENA_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "arena.cli", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def query(db: Path, sql: str) -> list[tuple]:
    if not db.exists():
        return []
    con = sqlite3.connect(db, timeout=30)
    try:
        return con.execute(sql).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()


def wait_for(condition, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit("timed out")
        time.sleep(0.05)


def kill_9(folder: Path, cache: Path) -> dict:
    from storage import liveness, open_database

    db, config = folder / "k.db", folder / "slow.toml"
    config.write_text(SLOW.format(epochs=1))
    queued = arena("run", "--config", str(config), "--db", str(db), "--enqueue")
    queued.communicate(timeout=600)
    worker = arena("worker", "--db", str(db), "--cache-dir", str(cache))
    wait_for(lambda: query(db, "SELECT COUNT(*) FROM checkpoints")[0][0] >= 1)
    worker.kill()
    killed = time.monotonic()
    worker.wait()
    engine = open_database(str(db))
    while query(db, "SELECT status FROM matches") == [("running",)]:
        liveness.reap_lost_matches(engine)
        if query(db, "SELECT status FROM matches") != [("running",)]:
            break
        time.sleep(0.5)
    seconds = time.monotonic() - killed
    engine.dispose()
    (status,) = query(db, "SELECT status FROM matches")[0]
    kept = query(db, "SELECT COUNT(*) FROM checkpoints")[0][0]
    return {
        "interval": liveness.heartbeat_interval(),
        "timeout": liveness.heartbeat_timeout(),
        "seconds": seconds,
        "status": status,
        "kept": kept,
    }


def stop(folder: Path, cache: Path, signum: int, when: str) -> dict:
    db, config = folder / f"stop-{signum}-{when}.db", folder / f"grid-{when}.toml"
    config.write_text(SLOW.format(epochs=1 if when == "attacking" else 40))
    seeds = ",".join(str(s) for s in range(12)) if when == "attacking" else ",".join(str(100 + s) for s in range(12))
    grid = arena("run", "--seed", seeds, "--config", str(config), "--db", str(db), "--cache-dir", str(cache))
    phase = "attacking" if when == "attacking" else "training victim"
    wait_for(lambda: query(db, f"SELECT id FROM matches WHERE phase = '{phase}'"))
    sent = time.monotonic()
    grid.send_signal(signum)
    grid.communicate(timeout=600)
    seconds = time.monotonic() - sent
    statuses = query(db, "SELECT status, COUNT(*) FROM matches GROUP BY status")
    return {"signal": signal.Signals(signum).name, "when": phase, "seconds": seconds, "rc": grid.returncode,
            "statuses": ", ".join(f"{s} {n}" for s, n in statuses)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="arena-liveness-") as tmp:
        folder = Path(tmp)
        cache = folder / "cache"
        lost = kill_9(folder, cache)
        stops = [
            stop(folder, cache, signal.SIGTERM, "attacking"),
            stop(folder, cache, signal.SIGINT, "attacking"),
            stop(folder, cache, signal.SIGTERM, "training"),
        ]
    lines = [
        f"Liveness and stopping (`benchmarks/liveness.py`; {os.cpu_count()} CPUs, {platform.python_version()}):",
        "",
        "| kill -9 of a worker mid-match | heartbeat every | timeout | seconds until not `running` | then "
        "| checkpoints kept |",
        "|---|---|---|---|---|---|",
        f"| after its first checkpoint | {lost['interval']:g} s | {lost['timeout']:g} s | {lost['seconds']:.1f} "
        f"| {lost['status']} | {lost['kept']} |",
        "",
        "| signal to `arena run` on a 12-match grid | sent while | seconds to exit | exit status | statuses left |",
        "|---|---|---|---|---|",
        *(f"| {s['signal']} | {s['when']} | {s['seconds']:.1f} | {s['rc']} | {s['statuses']} |" for s in stops),
    ]
    markdown = "\n".join(lines)
    print(markdown)
    if args.write:
        print(f"wrote {write_section('liveness', markdown)}")


if __name__ == "__main__":
    main()
