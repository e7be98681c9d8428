"""Spine benchmark: the default `arena run` (wall time, peak memory, results) and the
oracle's overhead against a bare model call.

    .venv/bin/python benchmarks/spine.py            # full: plays the default lineup from scratch
    .venv/bin/python benchmarks/spine.py --skip-run # oracle overhead only

Prints markdown tables and writes the "spine" section of docs/results.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def default_run() -> tuple[list[dict], float, float]:
    """Play `arena run` with no options in a fresh folder (victim trained from scratch)."""
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "arena.cli", "run", "--format", "json"],
            cwd=folder,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            raise SystemExit(f"arena run failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        return json.loads(proc.stdout), wall, peak_mb


def oracle_overhead(batch: int = 256, repeats: int = 300) -> dict:
    import torch

    from engines.defenders.base import DefenderContext
    from engines.defenders.undefended import Undefended
    from engines.models import build_model
    from engines.oracle import Oracle

    torch.manual_seed(0)
    device = torch.device("cpu")
    model = build_model("lenet5", 1, 10, (0.1307,), (0.3081,)).eval()
    defender = Undefended(
        Undefended.Params(),
        DefenderContext(victim=model, victim_key={}, splits=None, device=device, store=None, seed=0),
    )
    x = torch.rand(batch, 1, 32, 32)

    def bare():
        with torch.inference_mode():
            model(x)

    oracle = Oracle(defender.serve, batch * (repeats * 10 + 100), "soft", 10, (1, 32, 32), device)
    timings = {}
    for name, fn in (("bare model(x)", bare), ("oracle.query soft", lambda: oracle.query(x))):
        for _ in range(20):
            fn()
    # interleave the two to cancel drift; best of 5 rounds of `repeats` calls each
    rounds = {"bare model(x)": [], "oracle.query soft": []}
    for _ in range(5):
        for name, fn in (("bare model(x)", bare), ("oracle.query soft", lambda: oracle.query(x))):
            started = time.perf_counter()
            for _ in range(repeats):
                fn()
            rounds[name].append((time.perf_counter() - started) / repeats)
    for name, values in rounds.items():
        timings[name] = min(values)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-run", action="store_true", help="only measure the oracle overhead")
    parser.add_argument(
        "--oracle-threads",
        type=int,
        default=1,
        help="torch threads for the overhead timing (1 keeps it stable on a shared machine)",
    )
    args = parser.parse_args()
    import torch

    default_threads = torch.get_num_threads()

    lines = [
        f"Command: `ARENA_THREADS={os.environ.get('ARENA_THREADS', default_threads)} .venv/bin/python benchmarks/spine.py`; {platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}; `arena run` with {os.environ.get('ARENA_THREADS', default_threads)} torch "
        "thread(s) (set with ARENA_THREADS).",
        "",
    ]
    if not args.skip_run:
        rows, wall, peak_mb = default_run()
        lines += [
            "### Default `arena run` (mnist5k, from an empty cache)",
            "",
            f"Wall time {wall / 60:.1f} min (target <= 10 min before MISLEADER, <= 15 min after), "
            f"peak resident memory {peak_mb / 1024:.2f} GB (target <= 3 GB).",
            "",
            "| defender | attacker | label | budget | victim acc | defender acc | clone acc | fidelity (served) | fidelity (victim) | queries/s | time s |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            pct = lambda v: "-" if v is None else f"{100 * v:.1f}%"
            lines.append(
                f"| {r['defender']} | {r['attacker']} | {r['label_mode']} | {r['query_budget']} | "
                f"{pct(r['victim_accuracy'])} | {pct(r['defender_accuracy'])} | {pct(r['clone_accuracy'])} | "
                f"{pct(r['fidelity_served'])} | {pct(r['fidelity_victim'])} | "
                f"{r['queries_used'] / r['wall_seconds']:.0f} | {r['wall_seconds']:.0f} |"
            )
        lines.append("")
    torch.set_num_threads(args.oracle_threads)
    timings = oracle_overhead()
    bare, served = timings["bare model(x)"], timings["oracle.query soft"]
    lines += [
        f"### Oracle overhead (LeNet-5, batch 256, CPU, {args.oracle_threads} thread(s), best of 5 x 300 calls)",
        "",
        "| path | ms per batch | images/s |",
        "|---|---|---|",
    ]
    for name, value in timings.items():
        lines.append(f"| {name} | {1000 * value:.3f} | {256 / value:,.0f} |")
    lines += ["", f"Oracle overhead: {100 * (served / bare - 1):+.1f}% (target <= 10%)."]
    text = "\n".join(lines)
    print(text)
    from benchmarks._results import write_section

    write_section("spine", "## Arena spine\n\n" + text)


if __name__ == "__main__":
    main()
