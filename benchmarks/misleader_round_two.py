"""MISLEADER, round two (issue 13, parts 1 and 3) on mnist5k: the evaluation protocol, and
settings that might make the defence work.

    ARENA_THREADS=1 .venv/bin/python benchmarks/misleader_round_two.py --workers 2   # full run
    ARENA_THREADS=1 .venv/bin/python benchmarks/misleader_round_two.py --quick       # smoke run
    ... --parts protocol           # one part (protocol, presets)
    ... --report-only              # tables from the database, plays nothing

Parts:
- `protocol`: {undefended, misleader} x DFME `target` in {log-probs, probs-as-logits} x 3
  seeds, DFME 40,000 queries, default DFME settings otherwise. `probs-as-logits` replays the
  public MISLEADER evaluation, which hands the ensemble's averaged probabilities to DFME
  where the teacher's logits go (see `engines.attackers._common.api_logits`).
- `presets`: undefended, the arena's `misleader` MNIST preset and three settings that might
  make it work (`engines.defenders.misleader.PARAMETER_SETS`: the public code's MNIST
  defaults, 4x the training steps; and the `misleader-datafree` extension) x DFME,
  KnockoffNets soft and KnockoffNets hard x a low budget and the default budget x 3 seeds.

Budgets. Default: KnockoffNets 1,200 queries (its default), DFME 40,000 (the budget the
misleader section of docs/results.md uses). Low: KnockoffNets 150 queries (soft labels still
carry information there). DFME cannot spend a partial iteration (batch x (g_iter x
(grad_m + 1) + d_iter) = 64 x 7 = 448 queries at its default batch), so its low-budget cell
is DFME at batch 7: 3 whole iterations of 49 queries = 147 queries, i.e. 15 clone steps on 7
generator samples each. That is the closest honest "DFME at ~150 queries"; it is expected
to stay at chance whatever the defence, and the table shows it.

Matches are played by the arena's own runner into a SQLite database (default
/tmp/arena-bench-misleader-r2/matches.db; the defenders' trained members are artifacts in the
cache), through `benchmarks.output_defences.Bench`: a match whose resolved spec is already
`done` is never replayed, so a rerun resumes. Order: the protocol part seed by seed, then the
presets part seed by seed (see `presets_plan`), so a run cut short leaves whole rows. 2 checkpoints per match (the minimum); the
tables use the final budget. The full run rewrites the "misleader_round_two" section of
docs/results.md; --quick only prints.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHECKPOINTS = 2
DFME_DEFAULT = (40_000, {})
DFME_LOW = (147, {"batch_size": 7})  # 3 whole iterations of 7 x 7 queries
KNOCKOFF_DEFAULT = (1200, {})
KNOCKOFF_LOW = (150, {})
DFME_40K = ("DFME 40k", "dfme", "soft", DFME_DEFAULT)
ATTACKS = [  # (column label, attacker, label mode, (budget, attacker params))
    ("DFME 147 (batch 7)", "dfme", "soft", DFME_LOW),
    DFME_40K,
    ("Knockoff soft 150", "knockoff", "soft", KNOCKOFF_LOW),
    ("Knockoff soft 1,200", "knockoff", "soft", KNOCKOFF_DEFAULT),
    ("Knockoff hard 150", "knockoff", "hard", KNOCKOFF_LOW),
    ("Knockoff hard 1,200", "knockoff", "hard", KNOCKOFF_DEFAULT),
]
TARGETS = ["log-probs", "probs-as-logits"]
UTILITY_TOLERANCE = 0.015  # the 1.5-point clean-accuracy target
MIN_REDUCTION = 0.01  # a change in clone accuracy smaller than 1 point is not called a reduction

QUICK_ATTACKS = {  # (budget, params) by attacker and budget level
    ("dfme", "default"): (16 * 7 * 2, {"batch_size": 16, "generator_width": 8, "nz": 16}),
    ("dfme", "low"): (147, {"batch_size": 7, "generator_width": 8, "nz": 16}),
    ("knockoff", "default"): (200, {"epochs": 1, "min_steps": 5}),
    ("knockoff", "low"): (150, {"epochs": 1, "min_steps": 5}),
}


def settings() -> list[tuple[str, str, dict]]:
    """(row label, defender, defender params) of the presets part."""
    from engines.defenders.misleader import PARAMETER_SETS

    return [
        ("undefended", "undefended", {}),
        ("misleader (arena MNIST preset)", "misleader", {}),
        ("misleader, public MNIST defaults", "misleader", PARAMETER_SETS["public-mnist-defaults"]),
        ("misleader, 4x training steps", "misleader", PARAMETER_SETS["mnist-4x-steps"]),
        ("misleader-datafree (extension)", "misleader-datafree", {}),
    ]


def mean_std(values: list[float], expected: int, scale: float = 100.0, digits: int = 1) -> str:
    """Mean ± std (in points); "(n=k)" marks a cell with fewer seeds than planned."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    short = f" (n={len(values)})" if len(values) < expected else ""
    if len(values) == 1:
        return f"{scale * values[0]:.{digits}f}{short}"
    mean, std = scale * statistics.mean(values), scale * statistics.stdev(values)
    return f"{mean:.{digits}f} ± {std:.{digits}f}{short}"


