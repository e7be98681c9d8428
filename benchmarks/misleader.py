"""MISLEADER benchmark on mnist5k: utility, extraction, serving cost, training cost, and the
investigation of whether (and why) the defence reduces extraction.

    .venv/bin/python benchmarks/misleader.py                                       # full run, 1 thread
    .venv/bin/python benchmarks/misleader.py --quick                               # smoke run

Parts (all by default; `--parts grid,serving` to pick):
- `select`: the MNIST preset's (T, alpha, lambda) chosen on the validation split (seed 0);
- `grid`: undefended, misleader and its four ablations x KnockoffNets soft, KnockoffNets hard
  and DFME, over 3 seeds: clean accuracy, clone accuracy and fidelity at the final budget,
  training wall time;
- `serving`: throughput (queries/s, batch 256) of misleader vs undefended, MNIST and CIFAR
  presets (random weights, random inputs), and fused vs unfused equal-architecture members;
- `investigate`: lambda sweep, simulated-attacker strength and the extraction term's effect.

Every trained defender is an artifact in the cache and every finished match is stored in
`<cache>/misleader-bench-matches.json` under a hash of its spec, so a rerun only plays what
is missing (numbers are deterministic per seed; reused rows keep their original timings).
The full run writes the "misleader" section of docs/results.md; `--quick` only prints.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._results import write_section  # noqa: E402
from engines.match import MatchEnvironment, MatchObserver, play_match  # noqa: E402
from engines.spec import MatchSpec  # noqa: E402

DEFENDERS = ["undefended", "misleader", "misleader-lambda0", "misleader-k1", "misleader-homogeneous", "misleader-noaug"]
ATTACKS = [("knockoff", "soft"), ("knockoff", "hard"), ("dfme", "soft")]
ATTACK_LABEL = {
    ("knockoff", "soft"): "Knockoff soft",
    ("knockoff", "hard"): "Knockoff hard",
    ("dfme", "soft"): "DFME soft",
}

FULL = {
    "seeds": [0, 1, 2],
    "budgets": {"knockoff": 1200, "dfme": 40_000},
    "attacker_params": {"knockoff": {}, "dfme": {}},
    "defender_params": {},
    "victim": None,  # the arena default (LeNet-5, 40 epochs)
}
QUICK = {
    "seeds": [0],
    "budgets": {"knockoff": 100, "dfme": 16 * 7 * 3},
    "attacker_params": {
        "knockoff": {"epochs": 2, "min_steps": 10},
        "dfme": {"batch_size": 16, "generator_width": 8, "nz": 16},
    },
    "defender_params": {"epochs": 1, "train_limit": 256},
    "victim": {"arch": None, "train": {"epochs": 2, "batch_size": 128, "lr": 0.05}},
}


class Quiet(MatchObserver):
    pass


def pm(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    mean = statistics.fmean(values) * scale
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values) * scale:.{digits}f}"


class MatchBook:
    """Plays matches, remembering finished ones by spec hash in a JSON file."""

    def __init__(self, cache: str):
        self.cache = cache
        self.path = Path(cache) / "misleader-bench-matches.json"
        self.rows = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.env = MatchEnvironment(cache_root=cache)

    def play(self, **fields) -> dict:
        spec = MatchSpec(device="cpu", checkpoints=2, **{k: v for k, v in fields.items() if v is not None}).resolve()
        key = hashlib.sha256(spec.model_dump_json().encode()).hexdigest()[:24]
        if key not in self.rows:
            started = time.perf_counter()
            summary = play_match(spec, Quiet(), self.env).as_dict()
            summary["match_seconds"] = time.perf_counter() - started
            summary.pop("split", None)
            self.rows[key] = summary
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(self.rows, indent=0, default=str))
            print(
                f"  played {spec.label()} in {summary['match_seconds']:.0f}s: clean {summary['defender_accuracy']:.4f} "
                f"clone {summary['clone_accuracy']:.4f}",
                flush=True,
            )
        return self.rows[key]


# ----------------------------------------------------------------------------- grid
def run_grid(book: MatchBook, cfg: dict, defenders: list[str] = DEFENDERS, extra_params: dict | None = None) -> dict:
    results = {}
    for seed in cfg["seeds"]:
        for defender in defenders:
            params = {} if defender == "undefended" else {**cfg["defender_params"], **(extra_params or {})}
            for attacker, mode in ATTACKS:
                results[(seed, defender, attacker, mode)] = book.play(
                    defender=defender,
                    defender_params=params,
                    attacker=attacker,
                    label_mode=mode,
                    seed=seed,
                    query_budget=cfg["budgets"][attacker],
                    attacker_params=cfg["attacker_params"][attacker],
                    victim=cfg["victim"],
                )
    return results


def grid_tables(results: dict, cfg: dict, defenders: list[str] = DEFENDERS) -> str:
    seeds = cfg["seeds"]
    first = lambda seed, d: results[(seed, d, *ATTACKS[0])]
    out = []
    out.append(
        "Clean accuracy on the test split (%), members' validation accuracy (%), training wall time "
        "(s, from the artifact's first build).\n"
    )
    out.append("| defender | clean accuracy | vs victim | member val accuracy | training s |")
    out.append("|---|---|---|---|---|")
    victim = [first(s, "undefended")["victim_accuracy"] for s in seeds]
    out.append(f"| victim (LeNet-5) | {pm(victim)} | - | - | - |")
    for d in defenders:
        clean = [first(s, d)["defender_accuracy"] for s in seeds]
        delta = [first(s, d)["defender_accuracy"] - first(s, d)["victim_accuracy"] for s in seeds]
        facts = [first(s, d)["defender"] for s in seeds]
        if d == "undefended":
            members, train = "-", "-"
        else:
            per_member = list(zip(*[f["member_val_accuracy"] for f in facts]))
            members = " / ".join(pm(list(v)) for v in per_member)
            train = pm([f["train_seconds"] for f in facts], scale=1.0, digits=0)
        out.append(f"| {d} | {pm(clean)} | {pm(delta)} | {members} | {train} |")
    for metric, title in (
        ("clone_accuracy", "Clone accuracy on the test split at the final budget (%)"),
        ("fidelity_victim", "Fidelity: clone agrees with the undefended victim (%, test split)"),
        ("fidelity_served", "Fidelity: clone agrees with the served answers (%, test split)"),
    ):
        out.append(f"\n{title}.\n")
        out.append("| defender | " + " | ".join(ATTACK_LABEL[a] for a in ATTACKS) + " |")
        out.append("|---|" + "---|" * len(ATTACKS))
        for d in defenders:
            cells = [pm([results[(s, d, *a)][metric] for s in seeds]) for a in ATTACKS]
            out.append(f"| {d} | " + " | ".join(cells) + " |")
    out.append("\nPaired change in clone accuracy vs undefended (points, same seed and victim; mean ± std).\n")
    out.append("| defender | " + " | ".join(ATTACK_LABEL[a] for a in ATTACKS) + " |")
    out.append("|---|" + "---|" * len(ATTACKS))
    for d in defenders[1:]:
        cells = [
            pm(
                [
                    results[(s, d, *a)]["clone_accuracy"] - results[(s, "undefended", *a)]["clone_accuracy"]
                    for s in seeds
                ]
            )
            for a in ATTACKS
        ]
        out.append(f"| {d} | " + " | ".join(cells) + " |")
    return "\n".join(out)


# ----------------------------------------------------------------------------- serving
def _throughput(fn, x: torch.Tensor, min_seconds: float, max_reps: int) -> float:
    with torch.inference_mode():
        fn(x)  # warm-up
        reps, started = 0, time.perf_counter()
        while reps < max_reps and (reps == 0 or time.perf_counter() - started < min_seconds):
            fn(x)
            reps += 1
        return reps * len(x) / (time.perf_counter() - started)


def run_serving(quick: bool) -> str:
    from engines.defenders._misleader_serve import EnsembleServer
    from engines.defenders.misleader import PRESETS
    from engines.models import build_model

    cpu = torch.device("cpu")
    rows = []
    settings = {"mnist": (1, (0.13,), (0.31,), "lenet5"), "cifar": (3, (0.5,) * 3, (0.25,) * 3, "resnet34_8x")}
    for preset, (channels, mean, std, victim_arch) in settings.items():
        batch = 256 if not quick or preset == "mnist" else 8
        min_s, max_reps = (2.0, 200) if preset == "mnist" else ((0.0, 1) if quick else (10.0, 3))
        torch.manual_seed(0)
        x = torch.rand(batch, channels, 32, 32)
        victim = build_model(victim_arch, channels, 10, mean, std).eval()
        archs = [m[0] for m in PRESETS[preset]["members"]]
        members = [build_model(a, channels, 10, mean, std) for a in archs]
        server = EnsembleServer(members, archs, cpu)
        undefended = _throughput(lambda t: torch.softmax(victim(t), 1), x, min_s, max_reps)
        ensemble = _throughput(server, x, min_s, max_reps)
        rows.append((f"{preset}: undefended ({victim_arch})", undefended, 1.0))
        rows.append((f"{preset}: misleader ({' + '.join(archs)})", ensemble, ensemble / undefended))
    # fused vs unfused equal-architecture members (the homogeneous MNIST ablation)
    torch.manual_seed(0)
    x = torch.rand(256, 1, 32, 32)
    members = [build_model("lenet5", 1, 10, (0.13,), (0.31,)) for _ in range(3)]
    victim = build_model("lenet5", 1, 10, (0.13,), (0.31,)).eval()
    base = _throughput(lambda t: torch.softmax(victim(t), 1), x, 2.0, 200)
    for fuse in ("never", "always"):
        server = EnsembleServer(members, ["lenet5"] * 3, cpu, fuse=fuse)
        qps = _throughput(server, x, 2.0, 200)
        rows.append(
            (
                f"mnist: 3 x lenet5, {'fused (torch.func vmap)' if fuse == 'always' else 'one call per member'}",
                qps,
                qps / base,
            )
        )
    out = [
        f"Serving throughput on CPU ({torch.get_num_threads()} torch thread(s)), batch "
        f"{256 if not quick else '256 (MNIST) / 8 (CIFAR, quick)'}, random weights and inputs, inference mode.\n",
        "| served model | queries/s | relative to its undefended victim |",
        "|---|---|---|",
    ]
    out += [f"| {name} | {qps:,.0f} | {rel:.2f}x |" for name, qps, rel in rows]
    return "\n".join(out)


# ----------------------------------------------------------------------------- selection
SELECT_T = [2.0, 4.0, 6.0]
SELECT_ALPHA = [0.3, 0.9]
SELECT_LAMBDA = [0.0, 0.1, 0.5, 1.0, 2.0, 5.0]
MNIST_ARCHS = ["lenet5", "lenet5_half", "lenet5_fifth"]


def _defender_for(cache: str, name: str, params: dict, seed: int, victim: dict | None):
    """Build and prepare a defender (trained, or loaded from the cache) for the seed's victim.

    Returns (defender, facts, splits, victim model)."""
    from engines.artifacts import ArtifactStore
    from engines.data import load_dataset
    from engines.defenders import DEFENDERS, DefenderContext
    from engines.match import load_victim

    cpu = torch.device("cpu")
    spec = MatchSpec(device="cpu", seed=seed, **({"victim": victim} if victim else {})).resolve()
    store = ArtifactStore(cache)
    splits = load_dataset(spec.dataset, "data", cache)
    model, key, _ = load_victim(spec, splits, store, cpu, Quiet())
    cls = DEFENDERS.get(name)
    defender = cls(
        cls.Params.model_validate(params),
        DefenderContext(victim=model, victim_key=key, splits=splits, device=cpu, store=store, seed=seed),
    )
    facts = defender.prepare() or {}
    return defender, facts, splits, model


def _train_only(cache: str, members: list[dict], seed: int, extra: dict, victim: dict | None) -> dict:
    """Train (or load) a misleader ensemble; return its facts plus the ensemble's and the
    victim's validation accuracy."""
    from engines.training import accuracy

    defender, facts, splits, model = _defender_for(cache, "misleader", {"members": members, **extra}, seed, victim)
    with torch.inference_mode():
        served = defender.serve(splits.defender_val.floats()).argmax(1)
    facts["ensemble_val_accuracy"] = (served == splits.defender_val.labels).float().mean().item()
    facts["victim_val_accuracy"] = accuracy(model, splits.defender_val, torch.device("cpu"))
    return facts


