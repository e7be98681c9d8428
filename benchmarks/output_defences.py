"""Output-perturbation defences on mnist5k: serving cost, a 3-seed grid against
the attack suite, trade-off curves over each defence's knob, and one claim per paper.

    ARENA_THREADS=1 .venv/bin/python benchmarks/output_defences.py            # full (<= 60 min, 1 thread)
    ARENA_THREADS=1 .venv/bin/python benchmarks/output_defences.py --quick    # smoke run, tiny budgets
    ... --workers 2                                                           # two worker processes
    ... --report-only                                  # tables from the database, plays nothing
    ... --defenders mad,grad2 --parts grid             # a subset (defences: --defenders, parts: --parts)

Defences: every registered defender that perturbs the victim's output (randp, reverse-sigmoid,
rounding, top1, mad, mad-argmax, grad2, adaptive-misinformation: whatever is registered when
the script runs), against `undefended`.

Matches are played by the arena's own runner (`arena.runner.enqueue` / `run_match`, or
`arena worker` processes with --workers N) into a SQLite database (default
/tmp/arena-bench-output/output.db). The script is resumable: a match whose resolved spec is
already `done` in the database is not played again, so after new defences land, rerunning
plays only their matches. Matches are played in priority order (seed-0 grid, the curves'
KnockoffNets points, KnockoffNets-family matches of seeds 1-2, the curves' DFME points, then
the data-free matches of seeds 1-2), so a run cut short leaves whole tables. Every curve can be re-drawn with `arena show ID --db ...` and the
trade-off curves with `arena tradeoff --db ...`.

Budgets (CPU scale, sized so the full run takes <= 60 min on one thread of this 2-core
machine: the 201 matches of the full run took 48 min of summed match wall time, one torch
thread, on the machine shared with other jobs; docs/results.md has the attack suite at its
default budgets):
- KnockoffNets soft / hard, argmax-clone: the default 1,200 queries of the in-distribution
  pool, clone trained 10 epochs (>= 100 steps) instead of 30 (>= 300);
- averaged-queries: 4,800 queries (1,200 images x 4 answers), same clone training;
- DFME: 20,000 queries (default 120,000; ~800-1,500 q/s);
- MAZE: 30,000 queries (default 300,000; ~2,400 q/s);
- DFMS-SL: 2,000 queries (default 30,000; ~170 q/s) with a 500-image proxy and 50 GAN
  steps (default 5,000 and 1,000);
- 3 checkpoints per match (the clone is scored at three budgets).
At these budgets the data-free clones are far from converged (DFME reaches ~66 % only at
120k queries; DFMS-SL stays at chance): their columns compare defences at a small budget, not
at the attack's best.
The full run prints markdown and rewrites the "output-defences" section of docs/results.md;
--quick only prints (add --write to record it anyway).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

OUTPUT_DEFENCE_MODULES = {
    "engines.defenders.randp",
    "engines.defenders.reverse_sigmoid",
    "engines.defenders.rounding",
    "engines.defenders.mad",
    "engines.defenders.grad2",
    "engines.defenders.adaptive_misinformation",
}
# the attacker the literature uses to undo each defence (rounding / top1: knockoff hard,
# adaptive-misinformation: knockoff on the in-distribution pool, both already in the grid)
UNDOER = {
    "randp": "averaged-queries",
    "reverse-sigmoid": "argmax-clone",
    "mad": "argmax-clone",
    "mad-argmax": "argmax-clone",
    "grad2": "argmax-clone",
}
GRID = [("knockoff", "soft"), ("knockoff", "hard"), ("dfme", "soft"), ("maze", "soft"), ("dfms-sl", "soft")]
CURVE_ATTACKS = [("knockoff", "soft"), ("dfme", "soft")]
CLONE_TRAINING = {"epochs": 10, "min_steps": 100}
FULL = {  # attacker: (budget, params)
    "knockoff": (1200, CLONE_TRAINING),
    "argmax-clone": (1200, CLONE_TRAINING),
    "averaged-queries": (4800, CLONE_TRAINING),
    "dfme": (20_000, {}),
    "maze": (30_000, {}),
    "dfms-sl": (2000, {"proxy_size": 500, "gan_steps": 50}),
}
QUICK = {
    "knockoff": (200, {"epochs": 1, "min_steps": 5}),
    "argmax-clone": (200, {"epochs": 1, "min_steps": 5}),
    "averaged-queries": (400, {"epochs": 1, "min_steps": 5}),
    "dfme": (500, {"batch_size": 16, "generator_width": 8, "nz": 16}),
    "maze": (112, {"batch_size": 8, "ndirs": 2, "generator_width": 4, "nz": 8, "iter_exp": 2}),
    "dfms-sl": (
        40,
        {"proxy_size": 64, "gan_steps": 3, "gan_width": 4, "batch_size": 8, "warmup_epochs": 1, "nz": 8},
    ),
}
QUICK_VICTIM = {"arch": None, "train": {"epochs": 2, "batch_size": 128, "lr": 0.05}}
CHECKPOINTS = 3
THROUGHPUT_BATCH = 256
THROUGHPUT_ROUNDS = 10


def pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def mean_std(values: list[float], expected: int = 1) -> str:
    """Mean ± std in %; "(n=k)" marks a cell with fewer seeds than planned."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    short = f" (n={len(values)})" if len(values) < expected else ""
    if len(values) == 1:
        return f"{100 * values[0]:.1f}{short}"
    return f"{100 * statistics.mean(values):.1f} ± {100 * statistics.stdev(values):.1f}{short}"


