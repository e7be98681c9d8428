"""Every defence in the arena against the extraction attacks on mnist5k, 3 seeds: the table the
MISLEADER paper's Table 1 would be on this data, played through the arena's own runner.

    ARENA_THREADS=1 .venv/bin/python benchmarks/comparison.py --workers 2     # full grid
    ARENA_THREADS=1 .venv/bin/python benchmarks/comparison.py --quick         # smoke run, tiny budgets
    ... --report-only                 # tables from the database, plays nothing
    ... --defenders edm,dnf           # a subset of the registered defences (always with undefended)

Defences: every registered defender at its default parameters (undefended, misleader and its
ablations and extensions, the output-side defences, the training-time defences EDM, MeCo, ACT
and DNF: whatever is registered when the script runs). Attacks: KnockoffNets soft and hard,
DFME, MAZE, DFMS-HL and DFMS-SL. Every number is a leaderboard row of the database (default
/tmp/arena-bench-comparison/comparison.db): `arena leaderboard --db ...` and
`arena leaderboard --by defence --db ...` read the same matches.

Resumable: a match whose resolved spec is already `done` is never played again, so a run cut
short continues where it stopped, and a new defence adds only its own matches. Order: seed 0
for every defence first, then seed 1, then seed 2, so a run cut short leaves whole seeds.

Budgets (CPU scale; the grid is sized to finish within 2 hours on 2 cores with 2 workers):
the attacks' budgets below are far under their papers' (millions of queries for the data-free
attacks), so the data-free columns compare defences at a small budget, not at the attack's best.
Every attack keeps its default settings (KnockoffNets its validated clone recipe, DFMS its
CPU preset); only the budgets are the grid's. The served-model cost, the defences' training
and DFMS's proxy GAN (one per seed, from the artifact cache) are inside the match times.

The table: served clean accuracy and clone accuracy at the final budget (mean ± 95% Student-t
interval over seeds, %); the best defence of a column is in bold only where its interval lies
entirely beyond every other defence's (highest served accuracy, lowest clone accuracy); the
worst case is the clone accuracy of the strongest attack, per seed. Beside it: serving cost
per query (batch 256, the seed-0 victim, round robin over the defences) and training time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import output_defences  # noqa: E402  (after the path is set)
from benchmarks.output_defences import Bench, throughput  # noqa: E402

ATTACKS = [  # (column, attacker, label mode)
    ("Knockoff soft", "knockoff", "soft"),
    ("Knockoff hard", "knockoff", "hard"),
    ("DFME", "dfme", "soft"),
    ("MAZE", "maze", "soft"),
    ("DFMS-HL", "dfms-hl", "hard"),
    ("DFMS-SL", "dfms-sl", "soft"),
]
FULL = {
    # KnockoffNets with its default clone recipe (chosen on the validation split, docs/results.md
    # "knockoff_recipe"): a shortened recipe under-trains the clone and flatters every defence
    "knockoff": (1200, {}),
    "dfme": (20_000, {}),
    "maze": (30_000, {}),
    # DFMS at its CPU preset (5,000 proxy images, 1,000 GAN steps): a cut-down GAN leaves the
    # clone at chance even against the undefended victim. The GAN stage makes no query, so it
    # is trained once per seed and restored from the artifact cache by every other defence.
    "dfms-hl": (5000, {}),
    "dfms-sl": (5000, {}),
}
QUICK = {attacker: output_defences.QUICK[attacker] for attacker in ("knockoff", "dfme", "maze", "dfms-sl")}
QUICK["dfms-hl"] = QUICK["dfms-sl"]


def interval(values: list[float]):
    from storage.ranking import Interval

    return Interval.of(values) if values else None


def cell(iv, bold: bool = False) -> str:
    if iv is None:
        return "-"
    text = f"{100 * iv.mean:.1f}" if iv.n < 2 else f"{100 * iv.mean:.1f} ± {100 * iv.half_width:.1f}"
    return f"**{text}**" if bold else text


def grid_seconds(matches) -> dict:
    """The grid's work counted once per piece: every match's attack (its checkpoint scoring
    included), each defence and victim training once, and a per-match set-up (loading data and
    cached models: the median wall time outside the attack of matches that trained nothing).
    Summed wall times double-count training, since a worker that needs a defence another worker
    is training waits for it. DFMS's proxy GAN is inside its attack time: counted once per seed
    plus any wait for the worker training it (an overestimate)."""
    import statistics

    attacks, setup_samples = 0.0, []
    defences: dict[tuple, float] = {}
    victims: dict[int, float] = {}
    for m in matches:
        details = json.loads(m.details_json or "{}")
        attack = float(details.get("attack_seconds", 0.0))
        attacks += attack
        defence, victim = details.get("defender", {}), details.get("victim", {})
        if "train_seconds" in defence:
            params = json.dumps(json.loads(m.config_json or "{}").get("defender_params", {}), sort_keys=True)
            defences[(m.defender, params, m.seed)] = float(defence["train_seconds"])
        if "train_seconds" in victim:
            victims[m.seed] = float(victim["train_seconds"])
        if victim.get("reused") and defence.get("reused", True) and m.wall_seconds:
            setup_samples.append(m.wall_seconds - attack)
    setup_each = statistics.median(setup_samples) if setup_samples else 0.0
    total = attacks + sum(defences.values()) + sum(victims.values()) + setup_each * len(matches)
    return {
        "attacks": attacks,
        "defences": sum(defences.values()),
        "victims": sum(victims.values()),
        "setup": setup_each * len(matches),
        "setup_each": setup_each,
        "total": total,
    }


def separated_best(column: dict[str, object], higher_is_better: bool) -> str | None:
    """The defence whose interval lies entirely beyond every other's in the column, if any."""
    present = {name: iv for name, iv in column.items() if iv is not None and iv.n >= 2}
    if len(present) < 2:
        return None
    best = (
        max(present, key=lambda n: present[n].mean) if higher_is_better else min(present, key=lambda n: present[n].mean)
    )
    others = [iv for name, iv in present.items() if name != best]
    beyond = (
        all(o.below(present[best]) for o in others) if higher_is_better else all(present[best].below(o) for o in others)
    )
    return best if beyond else None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="1 seed, tiny budgets and defences (smoke run)")
    parser.add_argument("--write", action="store_true", help="with --quick: write docs/results.md anyway")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--db", default="/tmp/arena-bench-comparison/comparison.db")
    parser.add_argument("--cache-dir", default=str(ROOT / ".arena" / "cache"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--defenders", default=None, help="comma-separated subset (undefended is always played)")
    parser.add_argument("--report-only", action="store_true", help="play nothing: tables from the database")
    args = parser.parse_args()
    import torch

    threads = int(os.environ.get("ARENA_THREADS", "1"))
    torch.set_num_threads(threads)
    os.environ["ARENA_THREADS"] = str(threads)  # worker processes inherit it

    from engines.defenders import DEFENDERS

    names = [n for n in DEFENDERS.names() if n != "undefended"]
    if args.defenders:
        unknown = set(args.defenders.split(",")) - set(DEFENDERS.names())
        if unknown:
            raise SystemExit(f"unknown defence: {', '.join(sorted(unknown))}; registered: {', '.join(names)}")
        names = [n for n in names if n in args.defenders.split(",")]
    names = ["undefended", *names]
    Path(args.db).parent.mkdir(parents=True, exist_ok=True)
    bench = Bench(args.db, args.cache_dir, args.quick)
    bench.budgets = QUICK if args.quick else FULL
    seeds = [0] if args.quick else list(range(args.seeds))
    specs = {
        (name, column, seed): bench.spec(name, attacker, label, seed)
        for seed in seeds
        for name in names
        for column, attacker, label in ATTACKS
    }
    started = time.perf_counter()
    if args.report_only:
        found = bench.existing()
    else:
        found = bench.play_all(list(specs.values()), args.workers)  # seed-major order: whole seeds first
    elapsed = time.perf_counter() - started

    def result(key):
        match = found.get(specs[key].model_dump_json())
        return match if match is not None and match.status == "done" else None

    print(f"serving throughput (batch {output_defences.THROUGHPUT_BATCH})", flush=True)
    speed = {r["defender"]: r for r in throughput(bench, names[1:], 3 if args.quick else 10)}

    clone = {}  # (name, column) -> Interval
    served, worst, training = {}, {}, {}
    for name in names:
        per_seed_worst, served_values, seconds = [], [], []
        for seed in seeds:
            matches = [result((name, column, seed)) for column, _, _ in ATTACKS]
            done = [m for m in matches if m is not None]
            served_values += [done[0].defender_accuracy] if done else []
            if len(done) == len(ATTACKS):
                per_seed_worst.append(max(m.clone_accuracy for m in done))
            for m in done:
                report = json.loads(m.details_json or "{}").get("defender", {})
                if "train_seconds" in report:
                    seconds.append(float(report["train_seconds"]))
                    break
        for column, _, _ in ATTACKS:
            values = [m.clone_accuracy for s in seeds if (m := result((name, column, s))) is not None]
            clone[(name, column)] = interval(values)
        served[name], worst[name] = interval(served_values), interval(per_seed_worst)
        training[name] = sum(seconds) / len(seconds) if seconds else 0.0

    columns = [column for column, _, _ in ATTACKS]
    best_served = separated_best(served, higher_is_better=True)
    best = {c: separated_best({n: clone[(n, c)] for n in names}, higher_is_better=False) for c in columns}
    best_worst = separated_best(worst, higher_is_better=False)
    victim = [m.victim_accuracy for s in seeds if (m := result(("undefended", columns[0], s))) is not None]
    planned = len(specs)
    played = sum(result(k) is not None for k in specs)
    done_matches = [m for k in specs if (m := result(k)) is not None]
    match_minutes = sum(m.wall_seconds or 0 for m in done_matches) / 60
    grid = grid_seconds(done_matches)
    flags = "".join(f" {a}" for a in sys.argv[1:])
    lines = [
        f"Command: `ARENA_THREADS={threads} .venv/bin/python benchmarks/comparison.py{flags}`; "
        f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {threads} torch thread(s), "
        f"device cpu. Database {args.db}. {played} of {planned} planned matches done; their wall times sum to "
        f"{match_minutes:.0f} min; this invocation took {elapsed / 60:.1f} min"
        + (" (--report-only: nothing played)." if args.report_only else " (done matches are not replayed)."),
        "",
        f"Work in the grid, whatever the order it was played in (each piece counted once): attacks "
        f"{grid['attacks'] / 60:.0f} min, defence training {grid['defences'] / 60:.0f} min (once per defence and "
        f"seed), victim training {grid['victims'] / 60:.1f} min (once per seed), per-match set-up "
        f"{grid['setup'] / 60:.0f} min ({grid['setup_each']:.1f} s each, the median of matches that trained "
        f"nothing); {grid['total'] / 60:.0f} min in all, i.e. about {grid['total'] / 60 / 2:.0f} min on 2 "
        "workers. (A match that waits for another worker to finish the defence it needs counts the wait in "
        "its wall time, so the summed wall times above are not the grid's duration.)",
        "",
        "Budgets: "
        + ", ".join(f"{a} {b:,}" for a, (b, _) in bench.budgets.items())
        + f" queries; {output_defences.CHECKPOINTS} checkpoints. Victim: LeNet-5, "
        f"{cell(interval(victim))} % test accuracy.",
        "",
        f"### Served clean accuracy and clone accuracy (mnist5k, seeds {', '.join(map(str, seeds))}; "
        "mean ± 95% interval, %)",
        "",
        "Bold: the best of a column, only where its interval lies entirely beyond every other defence's.",
        "",
        f"| defence | served | {' | '.join(columns)} | worst case | queries/s (batch 256) | training s |",
        "|---|---|" + "---|" * len(columns) + "---|---|---|",
    ]
    for name in names:
        cells = [cell(clone[(name, c)], best[c] == name) for c in columns]
        qps = speed.get(name, {}).get("qps")
        lines.append(
            f"| {name} | {cell(served[name], best_served == name)} | {' | '.join(cells)} | "
            f"{cell(worst[name], best_worst == name)} | {'-' if qps is None else f'{qps:,.0f}'} | "
            f"{training[name]:.0f} |"
        )
    text = "\n".join(lines)
    print()
    print(text)
    if (not args.quick or args.write) and played:
        from benchmarks._results import write_section

        write_section("comparison", "## Every defence against the attack suite\n\n" + text)


if __name__ == "__main__":
    main()
