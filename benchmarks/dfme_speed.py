"""DFME speed: the arena's DFME loop beside the DFME authors' public code, on this CPU.

    python benchmarks/dfme_speed.py --reference-dir /work/ref/dfme --bf16 mnist  # CIFAR + MNIST
    python benchmarks/dfme_speed.py --settings mnist --repeats 5               # quicker
    python benchmarks/dfme_speed.py ... --write                                # + docs/results.md
    python benchmarks/dfme_speed.py --floor        # float32 arithmetic floor of one iteration

The reference is Truong et al.'s code (github.com/cake-lab/datafree-model-extraction, folder
`dfme/`), checked out outside this repository and never committed; without
`--reference-dir` the script says so and measures the arena side only. Random weights (speed
does not depend on them).

Sides, each one DFME iteration at a time, interleaved in one process (round r runs one
iteration of every side in turn, so machine load falls on all of them) and reported as the
best of `--repeats` iterations after `--warmup` untimed ones per side (CIFAR: none, an
iteration costs minutes here; each side's first iteration then includes building its
networks, well under a second):
- reference: its `train()` for one iteration (`epoch_itrs=1`), its own ResNet-34-8x victim
  (or LeNet-5 at the MNIST preset), ResNet-18-8x clone and GeneratorA;
- arena, plain: the arena's loop with `_common.FAST_PATHS = False`, i.e. the base commit's
  computation (default layout everywhere); victim answers through the undefended defender and
  the Oracle, as in a match (engines/serving.py inference copy);
- arena: the same with the fast paths (the shipped default);
- arena bf16 (settings named by `--bf16`): `precision="bf16"` (opt-in; not counted in the
  comparison).

Profile: the wall time of each labelled phase of the arena's iterations (the
`record_function` labels in dfme.py, timed with perf_counter here): victim answers, clone on
probes, clone training, generator forward/backward, other; shown for each arena side's best
iteration.

Torch threads are set explicitly (`--threads`, default 2) and printed.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import io
import platform
import sys
import tempfile
import threading
import time
import types
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from engines.attackers import _common  # noqa: E402
from engines.attackers import dfme as dfme_module  # noqa: E402
from engines.attackers.base import AttackContext  # noqa: E402
from engines.attackers.dfme import Dfme, DfmeParams  # noqa: E402
from engines.defenders.base import DefenderContext  # noqa: E402
from engines.defenders.undefended import Undefended  # noqa: E402
from engines.models.base import build_model  # noqa: E402
from engines.oracle import Oracle  # noqa: E402


@dataclass(frozen=True)
class Setting:
    name: str
    family: str
    victim: str
    clone: str
    image_shape: tuple[int, int, int]
    params: dict  # DfmeParams values (the rest: defaults)


SETTINGS = {
    # the paper's CIFAR-10 settings (DFME, Table 1 / run_cifar_dfme.sh)
    "cifar": Setting(
        "CIFAR (paper)",
        "cifar10",
        "resnet34_8x",
        "resnet18_8x",
        (3, 32, 32),
        {
            "batch_size": 256,
            "generator_width": 64,
            "nz": 256,
            "g_iter": 1,
            "d_iter": 5,
            "grad_m": 1,
            "lr_generator": 1e-4,
            "clone_arch": "resnet18_8x",
        },
    ),
    # the arena's CPU-scale MNIST preset (DfmeParams defaults), LeNet-5 victim and clone
    "mnist": Setting("MNIST (arena preset)", "mnist", "lenet5", "lenet5", (1, 32, 32), {}),
}
PHASES = ["victim answers", "clone on probes", "clone training", "generator forward", "generator backward"]
PHASE_SECONDS = dict.fromkeys(PHASES, 0.0)  # of the arena iteration now running (one side runs at a time)


class PhaseTimer:
    """Stands in for `torch.profiler.record_function` in the DFME module during this benchmark:
    adds the wall time of each labelled phase to PHASE_SECONDS (no profiler overhead)."""

    def __init__(self, label: str):
        self.label = label

    def __enter__(self):
        self.started = time.perf_counter()

    def __exit__(self, *exc) -> None:
        PHASE_SECONDS[self.label] += time.perf_counter() - self.started


dfme_module.record_function = PhaseTimer


def gemm_gflops(threads: int, n: int = 4096, repeats: int = 5) -> float:
    """This CPU's float32 matrix-multiply rate (GFLOP/s, best of `repeats`): a practical ceiling
    for convolution kernels, which lower to the same kind of blocked GEMM."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(2):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - started)
    return 2 * n**3 / best / 1e9