def _entropies(cache: str, name: str, params: dict, seed: int, victim: dict | None) -> tuple[float, float]:
    """Mean entropy (nats) of the served probabilities on test images and on uniform-noise images."""
    defender, _, splits, _ = _defender_for(cache, name, params, seed, victim)
    noise = torch.rand((1000, *splits.image_shape), generator=torch.Generator().manual_seed(seed))
    out = []
    with torch.inference_mode():
        for x in (splits.test.floats(), noise):
            p = defender.serve(x).clamp_min(1e-12)
            out.append(float(-(p * p.log()).sum(1).mean()))
    return out[0], out[1]


def run_select(cache: str, quick: bool, victim: dict | None) -> str:
    extra = {"epochs": 1, "train_limit": 256} if quick else {}
    ts, alphas, lams = (
        (SELECT_T[:1], SELECT_ALPHA[:1], SELECT_LAMBDA[:2]) if quick else (SELECT_T, SELECT_ALPHA, SELECT_LAMBDA)
    )
    table, ensemble = {}, {}  # (arch, T, alpha, lam) -> member facts; lam -> ensemble val accuracy
    for T in ts:
        for alpha in alphas:
            facts = _train_only(
                cache, [{"arch": a, "lam": 0.0, "T": T, "alpha": alpha} for a in MNIST_ARCHS], 0, extra, victim
            )
            for m in facts["members"]:
                table[(m["arch"], T, alpha, 0.0)] = m
    victim_val = facts["victim_val_accuracy"]
    chosen = {}
    for arch in MNIST_ARCHS:
        best = max(
            ((T, a) for T in ts for a in alphas), key=lambda ta: (table[(arch, *ta, 0.0)]["val_accuracy"], -ta[0])
        )
        chosen[arch] = best
    for lam in lams:
        facts = _train_only(
            cache,
            [{"arch": a, "lam": lam, "T": chosen[a][0], "alpha": chosen[a][1]} for a in MNIST_ARCHS],
            0,
            extra,
            victim,
        )
        ensemble[lam] = facts["ensemble_val_accuracy"]
        for m in facts["members"]:
            table[(m["arch"], m["T"], m["alpha"], lam)] = m
    pick = (
        max(lam for lam in lams if ensemble[lam] >= victim_val - 0.015 - 1e-9)
        if any(ensemble[lam] >= victim_val - 0.015 - 1e-9 for lam in lams)
        else 0.0
    )
    out = [
        "Step 1 - lambda = 0, member validation accuracy (%) for each (T, alpha); the best per member "
        "(ties: smaller T) is kept.\n",
        "| T, alpha | " + " | ".join(MNIST_ARCHS) + " |",
        "|---|" + "---|" * len(MNIST_ARCHS),
    ]
    for T in ts:
        for alpha in alphas:
            cells = []
            for arch in MNIST_ARCHS:
                v = f"{table[(arch, T, alpha, 0.0)]['val_accuracy'] * 100:.2f}"
                cells.append(f"**{v}**" if chosen[arch] == (T, alpha) else v)
            out.append(f"| {T:g}, {alpha:g} | " + " | ".join(cells) + " |")
    out.append(
        "\nStep 2 - one lambda for all members, each at its (T, alpha): member validation accuracy (%) / "
        "final mean KL(member || simulated attacker) on augmented batches / simulated attacker's "
        "validation agreement with its member (%); ensemble validation accuracy (%). Chosen: the largest "
        f"lambda whose ensemble stays within 1.5 points of the victim's validation accuracy ({victim_val * 100:.2f}).\n"
    )
    out.append(
        "| lambda | "
        + " | ".join(f"{a} (T {chosen[a][0]:g}, alpha {chosen[a][1]:g})" for a in MNIST_ARCHS)
        + " | ensemble |"
    )
    out.append("|---|" + "---|" * (len(MNIST_ARCHS) + 1))
    for lam in lams:
        cells = []
        for arch in MNIST_ARCHS:
            m = table[(arch, *chosen[arch], lam)]
            cells.append(
                f"{m['val_accuracy'] * 100:.2f} / {m['final_mean_ext']:.3f} / {m['simulated_attacker_val_agreement'] * 100:.1f}"
            )
        cells.append(f"{ensemble[lam] * 100:.2f}")
        row = f"| {lam:g} | " + " | ".join(cells) + " |"
        out.append(row.replace(f"| {lam:g} |", f"| **{lam:g}** |") if lam == pick else row)
    out.append(
        "\nSelected MNIST preset (architecture, lambda, T, alpha): "
        + ", ".join(f"({a}, {pick:g}, {chosen[a][0]:g}, {chosen[a][1]:g})" for a in MNIST_ARCHS)
    )
    return "\n".join(out)