def output_defences() -> list[str]:
    from engines.defenders import DEFENDERS

    return [name for name in DEFENDERS.names() if DEFENDERS.get(name).__module__ in OUTPUT_DEFENCE_MODULES]


def knob_label(name: str, params: dict) -> str:
    from engines.defenders import DEFENDERS

    knob = DEFENDERS.get(name).knob
    return "-" if knob is None else f"{knob}={params.get(knob, DEFENDERS.get(name).Params().model_dump()[knob])}"


class Bench:
    def __init__(self, db: str, cache: str, quick: bool):
        from arena import runner
        from engines.match import MatchEnvironment
        from storage import open_database

        self.runner = runner
        self.db = db
        self.cache = cache
        self.engine = open_database(db)
        self.env = MatchEnvironment(cache_root=cache)
        self.quick = quick
        self.budgets = QUICK if quick else FULL

    def spec(
        self,
        defender: str,
        attacker: str,
        label: str,
        seed: int,
        defender_params: dict | None = None,
        budget_params: tuple[int, dict] | None = None,
        checkpoints: int = CHECKPOINTS,
    ):
        """The resolved spec; `budget_params` (budget, attacker params) overrides the script's
        budget for `attacker`."""
        from engines.defenders import DEFENDERS
        from engines.spec import MatchSpec

        budget, attacker_params = budget_params or self.budgets[attacker]
        params = dict(defender_params or {})
        fields = dict(
            defender=defender,
            defender_params=params,
            attacker=attacker,
            attacker_params=attacker_params,
            label_mode=label,
            query_budget=budget,
            device="cpu",
            seed=seed,
            checkpoints=checkpoints,
        )
        if self.quick:
            fields.update(victim=QUICK_VICTIM, defender_params={**DEFENDERS.get(defender).smoke_params, **params})
        return MatchSpec(**fields).resolve()

    def existing(self) -> dict[str, object]:
        """Matches in the database by resolved config: done ones, else the newest queued."""
        from sqlmodel import Session, select

        from storage.tables import Match

        found: dict[str, object] = {}
        with Session(self.engine, expire_on_commit=False) as session:
            for match in session.exec(select(Match).order_by(Match.id)).all():
                previous = found.get(match.config_json)
                if previous is not None and previous.status == "done":
                    continue
                if match.status in ("done", "queued"):
                    found[match.config_json] = match
        return found

    def play_all(self, specs: list, workers: int) -> dict[str, object]:
        """Play every spec not yet done, in the given order; return the matches by config.

        One worker: each match is enqueued just before it is played (a queued match left by
        an interrupted run is played instead of a new one). N workers: every missing match is
        enqueued, then `arena worker` processes play the queue in id order."""
        from storage import queries

        found = self.existing()
        unique = list({spec.model_dump_json(): spec for spec in specs}.values())
        todo = [s for s in unique if getattr(found.get(s.model_dump_json()), "status", "") != "done"]
        print(f"  {len(unique)} matches: {len(unique) - len(todo)} already done, {len(todo)} to play", flush=True)
        if todo:
            self.runner.validate_batch(todo, self.env)
        wanted = {s.model_dump_json() for s in todo}
        for key, match in found.items():  # a previous plan's leftovers must not reach the workers
            if match.status == "queued" and key not in wanted:
                queries.update_match(self.engine, match.id, status="cancelled", phase="cancelled")
        if workers > 1:
            missing = [s for s in todo if s.model_dump_json() not in found]
            if missing:
                self.runner.enqueue(self.engine, missing)
            self._work_in_processes(workers)
            return self.existing()
        for count, spec in enumerate(todo, 1):
            queued = found.get(spec.model_dump_json())
            match_id = queued.id if queued is not None else self.runner.enqueue(self.engine, [spec])[1][0]
            started = time.perf_counter()
            status = self.runner.run_match(self.engine, match_id, self.env)
            m = queries.get_match(self.engine, match_id)
            clone = f"clone {pct(m.clone_accuracy)}%" if m.clone_accuracy is not None else m.error
            print(
                f"  [{count}/{len(todo)}] #{match_id} {m.defender} {_knob(m)} vs "
                f"{m.attacker} ({m.label_mode}) seed {m.seed}: {status}, served {pct(m.defender_accuracy)}%, "
                f"{clone}, {time.perf_counter() - started:.0f} s",
                flush=True,
            )
        return self.existing()

    def _work_in_processes(self, workers: int) -> None:
        cmd = [sys.executable, "-m", "arena.cli", "worker", "--db", self.db, "--cache-dir", self.cache]
        procs = [subprocess.Popen(cmd, cwd=ROOT) for _ in range(workers)]
        for proc in procs:
            proc.wait()