def arithmetic_floor(setting: Setting, gflops: float) -> list[str]:
    """One iteration's convolution/linear work (multiply-accumulates counted from the layers'
    shapes; training = 3x a forward pass) and the time it needs at `gflops`: no float32
    implementation of the same algorithm can be faster than the whole iteration at that rate."""
    from engines.models.base import multiply_accumulates

    params = DfmeParams(**setting.params)
    channels = setting.image_shape[0]
    victim = multiply_accumulates(build_model(setting.victim, channels, 10, (0.5,), (0.5,)), setting.image_shape)
    clone = multiply_accumulates(build_model(setting.clone, channels, 10, (0.5,), (0.5,)), setting.image_shape)
    probes = params.batch_size * params.g_iter * (params.grad_m + 1)
    trained = params.batch_size * params.d_iter
    flops = 2 * ((probes + trained) * victim + probes * clone + 3 * trained * clone)
    return [setting.name, f"{flops / 1e12:.2f}", f"{gflops:.0f}", f"{flops / gflops / 1e9:.1f}"]


def cost_of(params: DfmeParams) -> int:
    return params.batch_size * (params.g_iter * (params.grad_m + 1) + params.d_iter)


class Side:
    """One contender, run in its own thread; it pauses after every iteration until resumed,
    and records each iteration's own time (waiting excluded)."""

    def __init__(self, name: str, loop):
        self.name, self.loop = name, loop
        self.go, self.done = threading.Semaphore(0), threading.Semaphore(0)
        self.times: list[float] = []
        self.error: BaseException | None = None
        self.started = 0.0
        self.thread = threading.Thread(target=self._main, daemon=True)
        self.thread.start()

    def _main(self) -> None:
        self.go.acquire()
        self.started = time.perf_counter()
        try:
            self.loop(self.iteration_done)
        except BaseException as error:  # reported by the main thread
            self.error = error
        self.done.release()

    def iteration_done(self) -> None:
        self.times.append(time.perf_counter() - self.started)
        self.done.release()
        self.go.acquire()
        self.started = time.perf_counter()

    def step(self) -> None:
        self.go.release()
        self.done.acquire()
        if self.error is not None:
            raise self.error


def victim_oracle(setting: Setting, budget: int) -> Oracle:
    """The arena's query path: random-weight victim -> undefended defender -> Oracle."""
    mean, std = (0.5,) * setting.image_shape[0], (0.25,) * setting.image_shape[0]
    torch.manual_seed(0)
    victim = build_model(setting.victim, setting.image_shape[0], 10, mean, std).eval()
    ctx = DefenderContext(victim, {}, None, torch.device("cpu"), None, 0)
    defender = Undefended(Undefended.Params() if hasattr(Undefended, "Params") else None, ctx)
    defender.prepare()
    return Oracle(defender.serve, budget, "soft", 10, setting.image_shape, torch.device("cpu"))


def attack_context(setting: Setting, progress=lambda done, total, msg: None) -> AttackContext:
    channels = setting.image_shape[0]
    return AttackContext(
        family=setting.family,
        num_classes=10,
        image_shape=setting.image_shape,
        mean=(0.5,) * channels,
        std=(0.25,) * channels,
        pool=None,
        device=torch.device("cpu"),
        seed=0,
        checkpoints=[],
        progress=progress,
    )