class RoundTwo:
    def __init__(self, db: str, cache: str, quick: bool, seeds: list[int]):
        from benchmarks.output_defences import Bench

        self.bench = Bench(db, cache, quick)
        self.quick = quick
        self.seeds = seeds
        self.found: dict = {}

    def spec(self, defender: str, params: dict, attack: tuple, seed: int, target: str = "log-probs"):
        """The resolved spec of `defender` (with `params`) against one of ATTACKS; `target`
        (DFME only) is passed only when it is not the default, so equal matches share a row."""
        _, attacker, label, budget_params = attack
        if self.quick:
            level = "low" if budget_params in (DFME_LOW, KNOCKOFF_LOW) else "default"
            budget_params = QUICK_ATTACKS[(attacker, level)]
        budget, attacker_params = budget_params
        if target != "log-probs":
            attacker_params = {**attacker_params, "target": target}
        return self.bench.spec(defender, attacker, label, seed, params, (budget, attacker_params), CHECKPOINTS)

    def protocol_spec(self, defender: str, target: str, seed: int):
        return self.spec(defender, {}, DFME_40K, seed, target)

    def result(self, spec):
        match = self.found.get(spec.model_dump_json())
        return match if match is not None and match.status == "done" else None


# ----------------------------------------------------------------------------- plans
def protocol_plan(rt: RoundTwo) -> list:
    return [
        rt.protocol_spec(defender, target, seed)
        for seed in rt.seeds
        for defender in ("undefended", "misleader")
        for target in TARGETS
    ]


def presets_plan(rt: RoundTwo) -> list:
    """Matches in an order that keeps two workers busy and leaves whole rows when cut short.

    Per seed: the first match of each setting that trains a defender here, the undefended
    and arena-preset matches (the protocol part trained the preset), the rest of the cheap
    matches attack by attack, then the 40k DFME matches. The 4x setting's training (4x the
    longest) starts first, and its other matches follow the seed's block, so one worker
    trains it while the other plays the rest of the seed."""
    cheap = [a for a in ATTACKS if a[3] is not DFME_DEFAULT]
    rows = settings()
    long = next(r for r in rows if r[2] == _parameter_set("mnist-4x-steps"))
    plain = [r for r in rows if r[1] == "undefended" or (r[1] == "misleader" and r[2] == {})]
    trained = [r for r in rows if r not in plain and r is not long]

    def block(seed: int, rows_trained: list) -> list:
        out = [rt.spec(r[1], r[2], cheap[0], seed) for r in rows_trained]
        out += [rt.spec(r[1], r[2], a, seed) for r in plain for a in cheap]
        out += [rt.spec(r[1], r[2], a, seed) for a in cheap[1:] for r in rows_trained]
        return out + [rt.spec(r[1], r[2], DFME_40K, seed) for r in plain + rows_trained]

    order = []
    for seed in rt.seeds:
        order += block(seed, [long, *trained])[:1] + block(seed, trained)
        order += [rt.spec(long[1], long[2], a, seed) for a in [*cheap[1:], DFME_40K]]
    return order