def _knob(match) -> str:
    """The knob setting of a played match (a storage.records.MatchRecord)."""
    from engines.defenders import DEFENDERS

    knob = DEFENDERS.get(match.defender).knob
    params = match.config.get("defender_params", {})
    return "" if knob is None or knob not in params else f"{knob}={params[knob]}"


def throughput(bench: Bench, names: list[str], repeats: int) -> list[dict]:
    """Serving queries/s at batch 256 of each defence at its default params (seed-0 victim)."""
    import torch

    from engines.artifacts import ArtifactStore
    from engines.data import load_dataset
    from engines.defenders import DEFENDERS, DefenderContext
    from engines.match import MatchObserver, load_victim

    spec = bench.spec("undefended", "knockoff", "soft", 0)
    splits = load_dataset("mnist5k", "data", bench.cache)
    device = torch.device("cpu")
    store = ArtifactStore(bench.cache)
    victim, key, _ = load_victim(spec, splits, store, device, MatchObserver())
    images = splits.test.floats(slice(0, THROUGHPUT_BATCH)).to(device)
    defenders = {}
    for name in ["undefended", *names]:
        cls = DEFENDERS.get(name)
        params = cls.smoke_params if bench.quick else {}
        ctx = DefenderContext(victim=victim, victim_key=key, splits=splits, device=device, store=store, seed=0)
        defenders[name] = cls(cls.Params.model_validate(params), ctx)
        defenders[name].prepare()
    best = dict.fromkeys(defenders, math.inf)
    with torch.inference_mode():
        for name, defender in defenders.items():
            defender.serve(images)  # warm-up
        for _ in range(repeats):  # round robin: load changes on a shared machine hit every defence alike
            for name, defender in defenders.items():
                started = time.perf_counter()
                defender.serve(images)
                best[name] = min(best[name], time.perf_counter() - started)
    rows = [{"defender": name, "qps": THROUGHPUT_BATCH / t, "ms": 1000 * t} for name, t in best.items()]
    for r in rows:
        print(f"  {r['defender']}: {r['qps']:,.0f} queries/s", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="1 seed, tiny budgets and defences (smoke run)")
    parser.add_argument("--write", action="store_true", help="with --quick: write docs/results.md anyway")
    parser.add_argument("--workers", type=int, default=1, help="worker processes playing matches (default 1)")
    parser.add_argument("--db", default="/tmp/arena-bench-output/output.db")
    parser.add_argument("--cache-dir", default=str(ROOT / ".arena" / "cache"))
    parser.add_argument("--seeds", type=int, default=3, help="seeds for the grid (full run)")
    parser.add_argument("--defenders", default=None, help="comma-separated subset of the output defences")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="play nothing: print the tables from the matches already done in the database",
    )
    parser.add_argument(
        "--parts", default="throughput,grid,curves", help="comma-separated subset of throughput,grid,curves"
    )
    args = parser.parse_args()
    import torch

    threads = int(os.environ.get("ARENA_THREADS", "1"))
    torch.set_num_threads(threads)
    os.environ["ARENA_THREADS"] = str(threads)  # worker processes inherit it

    from engines.defenders import DEFENDERS

    parts = set(args.parts.split(","))
    Path(args.db).parent.mkdir(parents=True, exist_ok=True)
    bench = Bench(args.db, args.cache_dir, args.quick)
    names = output_defences()
    if args.defenders:
        unknown = set(args.defenders.split(",")) - set(names)
        if unknown:
            raise SystemExit(f"not an output defence: {', '.join(sorted(unknown))}; registered: {', '.join(names)}")
        names = [n for n in names if n in args.defenders.split(",")]
    seeds = [0] if args.quick else list(range(args.seeds))
    started = time.perf_counter()
    print(f"output defences registered: {', '.join(names)}", flush=True)

    grid_specs, curve_specs = [], []
    for seed in seeds:
        for name in ["undefended", *names]:
            for attacker, label in GRID:
                grid_specs.append(bench.spec(name, attacker, label, seed))
            undoers = sorted(set(UNDOER.values())) if name == "undefended" else [UNDOER.get(name)]
            if (
                name not in UNDOER
                and name != "undefended"
                and DEFENDERS.get(name).preserves_top1(DEFENDERS.get(name).Params())
            ):
                undoers = ["argmax-clone"]
            for undoer in undoers:
                if undoer:
                    grid_specs.append(bench.spec(name, undoer, "soft", seed))
    for name in names:
        cls = DEFENDERS.get(name)
        for value in cls.knob_values:
            for attacker, label in CURVE_ATTACKS:
                curve_specs.append(bench.spec(name, attacker, label, 0, {cls.knob: value}))

    # priority order, so that a run cut short has whole tables: seed 0 grid, the curves'
    # knockoff points, the cheap (pool-based) attacks on seeds 1-2, the curves' DFME points,
    # then the data-free attacks on seeds 1-2
    def cheap(spec) -> bool:
        return spec.attacker in ("knockoff", "argmax-clone", "averaged-queries")

    wanted = (grid_specs if "grid" in parts else []) + (curve_specs if "curves" in parts else [])
    order = (
        [s for s in wanted if s.seed == 0 and s in grid_specs]
        + [s for s in wanted if s in curve_specs and cheap(s)]
        + [s for s in wanted if s.seed != 0 and cheap(s)]
        + [s for s in wanted if s in curve_specs and not cheap(s)]
        + [s for s in wanted if s.seed != 0 and not cheap(s)]
    )

    rows_a = []
    if "throughput" in parts:
        print(f"serving throughput (batch {THROUGHPUT_BATCH})", flush=True)
        rows_a = throughput(bench, names, 3 if args.quick else THROUGHPUT_ROUNDS)
    found = {}
    if args.report_only:
        found = bench.existing()
        planned = {s.model_dump_json() for s in order}
        done = sum(1 for key, m in found.items() if key in planned and m.status == "done")
        print(f"report only: {done} of {len(planned)} planned matches are done", flush=True)
    elif order:
        print("matches", flush=True)
        found = bench.play_all(order, args.workers)
    total = time.perf_counter() - started

    def result(spec):
        match = found.get(spec.model_dump_json())
        return match if match is not None and match.status == "done" else None

    planned = list({s.model_dump_json(): s for s in order}.values())
    played = [result(s) for s in planned]
    match_minutes = sum(m.wall_seconds or 0 for m in played if m is not None) / 60
    flags = "".join(f" {arg}" for arg in sys.argv[1:])
    lines = [
        f"Command: `ARENA_THREADS={threads} .venv/bin/python benchmarks/output_defences.py{flags}`; "
        f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {threads} torch thread(s), "
        f"device cpu. Database {args.db}. {sum(m is not None for m in played)} of {len(planned)} planned "
        f"matches done; their wall times sum to {match_minutes:.0f} min (on a machine shared with other jobs); "
        + (
            "this invocation played none (--report-only: tables from the database, throughput measured anew; "
            "the matches were played by the same command without --report-only)."
            if args.report_only
            else f"this invocation took {total / 60:.1f} min (matches already in the database are not replayed)."
        ),
        "",
        "Budgets: "
        + ", ".join(f"{a} {b:,}" for a, (b, _) in bench.budgets.items())
        + f" queries; {CHECKPOINTS} checkpoints; attacker settings in the script's docstring.",
    ]
    if rows_a:
        base = rows_a[0]["qps"]
        lines += [
            "",
            f"### Serving throughput (batch {THROUGHPUT_BATCH}, seed-0 LeNet-5 victim, default params)",
            "",
            f"Best of {THROUGHPUT_ROUNDS} timed calls of `serve` on 256 test images per defence (round robin over the "
            "defences), inference mode, one process.",
            "",
            "| defender | knob | queries/s | ms per batch | vs undefended |",
            "|---|---|---|---|---|",
        ]
        for r in rows_a:
            lines.append(
                f"| {r['defender']} | {knob_label(r['defender'], {})} | {r['qps']:,.0f} | {r['ms']:.2f} | "
                f"{r['qps'] / base:.2f}x |"
            )

    if "grid" in parts:
        attack_cols = [*GRID, ("argmax-clone", "soft"), ("averaged-queries", "soft")]
        header = " | ".join(f"{a} {lbl}" if a == "knockoff" else a for a, lbl in attack_cols)
        lines += [
            "",
            f"### Default knob vs the attack suite (mnist5k, seeds {', '.join(map(str, seeds))}; mean ± std, %)",
            "",
            "Served = the defence's clean accuracy on the 1,000-image test split; the other columns are "
            "clone accuracy on the same split at the final budget. Undoing attackers (argmax-clone, "
            "averaged) are run against the defences they undo and against undefended.",
            "",
            f"| defender | knob | victim | served | {header} |",
            "|---|---|---|---|" + "---|" * len(attack_cols),
        ]
        grid: dict[tuple[str, str], dict[int, float]] = {}  # (defender, column) -> {seed: value}
        for name in ["undefended", *names]:
            served: dict[int, float] = {}
            victim: dict[int, float] = {}
            cells = []
            for attacker, label in attack_cols:
                values: dict[int, float] = {}
                for seed in seeds:
                    m = result(bench.spec(name, attacker, label, seed)) if _planned(name, attacker) else None
                    if m is not None:
                        values[seed] = m.clone_accuracy
                        served.setdefault(seed, m.defender_accuracy)
                        victim.setdefault(seed, m.victim_accuracy)
                grid[(name, attacker + ("-hard" if label == "hard" else ""))] = values
                cells.append(mean_std(list(values.values()), len(seeds)) if _planned(name, attacker) else "")
            grid[(name, "served")], grid[(name, "victim")] = served, victim
            lines.append(
                f"| {name} | {knob_label(name, {})} | {mean_std(list(victim.values()), len(seeds))} | "
                f"{mean_std(list(served.values()), len(seeds))} | {' | '.join(cells)} |"
            )
    if "curves" in parts:
        lines += [
            "",
            "### Trade-off curves (seed 0): served clean accuracy vs clone accuracy (%)",
            "",
            f"`arena tradeoff -d NAME -a knockoff -l soft --db {args.db}` (or `-a dfme`) draws these curves "
            "from the same database; it averages over seeds, so its default-knob point also includes the "
            "grid's seeds 1-2.",
            "",
            "| defender | knob | served | knockoff soft | dfme |",
            "|---|---|---|---|---|",
        ]
        for name in ["undefended", *names]:
            cls = DEFENDERS.get(name)
            values = cls.knob_values if name != "undefended" else [None]
            for value in values:
                params = {} if value is None else {cls.knob: value}
                ks = result(bench.spec(name, "knockoff", "soft", 0, params))
                df = result(bench.spec(name, "dfme", "soft", 0, params))
                served = ks.defender_accuracy if ks else (df.defender_accuracy if df else None)
                lines.append(
                    f"| {name} | {knob_label(name, params)} | {pct(served)} | {pct(ks and ks.clone_accuracy)} | "
                    f"{pct(df and df.clone_accuracy)} |"
                )
    if "grid" in parts:
        lines += ["", "### One claim per paper, checked on the grid above (mean over seeds, %)", ""]
        lines += claims(grid)

    text = "\n".join(lines)
    print()
    print(text)
    if not args.quick or args.write:
        from benchmarks._results import write_section

        write_section("output-defences", "## Output-perturbation defences\n\n" + text)


