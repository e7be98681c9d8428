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
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _rss_mb(pid: int) -> float:
    """Resident memory of process `pid` in MB (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds process `pid` has used (None once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def default_run(args: list[str] = ()) -> tuple[list[dict], float, float, list[dict]]:
    """Play `arena run` (no options: the default lineup) in a fresh folder, so the victim and
    the defences train from scratch. Returns the result rows, the wall time, the peak resident
    memory and the phase profile (see `phase_profile`)."""
    with tempfile.TemporaryDirectory() as folder:
        events = Path(folder) / "events.jsonl"
        samples: list[tuple[float, float, float | None]] = []  # (time.time(), RSS MB, CPU s), every 0.1 s
        started, started_epoch = time.perf_counter(), time.time()
        proc = subprocess.Popen(
            [sys.executable, "-m", "arena.cli", "run", "--format", "json", "--events", str(events), *args],
            cwd=folder,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                samples.append((time.time(), _rss_mb(proc.pid), _cpu_seconds(proc.pid)))
                done.wait(0.1)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        stdout, stderr = proc.communicate()
        ended_epoch = time.time()
        done.set()
        sampler.join()
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            raise SystemExit(f"arena run failed ({proc.returncode}): {stderr.strip()[-2000:]}")
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        lines = [json.loads(line) for line in events.read_text().splitlines() if line.strip()]
        rows = json.loads(stdout)
        profile = phase_profile(lines, rows, samples, started_epoch, ended_epoch)
        return rows, wall, peak_mb, profile


def phase_profile(events: list[dict], rows: list[dict], samples, started: float, ended: float) -> list[dict]:
    """Wall time, CPU time and peak resident memory per phase, from the run's JSON-lines
    events. (CPU seconds depend less on other processes' load than wall seconds do.)

    A phase lasts from its `phase` event to the next event that starts another phase (or
    the process's end). Process start-up and what follows the last match (printing results)
    are phases of their own. Checkpoint scoring is timed apart (`scoring_seconds`)."""
    labels = {r["id"]: f"{r['defender']} x {r['attacker']} {r['label_mode']}" for r in rows}
    marks = [(started, "start-up (imports, data, validation)")]
    for event in events:
        if event["event"] != "phase":
            continue
        match = labels.get(event["match_id"], f"match {event['match_id']}")
        name = {
            "loading data": f"{match}: loading data",
            "training victim": "victim training",
            "preparing defender": f"{match}: defender"
            + (" (misleader training or cache)" if "misleader" in event.get("detail", "") else ""),
            "attacking": f"{match}: attack (incl. checkpoint scoring)",
        }.get(event["phase"], f"{match}: {event['phase']}")
        marks.append((event["time"], name))
    marks.append((ended, None))
    out = []
    for (begin, name), (end, _) in zip(marks, marks[1:]):
        rss = [mb for t, mb, _ in samples if begin <= t <= end]
        cpu = [c for t, _, c in samples if begin <= t <= end and c is not None]
        scored = sum(1 for e in events if e["event"] == "checkpoint" and begin <= e["time"] < end)
        out.append(
            {
                "phase": name,
                "seconds": end - begin,
                "peak_mb": max(rss, default=0.0),
                "cpu_seconds": cpu[-1] - cpu[0] if cpu else 0.0,
                "checkpoints": scored,
            }
        )
    return out


def scoring_seconds(repeats: int = 20) -> float:
    """Seconds of one checkpoint scoring (CloneScorer on mnist5k's test split, LeNet-5 clone)."""
    import torch

    from engines.data import load_dataset
    from engines.metrics import CloneScorer
    from engines.models import build_model

    with tempfile.TemporaryDirectory() as folder:
        splits = load_dataset("mnist5k", str(Path(folder) / "data"), str(Path(folder) / "cache"), False)
    clone = build_model("lenet5", 1, 10, splits.mean, splits.std)
    labels = splits.test.labels
    scorer = CloneScorer(splits.test, labels, labels, torch.device("cpu"))
    scorer(clone)
    started = time.perf_counter()
    for _ in range(repeats):
        scorer(clone)
    return (time.perf_counter() - started) / repeats


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
        load_before = os.getloadavg()[0]
        rows, wall, peak_mb, profile = default_run()
        load_after = os.getloadavg()
        lines += [
            "### Default `arena run` (mnist5k, from an empty cache)",
            "",
            f"Wall time {wall / 60:.1f} min (target <= 10 min before MISLEADER, <= 15 min after), "
            f"peak resident memory {peak_mb / 1024:.2f} GB (target <= 3 GB). Load average (2 cores): "
            f"{load_before:.1f} at the start; {load_after[0]:.1f} / {load_after[1]:.1f} / {load_after[2]:.1f} "
            "(1 / 5 / 15 min) at the end.",
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
        score = scoring_seconds()
        checkpoints = sum(phase["checkpoints"] for phase in profile)
        lines += [
            "",
            f"Where the time goes (phases from the run's `--events` stream; peak RSS sampled every 0.1 s). "
            f"Checkpoint scoring, timed apart: {1000 * score:.0f} ms per checkpoint x {checkpoints} checkpoints "
            f"= {score * checkpoints:.1f} s in all, inside the attack phases.",
            "",
            "| phase | wall s | share | CPU s | peak RSS MB |",
            "|---|---|---|---|---|",
        ]
        for phase in profile:
            lines.append(
                f"| {phase['phase']} | {phase['seconds']:.1f} | {100 * phase['seconds'] / wall:.0f}% | "
                f"{phase['cpu_seconds']:.1f} | {phase['peak_mb']:.0f} |"
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
