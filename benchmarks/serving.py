"""Serving cost of the MISLEADER ensembles against their teachers, batch 256, on this CPU.

    .venv/bin/python benchmarks/serving.py                    # both presets, writes docs
    .venv/bin/python benchmarks/serving.py --quick            # smoke run (batch 8, 1 round), prints only

For each preset (`mnist`: LeNet-5 teacher, members lenet5 + lenet5_half + lenet5_fifth;
`cifar`: ResNet-34-8x teacher, members as in PRESETS["cifar"]) it times, at one batch size,
in one process and interleaved (every variant once per round, A, B, C, A, B, C, ...; the best
round of each is kept, so machine load affects every variant alike):
- the teacher unoptimised (`softmax(model(x))`, eval mode) and the teacher as the arena serves
  it (`ServingModel`, the `DefenderContext.victim_logits` path every defence answers through);
- each member unoptimised and as an inference copy (`ServingModel`);
- the ensemble before (the members' plain mean of softmax, one call per member: how
  `misleader` served on CPU before engines/serving.py) and after (`EnsembleServer`, what
  `misleader` serves now).
Ratios are time per query relative to the teacher, both the teacher as served and the plain
one. Weights and inputs are random (seed 0; BN statistics randomised as after training): the
cost of a forward pass does not depend on the weights' values. Every optimised answer is
checked against its unoptimised path (max |difference| printed). Without `--quick` the
"serving" section of docs/results.md is rewritten from the tables kept in `--store` (one
table per preset, so `--presets mnist` reruns one and keeps the other).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._results import write_section  # noqa: E402
from engines.defenders._misleader_serve import EnsembleServer, StackedLeNets, stackable_lenets  # noqa: E402
from engines.defenders.misleader import PRESETS  # noqa: E402
from engines.models import build_model, multiply_accumulates  # noqa: E402
from engines.serving import ServingModel  # noqa: E402

SETTINGS = {  # preset -> (channels, mean, std, teacher, goal: ensemble time / teacher-as-served time)
    "mnist": (1, (0.1307,), (0.3081,), "lenet5", 1.0),
    "cifar": (3, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), "resnet34_8x", 0.9),
}


def trained_like(model: nn.Module, seed: int) -> nn.Module:
    """Random batch-norm statistics and affine values, as after training (fresh ones are
    identities, which would flatter batch-norm folding's error check)."""
    g = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=g) * 0.1)
            module.running_var.copy_(torch.rand(module.num_features, generator=g) + 0.5)
            module.weight.data.copy_(torch.rand(module.num_features, generator=g) + 0.5)
            module.bias.data.copy_(torch.randn(module.num_features, generator=g) * 0.1)
    return model.eval()


def plain_probs(model: nn.Module):
    return lambda x: torch.softmax(model(x), dim=1)


def plain_ensemble(members: list[nn.Module]):
    def serve(x):
        total = torch.softmax(members[0](x), dim=1)
        for member in members[1:]:
            total = total + torch.softmax(member(x), dim=1)
        return total / len(members)

    return serve


def interleaved_best(variants: dict, x: torch.Tensor, rounds: int, label: str, warmup: int) -> dict[str, float]:
    """Best seconds per batch of each variant over `rounds` interleaved rounds, after one
    warm-up call on the first `warmup` images (oneDNN primitive creation, weight reorders)."""
    best = dict.fromkeys(variants, float("inf"))
    with torch.inference_mode():
        for fn in variants.values():
            fn(x[:warmup])
        for r in range(rounds):
            started = time.perf_counter()
            for name, fn in variants.items():
                t0 = time.perf_counter()
                fn(x)
                best[name] = min(best[name], time.perf_counter() - t0)
            if rounds <= 5 or (r + 1) % 10 == 0:
                print(f"  {label}: round {r + 1}/{rounds} ({time.perf_counter() - started:.0f}s)", flush=True)
    return best