def _parameter_set(name: str) -> dict:
    from engines.defenders.misleader import PARAMETER_SETS

    return PARAMETER_SETS[name]


# ----------------------------------------------------------------------------- tables
def protocol_tables(rt: RoundTwo) -> str:
    n = len(rt.seeds)
    rows = {
        (d, t): {s: rt.result(rt.protocol_spec(d, t, s)) for s in rt.seeds}
        for d in ("undefended", "misleader")
        for t in TARGETS
    }

    def clone(d, t):
        return {s: m.clone_accuracy for s, m in rows[(d, t)].items() if m is not None}

    def paired(a: dict, b: dict) -> list[float]:
        return [a[s] - b[s] for s in a if s in b]

    out = [
        "Clone accuracy (%, 1,000-image test split) of DFME (40,000 queries, default settings) by what "
        "stands in for the API's logits; mean ± std over seeds "
        f"{', '.join(map(str, rt.seeds))}. Served = the defender's clean accuracy.\n",
        "| defender | served | clone, target log-probs (arena default) | clone, target probs-as-logits "
        "(public script) | change (probs-as-logits − log-probs) |",
        "|---|---|---|---|---|",
    ]
    for d in ("undefended", "misleader"):
        served = [m.defender_accuracy for m in rows[(d, "log-probs")].values() if m is not None]
        a, b = clone(d, "log-probs"), clone(d, "probs-as-logits")
        out.append(
            f"| {d} | {mean_std(served, n)} | {mean_std(list(a.values()), n)} | {mean_std(list(b.values()), n)} | "
            f"{mean_std(paired(b, a), n)} |"
        )
    out += [
        "\nPaired change misleader − undefended in DFME clone accuracy (points, same seed and victim), "
        "and the comparison the public evaluation makes (misleader through probs-as-logits vs the "
        "undefended teacher through its log-probabilities, the arena's stand-in for logits).\n",
        "| comparison | change in clone accuracy |",
        "|---|---|",
    ]
    for t in TARGETS:
        out.append(f"| both through {t} | {mean_std(paired(clone('misleader', t), clone('undefended', t)), n)} |")
    out.append(
        "| misleader through probs-as-logits vs undefended through log-probs (the public protocol) | "
        f"{mean_std(paired(clone('misleader', 'probs-as-logits'), clone('undefended', 'log-probs')), n)} |"
    )
    return "\n".join(out)


