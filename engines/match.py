"""Play one match: train (or load) the victim, prepare the defender, let the attacker spend
its budget through the oracle, and score the clone at every budget checkpoint.

The engine knows nothing about databases or terminals: it reports to a `MatchObserver`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from engines.artifacts import ArtifactStore
from engines.attackers import ATTACKERS, AttackContext
from engines.data import DatasetSplits, load_dataset, load_pool
from engines.defenders import DEFENDERS, Defender, DefenderContext
from engines.devices import resolve_device
from engines.metrics import CloneScorer
from engines.models import build_model
from engines.oracle import Oracle
from engines.records import CheckpointRow, DefenderFacts, MatchSummary, VictimFacts
from engines.spec import TRAINER_VERSION, MatchSpec, checkpoint_schedule
from engines.training import fit, predict_probs, seed_everything


class MatchObserver:
    """Receives a match's progress. Every method is optional to override."""

    def phase(self, phase: str, detail: str = "") -> None: ...
    def progress(self, done: int, total: int, message: str) -> None: ...
    def log(self, message: str) -> None: ...
    def defender_ready(self, victim: VictimFacts, defender: DefenderFacts) -> None: ...
    def checkpoint(self, row: CheckpointRow) -> None: ...
    def should_stop(self) -> None:
        """Raise engines.errors.MatchCancelled to stop the match."""


@dataclass
class MatchEnvironment:
    data_root: str = "data"
    cache_root: str = ".arena/cache"
    download: bool = False


def victim_key(spec: MatchSpec, splits: DatasetSplits) -> dict:
    return {
        "dataset": spec.dataset,
        "split": splits.split_info.get("split_seed"),
        "sizes": splits.sizes(),
        "arch": spec.victim.arch,
        "train": spec.victim.train.model_dump(mode="json"),
        "seed": spec.seed,
        "trainer_version": TRAINER_VERSION,
    }


def load_victim(
    spec: MatchSpec, splits: DatasetSplits, store: ArtifactStore, device: torch.device, observer: MatchObserver
) -> tuple[torch.nn.Module, dict, dict]:
    key = victim_key(spec, splits)

    def make():
        return build_model(spec.victim.arch, splits.channels, splits.num_classes, splits.mean, splits.std)

    def build():
        observer.phase("training victim", f"{spec.victim.arch} on {spec.dataset}")
        generator = seed_everything(spec.seed)
        model = make()
        report = fit(
            model,
            splits.defender_train.images,
            splits.defender_train.labels,
            spec.victim.train,
            device,
            generator,
            val=splits.defender_val,
            progress=observer.progress,
            should_stop=observer.should_stop,
        )
        return model.state_dict(), report

    tensors, report, reused = store.get_or_build("victim", key, build)
    model = make()
    model.load_state_dict(tensors)
    model.to(device).eval()
    if reused:
        observer.log(f"victim {spec.victim.arch} loaded from the artifact cache")
    return model, key, {**report, "reused": reused}