def arena_loop(setting: Setting, iterations: int, fast: bool, phases: list[dict], precision: str = "fp32"):
    """One arena run of `iterations` iterations; appends each iteration's phase seconds to `phases`."""
    params = DfmeParams(**{**setting.params, "precision": precision})
    attacker = Dfme(params)

    def resume() -> None:
        _common.FAST_PATHS = fast  # another side may have set it while this one waited
        PHASE_SECONDS.update(dict.fromkeys(PHASES, 0.0))

    def loop(iteration_done) -> None:
        resume()
        oracle = victim_oracle(setting, cost_of(params) * iterations)

        def progress(done, total, msg) -> None:
            phases.append(dict(PHASE_SECONDS))
            iteration_done()
            resume()

        attacker.run(oracle, attack_context(setting, progress))

    return loop


def import_reference(reference_dir: Path):
    """The reference's `train` module (its imports of debugging/progress-bar packages that
    the arena's environment lacks are stubbed: they are not used on this path)."""
    for missing in ("ipdb", "tqdm"):
        try:
            __import__(missing)
        except ImportError:
            stub = types.ModuleType(missing)
            stub.__spec__ = importlib.machinery.ModuleSpec(missing, None)
            stub.tqdm = lambda iterable=None, *a, **k: iterable
            sys.modules[missing] = stub
    sys.path.insert(0, str(reference_dir))
    import train as reference_train  # the reference's dfme/train.py

    reference_train.file = io.StringIO()  # its `myprint` log file
    return reference_train


def reference_loop(reference_train, setting: Setting, iterations: int):
    import network  # the reference's dfme/network package

    params = DfmeParams(**setting.params)
    channels = setting.image_shape[0]
    log_dir = tempfile.mkdtemp(prefix="dfme-ref-")
    args = types.SimpleNamespace(
        epoch_itrs=1,
        g_iter=params.g_iter,
        d_iter=params.d_iter,
        batch_size=params.batch_size,
        nz=params.nz,
        approx_grad=1,
        grad_epsilon=params.grad_epsilon,
        grad_m=params.grad_m,
        num_classes=10,
        G_activation=torch.tanh,
        loss="l1",
        no_logits=1,
        logit_correction="mean",
        forward_differences=1,
        rec_grad_norm=0,
        log_interval=10,
        log_dir=log_dir,
        query_budget=10**12,
        cost_per_iteration=cost_of(params),
        MAZE=0,
    )

    def loop(iteration_done) -> None:
        torch.manual_seed(0)
        if setting.victim == "resnet34_8x":
            teacher, student = network.resnet_8x.ResNet34_8x(10), network.resnet_8x.ResNet18_8x(10)
        else:
            teacher, student = network.lenet.LeNet5(), network.lenet.LeNet5()
        teacher.eval()
        generator = network.gan.GeneratorA(
            nz=params.nz,
            ngf=params.generator_width,
            nc=channels,
            img_size=setting.image_shape[1],
            activation=torch.tanh,
        )
        opt_s = torch.optim.SGD(
            student.parameters(), lr=params.lr_clone, weight_decay=params.weight_decay, momentum=0.9
        )
        opt_g = torch.optim.Adam(generator.parameters(), lr=params.lr_generator)
        for epoch in range(iterations):
            reference_train.train(args, teacher, student, generator, "cpu", (opt_s, opt_g), epoch)
            iteration_done()

    return loop