def presets_tables(rt: RoundTwo) -> str:
    n = len(rt.seeds)
    cells = {}  # (setting label, attack label) -> {seed: match}
    for label, defender, params in settings():
        for attack in ATTACKS:
            cells[(label, attack[0])] = {s: rt.result(rt.spec(defender, params, attack, s)) for s in rt.seeds}

    def served(label):
        """{seed: (served, victim)} from any finished match of the setting."""
        out = {}
        for attack in ATTACKS:
            for s, m in cells[(label, attack[0])].items():
                if m is not None:
                    out.setdefault(s, (m.defender_accuracy, m.victim_accuracy))
        return out

    def clone(label, attack):
        return {s: m.clone_accuracy for s, m in cells[(label, attack)].items() if m is not None}

    head = " | ".join(a[0] for a in ATTACKS)
    out = [
        "Served clean accuracy and clone accuracy (%, 1,000-image test split, final budget); mean ± std "
        f"over seeds {', '.join(map(str, rt.seeds))}. vs victim = paired served − victim (points).\n",
        f"| setting | victim | served | vs victim | {head} |",
        "|---|---|---|---|" + "---|" * len(ATTACKS),
    ]
    for label, _, _ in settings():
        sv = served(label)
        out.append(
            f"| {label} | {mean_std([v for _, v in sv.values()], n)} | {mean_std([a for a, _ in sv.values()], n)} | "
            f"{mean_std([a - v for a, v in sv.values()], n)} | "
            + " | ".join(mean_std(list(clone(label, a[0]).values()), n) for a in ATTACKS)
            + " |"
        )
    out += [
        "\nPaired change in clone accuracy vs undefended (points, same seed and victim; mean ± std; "
        "negative = the defence lowered extraction).\n",
        f"| setting | {head} |",
        "|---|" + "---|" * len(ATTACKS),
    ]
    base_label = settings()[0][0]
    verdicts = []
    for label, _, _ in settings()[1:]:
        row = []
        lowered = []
        for a in ATTACKS:
            d, u = clone(label, a[0]), clone(base_label, a[0])
            diffs = [d[s] - u[s] for s in d if s in u]
            row.append(mean_std(diffs, n))
            mean = statistics.mean(diffs) if diffs else 0.0
            if len(diffs) >= 2 and mean <= -MIN_REDUCTION and mean + statistics.stdev(diffs) < 0:
                lowered.append(f"{a[0]} ({100 * statistics.mean(diffs):+.1f})")
        out.append(f"| {label} | " + " | ".join(row) + " |")
        sv = served(label)
        gap = [a - v for a, v in sv.values()]
        within = None if not gap else statistics.mean(gap) >= -UTILITY_TOLERANCE
        verdicts.append((label, gap, within, lowered))
    out += [
        "\nDoes any setting reduce extraction while staying within 1.5 points of the victim? "
        f"Reduced = mean paired change in clone accuracy at most -{100 * MIN_REDUCTION:.0f} point and below zero "
        "by more than its std over seeds (at least 2 seeds).\n",
        "| setting | served − victim (points) | within 1.5 points | attacks whose clone it lowered |",
        "|---|---|---|---|",
    ]
    for label, gap, within, lowered in verdicts:
        w = "-" if within is None else ("yes" if within else "no")
        out.append(f"| {label} | {mean_std(gap, n, digits=2)} | {w} | {', '.join(lowered) if lowered else 'none'} |")
    return "\n".join(out)


PUBLIC_PROTOCOL = """Where the public protocol comes from (github.com/LabRAI/misleader at commit 03f09ba, read for
facts, not copied):

- `DFME/my_utils.py`, lines 116-125: the class `SoftVotingEnsemble`, whose `forward` returns the
  mean over the members of their softmax outputs, i.e. a probability vector.
- `DFME/train_ensemble.py` (the DFME script `test.sh` runs against the defence), lines 332-339:
  the three members are loaded and wrapped in that ensemble, which becomes DFME's `teacher`.
- `DFME/train.py` (the same DFME script for a single network, i.e. the undefended teacher),
  lines 330-337: the teacher is one network (ResNet-34-8x, or a `get_classifier` model) whose
  `forward` returns logits.
- Both scripts default to `no_logits=1`, `logit_correction='mean'` (`train_ensemble.py` lines
  233-234, `train.py` lines 232-233) and treat whatever the teacher returns the same way:
  log-softmax, then subtract the row mean, in the clone update (`train_ensemble.py` lines 105-110,
  `train.py` lines 104-108) and in the generator's forward-difference gradient estimate
  (`DFME/approximate_gradients.py` lines 68-75).

For a teacher that returns logits z, log-softmax only shifts each row, so the target is the
centred logits z - mean(z); the arena's `target="log-probs"` gives exactly that from any
probability-serving API (log p - mean(log p) = z - mean(z)). For the ensemble, whose output p
is already a probability vector, the same code computes log_softmax(p) - mean = p - 1/C: a
target in [-0.1, 0.9] for every query, which DFME's L1 loss asks the clone's logits to match,
so the clone is pulled towards nearly flat logits whatever the ensemble answers. The arena
replays that with `target="probs-as-logits"` (`engines.attackers._common.api_logits`)."""