def run_preset(preset: str, batch: int, rounds: int, member_baselines: bool) -> tuple[str, dict]:
    channels, mean, std, teacher_arch, goal = SETTINGS[preset]
    archs = [m[0] for m in PRESETS[preset]["members"]]
    torch.manual_seed(0)
    teacher = trained_like(build_model(teacher_arch, channels, 10, mean, std), 0)
    members = [trained_like(build_model(a, channels, 10, mean, std), k + 1) for k, a in enumerate(archs)]
    x = torch.rand((batch, channels, 32, 32), generator=torch.Generator().manual_seed(1))
    served_teacher = ServingModel(teacher)
    server = EnsembleServer([m for m in members], archs, torch.device("cpu"))
    variants = {
        "teacher, unoptimised": plain_probs(teacher),
        "teacher, as served": lambda t: torch.softmax(served_teacher(t), dim=1),
    }
    if stackable_lenets([teacher]):
        # the stacked path's own kernels (normalisation folded, ReLU fused) on the teacher alone,
        # which the arena's victim path does not use (it keeps LeNet victims bit-identical)
        teacher_stack = StackedLeNets([teacher])
        variants["teacher, with the ensemble's kernels"] = teacher_stack.prob_sum
    for arch, member in zip(archs, members):
        copy = ServingModel(member)
        if member_baselines:
            variants[f"{arch}, unoptimised"] = plain_probs(member)
        variants[f"{arch}, inference copy"] = (lambda c: lambda t: torch.softmax(c(t), dim=1))(copy)
    variants["ensemble before (plain members)"] = plain_ensemble(members)
    variants["ensemble after (EnsembleServer)"] = server
    with torch.inference_mode():
        check = x[: min(len(x), 32)]
        errors = {
            "teacher": (variants["teacher, as served"](check) - variants["teacher, unoptimised"](check)).abs().max(),
            "ensemble": (server(check) - plain_ensemble(members)(check)).abs().max(),
        }
    best = interleaved_best(variants, x, rounds, preset, batch if preset == "mnist" else min(batch, 64))
    macs = {a: multiply_accumulates(m, (channels, 32, 32)) for a, m in zip(archs, members)}
    teacher_macs = multiply_accumulates(teacher, (channels, 32, 32))
    served, plain = best["teacher, as served"], best["teacher, unoptimised"]
    lines = [
        f"**{preset}** preset: teacher {teacher_arch} ({teacher_macs / 1e6:,.1f}M multiply-accumulates per image), "
        f"members {' + '.join(archs)} ({sum(macs.values()) / 1e6:,.1f}M, "
        f"{sum(macs.values()) / teacher_macs:.2f}x the teacher's). Max |served - unoptimised| on 32 images: "
        f"teacher {errors['teacher']:.1e}, ensemble {errors['ensemble']:.1e}.\n",
        "| served model | queries/s | time/query vs teacher as served | vs unoptimised teacher |",
        "|---|---:|---:|---:|",
    ]
    for name, seconds in best.items():
        bold = "**" if name.startswith("ensemble after") else ""
        lines.append(
            f"| {bold}{name}{bold} | {batch / seconds:,.1f} | {bold}{seconds / served:.2f}x{bold} | {seconds / plain:.2f}x |"
        )
    ratio = best["ensemble after (EnsembleServer)"] / served
    verdict = "reached" if ratio <= goal else "NOT reached"
    summed = sum(best[f"{arch}, inference copy"] for arch in archs)
    lines.append(
        f"\nConsistency check: the members' inference copies timed one by one add up to "
        f"{batch / summed:,.1f} queries/s ({summed / served:.2f}x the teacher as served); "
        f"the ensemble was timed at {batch / best['ensemble after (EnsembleServer)']:,.1f}."
    )
    if "teacher, with the ensemble's kernels" in best:
        same = best["ensemble after (EnsembleServer)"] / best["teacher, with the ensemble's kernels"]
        lines.append(f"\nAgainst the teacher served with the ensemble's own kernels the ensemble costs {same:.2f}x.")
    lines.append(
        f"\nGoal: ensemble <= {goal:.1f}x the teacher as served: **{verdict}** ({ratio:.2f}x; "
        f"{best['ensemble after (EnsembleServer)'] / plain:.2f}x the unoptimised teacher; before: "
        f"{best['ensemble before (plain members)'] / served:.2f}x / {best['ensemble before (plain members)'] / plain:.2f}x)."
    )
    return "\n".join(lines), {"ratio": ratio, "goal": goal}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: batch 8, 1 round, prints only")
    parser.add_argument("--presets", default="mnist,cifar")
    parser.add_argument(
        "--rounds", type=int, default=None, help="interleaved rounds, best of N (default: 30 for mnist, 4 for cifar)"
    )
    parser.add_argument(
        "--member-baselines", action="store_true", help="also time each CIFAR member unoptimised (always for mnist)"
    )
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument(
        "--store",
        default="/tmp/arena-bench-serving.json",
        help="printed tables kept per preset (a rerun of one keeps the other)",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (default 1: the shared 2-core machine is loaded)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batch = 8 if args.quick else args.batch
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else ["?"] * 3
    default_rounds = {"mnist": 30, "cifar": 4}
    rounds = {p: 1 if args.quick else (args.rounds or default_rounds.get(p, 2)) for p in presets}
    header = (
        f"CPU, {torch.get_num_threads()} torch thread(s), batch {batch}, best of "
        f"{', '.join(f'{n} ({p})' for p, n in rounds.items())} interleaved rounds; "
        f"torch {torch.__version__}; load average at start {' '.join(load)} on {os.cpu_count()} CPU cores. "
        "Random weights and inputs (seed 0)."
    )
    print(header, flush=True)
    store = Path(args.store)
    stored = json.loads(store.read_text()) if store.exists() else {}
    for preset in presets:
        started = time.perf_counter()
        text, _ = run_preset(preset, batch, rounds[preset], args.member_baselines or preset == "mnist")
        print(text, flush=True)
        print(f"({preset}: {time.perf_counter() - started:.0f}s)\n", flush=True)
        if not args.quick:
            stored[preset] = {"text": text, "header": header}
            store.write_text(json.dumps(stored, indent=1))
    if args.quick:
        return
    command = "ARENA_THREADS=1 .venv/bin/python benchmarks/serving.py"
    body = "\n\n".join(f"{stored[p]['header']}\n\n{stored[p]['text']}" for p in ("mnist", "cifar") if p in stored)
    print("wrote", write_section("serving", f"## Serving cost of MISLEADER\n\nCommand: `{command}`.\n\n{body}"))


if __name__ == "__main__":
    main()
