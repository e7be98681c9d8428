"""Tournaments at scale: executors, tournament overhead and the defence leaderboard's speed.

    python benchmarks/tournament.py            # all three tables (about 10 minutes on 2 cores)
    python benchmarks/tournament.py --only leaderboard

1. A 2-defender x 3-attacker x 3-seed tournament on mnist5k with tiny budgets, played once
   with local worker processes and once with the Ray executor (a fresh one-node Ray): wall
   time of each, and whether the two databases hold the same numbers.
2. Tournament overhead: the same matches played through `arena tournament` and through
   `arena run` (one grid, one by one in one process), with a warm artifact cache so that
   only the bookkeeping differs.
3. `arena leaderboard --by defence` on a database of 10,000 done matches (synthetic rows of
   the real schema), timed as a user runs it: a fresh process, imports included.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPEC = textwrap.dedent("""
    name = "bench"
    seeds = [0, 1, 2]
    defenders = ["undefended", { name = "misleader", params = { epochs = 1, batch_size = 32, train_limit = 96 } }]
    attackers = [
        { name = "knockoff", budget = 60, params = { epochs = 2, min_steps = 10 } },
        { name = "argmax-clone", budget = 60, params = { epochs = 2, min_steps = 10 } },
        { name = "dfme", budget = 234, params = { batch_size = 16, generator_width = 8, nz = 16 } },
    ]
    [match]
    checkpoints = 4
    device = "cpu"
    [match.victim.train]
    epochs = 2
    batch_size = 128
    lr = 0.05
""")
COMPARED = (
    "defender, attacker, label_mode, seed, status, victim_accuracy, defender_accuracy, clone_accuracy, "
    "best_clone_accuracy, fidelity_served, fidelity_victim, queries_used"
)


def arena(*args: str, env: dict | None = None) -> float:
    """Run `arena ARGS` in a fresh process; returns wall seconds (raises on failure)."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "arena.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "ARENA_THREADS": "1", **(env or {})})  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"arena {' '.join(args)} failed: {done.stderr.strip()[-500:]}")
    return time.perf_counter() - started


def rows(db: Path) -> list[tuple]:
    return sqlite3.connect(db).execute(f"SELECT {COMPARED} FROM matches ORDER BY {COMPARED}").fetchall()


def executors(work: Path) -> list[str]:
    spec = work / "t.toml"
    spec.write_text(SPEC)
    cache = str(work / "cache")
    arena("tournament", str(spec), "--dry-run", "--cache-dir", cache)  # prepares the data set cache
    out = ["| executor | matches | wall s | rows equal to local |", "|---|---|---|---|"]
    local_db, ray_db = work / "local.db", work / "ray.db"
    seconds = arena("tournament", str(spec), "--db", str(local_db), "--cache-dir", cache + "-local", "--workers", "2")
    out.append(f"| local, 2 worker processes | {len(rows(local_db))} | {seconds:.1f} | - |")
    seconds = arena("tournament", str(spec), "--db", str(ray_db), "--cache-dir", cache + "-ray", "--executor", "ray")
    same = rows(ray_db) == rows(local_db)
    out.append(f"| ray (one node, 2 CPUs, started by the command) | {len(rows(ray_db))} | {seconds:.1f} | {same} |")
    return out


def overhead(work: Path, repeats: int = 2) -> list[str]:
    spec = work / "t.toml"
    spec.write_text(SPEC)
    cache = str(work / "warm")
    arena("tournament", str(spec), "--db", str(work / "warmup.db"), "--cache-dir", cache)  # every artifact built
    grid = work / "grid.toml"  # the same 18 matches as an `arena run` grid
    grid.write_text(_as_run_grid())
    times: dict[str, list[float]] = {"arena run (grid)": [], "arena tournament": []}
    for attempt in range(repeats):
        times["arena run (grid)"].append(arena("run", "--config", str(grid), "--db", str(work / f"r{attempt}.db"),
                                               "--cache-dir", cache))  # fmt: skip
        times["arena tournament"].append(arena("tournament", str(spec), "--db", str(work / f"t{attempt}.db"),
                                               "--cache-dir", cache))  # fmt: skip
    base, tour = min(times["arena run (grid)"]), min(times["arena tournament"])
    return [
        f"| path | wall s (best of {repeats}) | overhead |",
        "|---|---|---|",
        f"| arena run (grid, 18 matches) | {base:.1f} | - |",
        f"| arena tournament (18 matches) | {tour:.1f} | {100 * (tour - base) / base:+.1f}% |",
    ]