def _planned(name: str, attacker: str) -> bool:
    if attacker in ("argmax-clone", "averaged-queries"):
        from engines.defenders import DEFENDERS

        if name == "undefended":
            return True
        cls = DEFENDERS.get(name)
        return UNDOER.get(name) == attacker or (
            name not in UNDOER and attacker == "argmax-clone" and cls.preserves_top1(cls.Params())
        )
    return True


def claims(grid: dict) -> list[str]:
    """Each paper's qualitative claim, with the numbers and whether it held here. Every
    comparison is paired: means over the seeds where all compared cells have a match."""

    def means(*cells):
        """Means of the (defender, column) cells over their common seeds; None if none."""
        common = set.intersection(*(set(grid.get(cell, {})) for cell in cells))
        if not common:
            return [None] * len(cells)
        return [statistics.mean(grid[cell][seed] for seed in common) for cell in cells]

    def fmt(v):
        return "-" if v is None else f"{100 * v:.1f}"

    out = ["| paper | claim | measured | holds here |", "|---|---|---|---|"]

    def add(paper, claim, measured, ok):
        verdict = "n/a (missing matches)" if ok is None else ("yes" if ok else "no")
        out.append(f"| {paper} | {claim} | {measured} | {verdict} |")

    def present(name):
        return any(key[0] == name for key in grid)

    if present("mad"):
        und, mad, arg = means(("undefended", "knockoff"), ("mad", "knockoff"), ("mad", "argmax-clone"))
        ok = None if None in (und, mad, arg) else (mad < und and arg - mad >= (und - mad) / 2)
        add(
            "Orekondy et al. 2020 (MAD)",
            "MAD lowers a soft-label KnockoffNets clone; argmax-clone recovers at least half of the loss",
            f"knockoff soft: undefended {fmt(und)}, mad {fmt(mad)}; argmax-clone vs mad {fmt(arg)}",
            ok,
        )
    if present("mad-argmax"):
        served, victim = means(("mad-argmax", "served"), ("mad-argmax", "victim"))
        ok = None if None in (served, victim) else abs(served - victim) < 1e-9
        add(
            "Orekondy et al. 2020 (MAD-argmax)",
            "the argmax-preserving variant keeps the victim's clean accuracy exactly",
            f"served {fmt(served)} vs victim {fmt(victim)}",
            ok,
        )
    if present("randp"):
        soft, avg = means(("randp", "knockoff"), ("randp", "averaged-queries"))
        ok = None if None in (soft, avg) else avg > soft
        add(
            "Orekondy et al. 2020 (random-noise baseline)",
            "zero-mean random noise is averaged away: averaged-queries (4 answers per image) beats knockoff soft",
            f"randp: knockoff soft {fmt(soft)}, averaged-queries {fmt(avg)}",
            ok,
        )
    if present("reverse-sigmoid"):
        und, rs = means(("undefended", "knockoff"), ("reverse-sigmoid", "knockoff"))
        (arg,) = means(("reverse-sigmoid", "argmax-clone"))
        ok = None if None in (und, rs) else rs < und
        add(
            "Lee et al. 2019 (reverse sigmoid)",
            "the perturbation hurts soft-label extraction (clone below undefended's)",
            f"knockoff soft: undefended {fmt(und)}, reverse-sigmoid {fmt(rs)} (argmax-clone {fmt(arg)})",
            ok,
        )
    if present("top1"):
        und, top1 = means(("undefended", "knockoff-hard"), ("top1", "knockoff-hard"))
        (rnd,) = means(("rounding", "knockoff"))
        ok = None if None in (und, top1) else abs(top1 - und) <= 0.02
        add(
            "Tramèr et al. 2016 (rounding / labels only)",
            "label-only answers still let a hard-label attacker extract the model (within 2 points)",
            f"knockoff hard: undefended {fmt(und)}, top1 {fmt(top1)}; rounding vs knockoff soft {fmt(rnd)}",
            ok,
        )
    if present("grad2"):
        grad2, mad = means(("grad2", "knockoff"), ("mad", "knockoff"))
        ok = None if None in (grad2, mad) else grad2 < mad
        add(
            "Mazeika et al. 2022 (GRAD²)",
            "gradient redirection lowers a soft-label clone more than MAD at the same eps",
            f"knockoff soft: grad2 {fmt(grad2)}, mad {fmt(mad)}",
            ok,
        )
    if present("adaptive-misinformation"):
        am = "adaptive-misinformation"
        u_dfme, a_dfme, u_maze, a_maze = means(
            ("undefended", "dfme"), (am, "dfme"), ("undefended", "maze"), (am, "maze")
        )
        served, victim = means((am, "served"), (am, "victim"))
        ok = (
            None
            if None in (u_dfme, a_dfme, u_maze, a_maze, served, victim)
            else (a_dfme < u_dfme and a_maze < u_maze and victim - served < 0.01)
        )
        add(
            "Kariyappa & Qureshi 2020 (Adaptive Misinformation)",
            "data-free (OOD-querying) attacks get worse clones while benign accuracy drops < 1 point",
            f"dfme: undefended {fmt(u_dfme)}, AM {fmt(a_dfme)}; maze: undefended {fmt(u_maze)}, AM {fmt(a_maze)}; "
            f"served {fmt(served)} vs victim {fmt(victim)}",
            ok,
        )
    return out


if __name__ == "__main__":
    main()