# ----------------------------------------------------------------------------- investigation
INVESTIGATE = [
    ("misleader (preset, lambda 1)", "misleader", {}),
    ("lambda 0 (misleader-lambda0)", "misleader-lambda0", {}),
    ("lambda 2", "misleader", {"lam": 2.0}),
    ("lambda 5", "misleader", {"lam": 5.0}),
    ("a_iter 10 (stronger simulated attacker)", "misleader", {"a_iter": 10}),
    ("a_iter 5 accumulated, one step (public code)", "misleader", {"attacker_update": "accumulate"}),
]


def run_investigate(book: MatchBook, cfg: dict, cache: str) -> str:
    seeds = cfg["seeds"]
    out = [
        "Variants of `misleader` (one setting changed). Clean accuracy and clone accuracy (%, test split); "
        "the extraction term's own objective: final mean KL(member || simulated attacker) on augmented "
        "batches and the simulated attacker's validation agreement with its member (%), averaged over "
        "members; mean entropy (nats) of the served probabilities on test images and on uniform-noise "
        "images (DFME's queries start out as noise-like images).\n",
        "| variant | clean | KL(member‖sim.) | sim. agreement | entropy test | entropy noise | "
        + " | ".join(f"clone, {ATTACK_LABEL[a]}" for a in ATTACKS)
        + " |",
        "|---|---|---|---|---|---|" + "---|" * len(ATTACKS),
    ]
    variants = [("undefended", "undefended", {})] + INVESTIGATE
    for label, name, params in variants:
        full_params = {} if name == "undefended" else {**cfg["defender_params"], **params}
        rows = {
            a: [
                book.play(
                    defender=name,
                    defender_params=full_params,
                    attacker=a[0],
                    label_mode=a[1],
                    seed=s,
                    query_budget=cfg["budgets"][a[0]],
                    attacker_params=cfg["attacker_params"][a[0]],
                    victim=cfg["victim"],
                )
                for s in seeds
            ]
            for a in ATTACKS
        }
        first = rows[ATTACKS[0]]
        ent = [_entropies(cache, name, full_params, s, cfg["victim"]) for s in seeds]
        if name == "undefended":
            ext, agree = "-", "-"
        else:
            ext = pm([statistics.fmean(m["final_mean_ext"] for m in r["defender"]["members"]) for r in first], 1.0, 3)
            agree = pm(
                [
                    statistics.fmean(m["simulated_attacker_val_agreement"] for m in r["defender"]["members"])
                    for r in first
                ]
            )
        out.append(
            f"| {label} | {pm([r['defender_accuracy'] for r in first])} | {ext} | {agree} | "
            f"{pm([e[0] for e in ent], 1.0, 2)} | {pm([e[1] for e in ent], 1.0, 2)} | "
            + " | ".join(pm([r["clone_accuracy"] for r in rows[a]]) for a in ATTACKS)
            + " |"
        )
    return "\n".join(out)