def interleaved(sides: list[Side], rounds: int) -> None:
    for round_ in range(rounds):
        for side in sides:
            side.step()
            print(f"  round {round_}: {side.name:<22} {side.times[-1]:8.2f} s", flush=True)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference-dir", type=Path, default=None, help="local checkout of the reference's dfme/")
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=["cifar", "mnist"])
    parser.add_argument("--repeats", type=int, default=None, help="timed iterations per side (cifar 2, mnist 5)")
    parser.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="untimed first iterations per side (cifar 0: one costs minutes; mnist 1)",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--bf16", nargs="*", choices=list(SETTINGS), default=[], help="settings where precision='bf16' is also timed"
    )
    parser.add_argument("--write", action="store_true", help="rewrite the dfme_speed section of docs/results.md")
    parser.add_argument(
        "--floor", action="store_true", help="only print each setting's float32 arithmetic floor (seconds)"
    )
    args = parser.parse_args()
    if args.floor:
        gflops = gemm_gflops(args.threads)
        rows = [arithmetic_floor(SETTINGS[key], gflops) for key in args.settings]
        header = ["setting", "TFLOP/iteration (convs, linear)", "fp32 GEMM GFLOP/s", "floor s/iteration"]
        print(f"torch threads {args.threads}, generator excluded\n\n" + markdown_table(header, rows))
        return

    torch.set_num_threads(args.threads)
    out = [
        f"torch {torch.__version__}, torch threads {torch.get_num_threads()} (set explicitly), "
        f"{platform.processor() or platform.machine()}, {time.strftime('%Y-%m-%d %H:%M')}"
    ]
    reference_train = None
    if args.reference_dir is None or not (args.reference_dir / "train.py").exists():
        out.append(
            "Reference: not found (pass --reference-dir PATH to a local copy of the DFME authors' "
            "dfme/ folder); the arena side only."
        )
    else:
        reference_train = import_reference(args.reference_dir.resolve())
        out.append(f"Reference: {args.reference_dir} (cake-lab/datafree-model-extraction, dfme/)")
    print("\n".join(out), flush=True)

    speed_rows, profile_rows = [], []
    for key in args.settings:
        setting = SETTINGS[key]
        params = DfmeParams(**setting.params)
        cost = cost_of(params)
        repeats = args.repeats or (2 if key == "cifar" else 5)
        warmup = args.warmup if args.warmup is not None else (0 if key == "cifar" else 1)
        rounds = warmup + repeats
        print(f"\n{setting.name}: {cost} queries/iteration, best of {repeats} after {warmup} warm-up", flush=True)
        loops, phases = [], {}
        if reference_train is not None:
            loops.append(("reference", reference_loop(reference_train, setting, rounds)))
        arena_sides = [("arena, plain (before)", False, "fp32"), ("arena (after)", True, "fp32")]
        if key in args.bf16:
            arena_sides.append(("arena bf16 (opt-in)", True, "bf16"))
        for name, fast, precision in arena_sides:
            phases[name] = []
            loops.append((name, arena_loop(setting, rounds, fast, phases[name], precision)))
        sides = [Side(name, loop) for name, loop in loops]
        interleaved(sides, rounds)
        best = {side.name: min(side.times[warmup:]) for side in sides}
        base = best.get("reference")
        for side in sides:
            ratio = f"{best['reference'] / best[side.name]:.2f}x" if base else "-"
            speed_rows.append(
                [setting.name, side.name, f"{best[side.name]:.2f}", f"{cost / best[side.name]:.1f}", ratio]
            )
        for side in sides:
            side.step()  # let the thread finish its run
        for side in sides:
            if side.name not in phases:
                continue
            index = side.times.index(best[side.name])  # the best timed iteration
            seconds, total = phases[side.name][index], side.times[index]
            other = total - sum(seconds.values())
            for phase, value in [*seconds.items(), ("other", other), ("total", total)]:
                profile_rows.append([setting.name, side.name, phase, f"{value:.2f}", f"{100 * value / total:.0f} %"])

    speed = markdown_table(["setting", "side", "s/iteration (best)", "queries/s", "vs reference"], speed_rows)
    text = "\n".join(out) + "\n\n" + speed
    if profile_rows:
        text += (
            "\n\nWhere the best arena iteration of each side spent its time (wall clock per phase label of "
            "engines/attackers/dfme.py; `other`: the rest of the iteration):\n\n"
        )
        text += markdown_table(["setting", "loop", "phase", "seconds", "share"], profile_rows)
    print("\n" + text)
    if args.write:
        from benchmarks._results import write_section

        command = "python benchmarks/dfme_speed.py " + " ".join(sys.argv[1:])
        write_section("dfme_speed", f"## DFME speed against the reference code\n\n`{command}`\n\n{text}")


if __name__ == "__main__":
    main()
