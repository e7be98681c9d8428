"""Concurrent workers on one SQLite database: no lost rows, no "database is locked".

    .venv/bin/python benchmarks/concurrency.py                 # 8 workers, 48 tiny matches (a few minutes)
    .venv/bin/python benchmarks/concurrency.py --workers 4 --matches 12 --write

What it does: trains one tiny victim into a fresh artifact cache (so every match shares it),
queues N tiny KnockoffNets matches (distinct budgets, same victim) with `arena run --enqueue`,
starts W `arena worker` processes at once on the same database and waits for them. It then
counts what the database holds: matches by status, checkpoint rows against the expected
count, matches played more than once, distinct worker pids, and error lines in the workers'
stderr ("database is locked" counted separately). Prints a markdown table; --write also
rewrites the `concurrency` section of docs/results.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._results import write_section  # noqa: E402

CHECKPOINTS = 3
CONFIG = f"""\
checkpoints = {CHECKPOINTS}
device = "cpu"
attacker = "knockoff"
attacker_params = {{ epochs = 1, min_steps = 10 }}
[victim]
train = {{ epochs = 1, batch_size = 128, lr = 0.05 }}
"""


def arena(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ARENA_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "arena.cli", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def finished(process: subprocess.Popen, what: str) -> str:
    _, err = process.communicate(timeout=1800)
    if process.returncode != 0:
        raise SystemExit(f"{what} failed ({process.returncode}): {err[-2000:]}")
    return err


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--matches", type=int, default=48)
    parser.add_argument("--write", action="store_true", help="rewrite the section of docs/results.md")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="arena-concurrency-") as tmp:
        folder = Path(tmp)
        db, cache, config = folder / "arena.db", folder / "cache", folder / "tiny.toml"
        config.write_text(CONFIG)
        common = ["--config", str(config), "--db", str(db), "--cache-dir", str(cache)]
        finished(arena("run", "--budget", "30", *common, "--format", "csv"), "warm-up match (builds the victim)")
        budgets = ",".join(str(31 + i) for i in range(args.matches))
        finished(arena("run", "--budget", budgets, *common, "--enqueue"), "enqueue")

        started = time.perf_counter()
        workers = [arena("worker", "--db", str(db), "--cache-dir", str(cache)) for _ in range(args.workers)]
        outcomes = [(w.communicate(timeout=3600)[1], w.returncode) for w in workers]
        wall = time.perf_counter() - started

        con = sqlite3.connect(db)
        played = "WHERE id > 1"  # the warm-up match is not part of the run
        statuses = dict(con.execute(f"SELECT status, COUNT(*) FROM matches {played} GROUP BY status").fetchall())
        rows = con.execute(f"SELECT COUNT(*) FROM checkpoints WHERE match_id IN (SELECT id FROM matches {played})")
        checkpoint_rows = rows.fetchone()[0]
        replayed = con.execute(f"SELECT COUNT(*) FROM matches {played} AND attempts != 1").fetchone()[0]
        pids = con.execute(f"SELECT COUNT(DISTINCT pid) FROM matches {played}").fetchone()[0]
        con.close()

    stderr = "\n".join(err for err, _ in outcomes)
    locked = sum("database is locked" in line for line in stderr.splitlines())
    error_lines = sum(line.startswith(("error", "Traceback")) for line in stderr.splitlines())
    bad_exits = sum(code != 0 for _, code in outcomes)
    done = statuses.get("done", 0)
    table = [
        "| workers | matches queued | done | other statuses | checkpoint rows (expected) | played twice "
        "| workers that played | 'database is locked' | error lines | non-zero exits | wall s | matches/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        f"| {args.workers} | {args.matches} | {done} "
        f"| {', '.join(f'{k} {v}' for k, v in statuses.items() if k != 'done') or '-'} "
        f"| {checkpoint_rows} ({args.matches * CHECKPOINTS}) | {replayed} | {pids} | {locked} | {error_lines} "
        f"| {bad_exits} | {wall:.1f} | {done / wall:.2f} |",
    ]
    markdown = "\n".join(
        [
            f"Concurrent workers on one SQLite database (`benchmarks/concurrency.py --workers {args.workers} "
            f"--matches {args.matches}`; {os.cpu_count()} CPUs, {platform.python_version()}; tiny KnockoffNets "
            f"matches sharing one cached victim, {CHECKPOINTS} checkpoints each):",
            "",
            *table,
        ]
    )
    print(markdown)
    if args.write:
        print(f"wrote {write_section('concurrency', markdown)}")
    lost = done != args.matches or checkpoint_rows != args.matches * CHECKPOINTS
    if lost or locked or bad_exits:
        raise SystemExit("FAILED: rows lost, a lock error or a worker failed")


if __name__ == "__main__":
    main()