# ----------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run; prints, writes nothing")
    parser.add_argument("--parts", default="select,grid,serving,investigate")
    parser.add_argument("--cache-dir", default=None, help="artifact cache (default /tmp/arena-bench-misleader[-quick])")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: on the shared 2-core machine 2 threads ran ~10x slower)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = QUICK if args.quick else FULL
    cache = args.cache_dir or ("/tmp/arena-bench-misleader-quick" if args.quick else "/tmp/arena-bench-misleader")
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    book = MatchBook(cache)
    saved_path = Path(cache) / "misleader-bench-sections.json"
    sections = json.loads(saved_path.read_text()) if saved_path.exists() else {}
    started = time.perf_counter()
    for part in parts:
        part_started = time.perf_counter()
        print(f"== {part}", flush=True)
        if part == "select":
            text = run_select(cache, args.quick, cfg["victim"])
        elif part == "grid":
            text = grid_tables(run_grid(book, cfg), cfg)
        elif part == "serving":
            text = run_serving(args.quick)
        elif part == "investigate":
            text = run_investigate(book, cfg, cache)
        else:
            raise SystemExit(f"unknown part {part!r}; use select, grid, serving, investigate")
        print(text, flush=True)
        print(f"({part}: {time.perf_counter() - part_started:.0f}s)\n", flush=True)
        sections[part] = text
        if not args.quick:
            saved_path.write_text(json.dumps(sections, indent=1))
    print(f"total {time.perf_counter() - started:.0f}s")
    if args.quick:
        return
    from engines.defenders.misleader import PRESETS

    header = (
        "## MISLEADER on mnist5k\n\n"
        "Command: `.venv/bin/python benchmarks/misleader.py` "
        f"(CPU, {args.threads} torch thread(s); seeds {', '.join(map(str, cfg['seeds']))}; mean ± std over seeds). "
        "Victim: LeNet-5, arena default (40 epochs). Defenders: the `misleader` MNIST preset (3 members, "
        f"{PRESETS['mnist']['epochs']} epochs, batch {PRESETS['mnist']['batch_size']}, a_iter 5) and its ablations. Attacks at CPU scale: KnockoffNets random "
        f"(in-distribution pool, budget {cfg['budgets']['knockoff']}, default training), DFME (budget "
        f"{cfg['budgets']['dfme']:,}, default settings). Fidelity and accuracy on the 1,000-image test split.\n"
    )
    titles = {
        "select": "### Choosing the MNIST preset on the validation split",
        "grid": "### Utility, extraction and training cost",
        "serving": "### Serving cost",
        "investigate": "### Investigation (is the extraction term doing anything?)",
    }
    body = "\n\n".join(
        f"{titles[p]}\n\n{sections[p]}" for p in ("select", "grid", "serving", "investigate") if p in sections
    )
    print("wrote", write_section("misleader", header + "\n" + body))


if __name__ == "__main__":
    main()