def play_match(spec: MatchSpec, observer: MatchObserver, env: MatchEnvironment) -> MatchSummary:
    """Play a resolved spec to the end and return its summary."""
    device = resolve_device(spec.device)
    store = ArtifactStore(env.cache_root)
    observer.phase("loading data", spec.dataset)
    splits = load_dataset(spec.dataset, env.data_root, env.cache_root, env.download)
    pool = load_pool(spec.pool, splits, env.data_root, env.cache_root, env.download)

    victim_model, key, victim_report = load_victim(spec, splits, store, device, observer)
    victim_labels = predict_probs(victim_model, splits.test.images, device).argmax(1)
    reused = victim_report.pop("reused")
    victim = VictimFacts(
        test_accuracy=(victim_labels == splits.test.labels).float().mean().item(), reused=reused, training=victim_report
    )
    observer.log(f"victim test accuracy {victim.test_accuracy:.4f}")

    defender_model, served_labels, defender = prepare_defender(
        spec, victim_model, key, splits, store, device, observer, env
    )
    observer.defender_ready(victim, defender)
    observer.log(f"defender clean accuracy {defender.clean_accuracy:.4f}")

    attacker_cls = ATTACKERS.get(spec.attacker)
    attacker = attacker_cls(attacker_cls.Params.model_validate(spec.attacker_params))
    attacker.validate(spec.label_mode, spec.query_budget, len(pool))
    scorer = CloneScorer(splits.test, served_labels, victim_labels, device)
    attack_started = time.perf_counter()
    recorded: list[CheckpointRow] = []
    reported = 0

    def report_spent() -> None:
        nonlocal reported
        if oracle.queries_used != reported:
            reported = oracle.queries_used
            observer.progress(reported, spec.query_budget, "")

    def should_stop() -> None:
        """The attack's cancellation check, asked by the attacks' loops and by the oracle before
        each batch: reports the queries spent so far, then lets the observer cancel."""
        report_spent()
        observer.should_stop()

    def evaluate(clone, queries_used: int) -> CheckpointRow:
        row = CheckpointRow.of(
            queries_used, scorer(clone), time.perf_counter() - attack_started, oracle.serving_seconds
        )
        recorded.append(row)
        observer.checkpoint(row)
        return row

    oracle = Oracle(
        defender_model.serve,
        spec.query_budget,
        spec.label_mode,
        splits.num_classes,
        splits.image_shape,
        device,
        topk=spec.topk,
        should_stop=should_stop,
    )
    ctx = AttackContext(
        family=DATASETS_FAMILY(spec.dataset),
        num_classes=splits.num_classes,
        image_shape=splits.image_shape,
        mean=splits.mean,
        std=splits.std,
        pool=pool,
        device=device,
        seed=spec.seed,
        checkpoints=checkpoint_schedule(spec.query_budget, spec.checkpoints),
        evaluate=evaluate,
        progress=observer.progress,
        log=observer.log,
        should_stop=should_stop,
        artifacts=store,
    )
    observer.phase("attacking", f"{spec.attacker} ({spec.label_mode}), budget {spec.query_budget}")
    seed_everything(spec.seed)
    clone = attacker.run(oracle, ctx)
    report_spent()
    if clone is not None and (not recorded or recorded[-1].queries_used != oracle.queries_used):
        evaluate(clone, oracle.queries_used)
    attack_seconds = time.perf_counter() - attack_started
    return MatchSummary(
        victim=victim,
        defender=defender,
        final=recorded[-1] if recorded else None,
        queries_used=oracle.queries_used,
        serving_seconds_per_query=oracle.serving_seconds / max(1, oracle.queries_used),
        attack_seconds=attack_seconds,
        queries_per_second=oracle.queries_used / attack_seconds if attack_seconds > 0 else None,
        split=splits.split_info,
    )


def prepare_defender(
    spec: MatchSpec,
    victim: torch.nn.Module,
    victim_key: dict,
    splits: DatasetSplits,
    store: ArtifactStore,
    device: torch.device,
    observer: MatchObserver,
    env: MatchEnvironment | None = None,
) -> tuple[Defender, torch.Tensor, DefenderFacts]:
    """Build and prepare the spec's defender; returns it, its served labels on the test split
    and its facts. (`env`: where data sets the defence names are read from.)"""
    env = env or MatchEnvironment()
    observer.phase("preparing defender", spec.defender)
    defender_cls = DEFENDERS.get(spec.defender)
    defender = defender_cls(
        defender_cls.Params.model_validate(spec.defender_params),
        DefenderContext(
            victim=victim,
            victim_key=victim_key,
            splits=splits,
            device=device,
            store=store,
            seed=spec.seed,
            data_root=env.data_root,
            download=env.download,
            progress=observer.progress,
            log=observer.log,
            should_stop=observer.should_stop,
        ),
    )
    started = time.perf_counter()
    report = dict(defender.prepare() or {})
    prepare_seconds = report.pop("prepare_seconds", time.perf_counter() - started)
    with torch.inference_mode():
        served = torch.cat(
            [
                defender.serve(splits.test.floats(slice(i, i + 1024)).to(device)).float().cpu()
                for i in range(0, len(splits.test), 1024)
            ]
        )
    served_labels = served.argmax(1)
    facts = DefenderFacts(
        clean_accuracy=(served_labels == splits.test.labels).float().mean().item(),
        prepare_seconds=prepare_seconds,
        report=report,
    )
    return defender, served_labels, facts


def DATASETS_FAMILY(name: str) -> str:
    from engines.data import DATASETS

    return DATASETS.get(name).family