def _as_run_grid() -> str:
    """SPEC's matches as an `arena run --config` grid (same resolved specs)."""
    return textwrap.dedent("""
        checkpoints = 4
        device = "cpu"
        [victim.train]
        epochs = 2
        batch_size = 128
        lr = 0.05
        [grid]
        seed = [0, 1, 2]
        [[matches]]
        defender = "undefended"
        attacker = "knockoff"
        query_budget = 60
        attacker_params = { epochs = 2, min_steps = 10 }
        [[matches]]
        defender = "undefended"
        attacker = "argmax-clone"
        query_budget = 60
        attacker_params = { epochs = 2, min_steps = 10 }
        [[matches]]
        defender = "undefended"
        attacker = "dfme"
        query_budget = 234
        attacker_params = { batch_size = 16, generator_width = 8, nz = 16 }
        [[matches]]
        defender = "misleader"
        defender_params = { epochs = 1, batch_size = 32, train_limit = 96 }
        attacker = "knockoff"
        query_budget = 60
        attacker_params = { epochs = 2, min_steps = 10 }
        [[matches]]
        defender = "misleader"
        defender_params = { epochs = 1, batch_size = 32, train_limit = 96 }
        attacker = "argmax-clone"
        query_budget = 60
        attacker_params = { epochs = 2, min_steps = 10 }
        [[matches]]
        defender = "misleader"
        defender_params = { epochs = 1, batch_size = 32, train_limit = 96 }
        attacker = "dfme"
        query_budget = 234
        attacker_params = { batch_size = 16, generator_width = 8, nz = 16 }
    """)


def leaderboard(work: Path, matches: int = 10_000) -> list[str]:
    from storage import open_database

    db = work / "big.db"
    open_database(str(db)).dispose()
    _fill(db, matches)
    seconds = [arena("leaderboard", "--by", "defence", "--db", str(db), "--format", "json") for _ in range(3)]
    started = time.perf_counter()
    from storage.ranking import defence_ranking

    engine = open_database(str(db), write=False, create=False)
    ranked = defence_ranking(engine)
    query = time.perf_counter() - started
    return [
        "| database | defences ranked | query in process s | `arena leaderboard --by defence` wall s (best / worst of 3) |",
        "|---|---|---|---|",
        f"| {matches:,} done matches, {12 * matches:,} checkpoints | {len(ranked)} | {query:.2f} | "
        f"{min(seconds):.2f} / {max(seconds):.2f} |",
    ]


def _fill(db: Path, matches: int) -> None:
    """Synthetic done matches with realistic JSON columns (a resolved spec, details with facts)."""
    rng = random.Random(0)
    defenders = [f"defence-{i}" for i in range(25)]
    attackers = [("knockoff", 1200), ("dfme", 40000), ("maze", 60000), ("argmax-clone", 1200)]
    con = sqlite3.connect(db)
    spec = {"victim": {"arch": "lenet5", "train": {"epochs": 40, "batch_size": 64, "lr": 0.05}}, "pool": "in"}
    details = {"split": {"split_seed": 20250603, "sizes": [2400, 400, 1000, 1200]}, "victim": {"epochs": 40},
               "facts": {"attacker": {"base_attack": None, "data_free": False, "num_classes": 10},
                         "defender": {"utility_tolerance": 0.015}}}  # fmt: skip
    match_rows, checkpoint_rows = [], []
    for index in range(matches):
        defender = defenders[index % len(defenders)]
        attacker, budget = attackers[(index // len(defenders)) % len(attackers)]
        label = ("soft", "hard")[(index // 100) % 2]
        seed = index // 200
        clone = rng.uniform(0.1, 0.95)
        config = json.dumps({**spec, "defender": defender, "defender_params": {"eps": 0.5}, "attacker": attacker,
                             "attacker_params": {"epochs": 30}, "seed": seed, "query_budget": budget})  # fmt: skip
        match_rows.append((index + 1, "bench", "done", defender, attacker, "mnist5k", "in-distribution", label, budget,
                           seed, "cpu", config, "{}", json.dumps(details), "2026-01-01 00:00:00", "done", 0, 0,
                           0.98, 0.97, clone, clone, clone, clone, budget, 0, 1, 0))  # fmt: skip
        for step in range(12):
            checkpoint_rows.append((index + 1, step, budget * (step + 1) // 12, clone, clone, clone, clone, 1.0, 0.1,
                                    "2026-01-01 00:00:00"))  # fmt: skip
    con.executemany(
        "INSERT INTO matches (id, batch_id, status, defender, attacker, dataset, pool, label_mode, query_budget, "
        "seed, device, config_json, provenance_json, details_json, created_at, phase, progress_done, progress_total, "
        "victim_accuracy, defender_accuracy, clone_accuracy, best_clone_accuracy, fidelity_served, fidelity_victim, "
        "queries_used, cancel_requested, retries, attempts) VALUES (" + ",".join("?" * 28) + ")",
        match_rows,
    )
    con.executemany(
        'INSERT INTO checkpoints (match_id, "index", queries_used, clone_accuracy, best_clone_accuracy, '
        "fidelity_served, fidelity_victim, wall_seconds, serving_seconds, created_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
        checkpoint_rows,
    )
    con.commit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["executors", "overhead", "leaderboard"])
    args = parser.parse_args()
    sections = {"executors": executors, "overhead": overhead, "leaderboard": leaderboard}
    with tempfile.TemporaryDirectory(prefix="arena-bench-") as tmp:
        for name, section in sections.items():
            if args.only in (None, name):
                work = Path(tmp) / name
                work.mkdir()
                print(f"\n### {name}\n")
                print("\n".join(section(work)), flush=True)


if __name__ == "__main__":
    main()