def caption(rt: RoundTwo) -> str:
    """The attacker settings the tables used, as resolved (defaults included)."""
    from engines.attackers import ATTACKERS

    knockoff = ATTACKERS.get("knockoff").Params().model_dump(mode="json")
    dfme = ATTACKERS.get("dfme").Params().model_dump(mode="json")
    drop = {"clone_arch"}
    fmt = lambda d: ", ".join(f"{k}={v}" for k, v in d.items() if k not in drop)  # noqa: E731
    return (
        f"KnockoffNets params (random order over the in-distribution pool; as resolved when these tables were "
        f"printed): {fmt(knockoff)}. DFME params: {fmt(dfme)} (low budget: batch_size=7)."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, tiny budgets and defences (smoke run)")
    parser.add_argument("--parts", default="protocol,presets", help="comma-separated subset of protocol,presets")
    parser.add_argument("--workers", type=int, default=1, choices=[1, 2], help="worker processes (default 1)")
    parser.add_argument("--db", default=None, help="default /tmp/arena-bench-misleader-r2[-quick]/matches.db")
    parser.add_argument("--cache-dir", default=None, help="default /tmp/arena-bench-misleader-r2[-quick]/cache")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--report-only", action="store_true", help="play nothing; tables from the database")
    args = parser.parse_args()
    import torch

    threads = int(os.environ.get("ARENA_THREADS", "1"))
    torch.set_num_threads(threads)
    os.environ["ARENA_THREADS"] = str(threads)  # worker processes inherit it
    base = Path("/tmp/arena-bench-misleader-r2" + ("-quick" if args.quick else ""))
    db = args.db or str(base / "matches.db")
    cache = args.cache_dir or str(base / "cache")
    Path(db).parent.mkdir(parents=True, exist_ok=True)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(parts) - {"protocol", "presets"}
    if unknown:
        raise SystemExit(f"unknown part(s) {', '.join(sorted(unknown))}; use protocol, presets")
    seeds = [0] if args.quick else list(range(args.seeds))
    rt = RoundTwo(db, cache, args.quick, seeds)
    plans = {"protocol": protocol_plan, "presets": presets_plan}
    order = [spec for part in parts for spec in plans[part](rt)]
    started = time.perf_counter()
    if args.report_only:
        rt.found = rt.bench.existing()
    else:
        rt.found = rt.bench.play_all(order, args.workers)
    planned = list({s.model_dump_json(): s for s in order}.values())
    done = [m for m in (rt.result(s) for s in planned) if m is not None]
    match_minutes = sum(m.wall_seconds or 0 for m in done) / 60
    flags = "".join(f" {a}" for a in sys.argv[1:] if a != "--report-only")
    lines = [
        f"Command: `ARENA_THREADS={threads} .venv/bin/python benchmarks/misleader_round_two.py{flags}` "
        f"({platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{threads} torch thread(s), device cpu; `--report-only` reprints the tables from the database "
        f"{db}). {len(done)} of {len(planned)} planned matches done; their wall times sum to "
        f"{match_minutes:.0f} min. Victim: LeNet-5, "
        + ("2 epochs (--quick)" if args.quick else "the arena default (40 epochs)")
        + ", one per seed. "
        + f"{CHECKPOINTS} checkpoints per match; the tables use the final budget.",
        "",
        caption(rt),
    ]
    titles = {
        "protocol": "### The evaluation protocol: what DFME is handed as logits",
        "presets": "### Settings that might make MISLEADER work",
    }
    for part in parts:
        text = protocol_tables(rt) if part == "protocol" else presets_tables(rt)
        lines += ["", titles[part], ""]
        if part == "protocol":
            lines += [PUBLIC_PROTOCOL, ""]
        lines += [text]
    text = "\n".join(lines)
    print()
    print(text)
    print(f"\n(this invocation: {(time.perf_counter() - started) / 60:.1f} min)", flush=True)
    if not args.quick and set(parts) == {"protocol", "presets"}:
        from benchmarks._results import write_section

        print(
            "wrote",
            write_section(
                "misleader_round_two",
                "## MISLEADER, round two: evaluation protocol and settings (mnist5k)\n\n" + text,
            ),
        )


if __name__ == "__main__":
    main()
