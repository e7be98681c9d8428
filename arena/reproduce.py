"""`arena reproduce ID`: replay a stored match's resolved spec and compare every number.

The replay uses the stored spec (seed included) and the stored torch thread count, and by
default retrains the victim and the defender in a fresh temporary cache, so "identical"
means the whole match, not just the attack, reproduces. On CPU the numbers must match to
the last digit; on a GPU, or with another torch version, they may not, and the report says
which values differ.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass

from engines.errors import ArenaError

_CHECKPOINT_FIELDS = ("queries_used", "clone_accuracy", "best_clone_accuracy", "fidelity_served", "fidelity_victim")


@dataclass
class ReproduceReport:
    rows: list[dict]  # what, stored, replayed, equal
    threads: int | None
    device: str

    @property
    def differences(self) -> int:
        return sum(not row["equal"] for row in self.rows)

    @property
    def identical(self) -> bool:
        return self.differences == 0


def reproduce_match(engine, match_id: int, env, reuse_cache: bool = False) -> ReproduceReport:
    import torch

    from engines.devices import resolve_device
    from engines.match import MatchEnvironment, MatchObserver, play_match
    from engines.spec import MatchSpec
    from storage import queries

    match = queries.get_match(engine, match_id)
    if match is None:
        raise ArenaError(f"no match {match_id} in this database; see `arena leaderboard --status all`")
    if match.status != "done":
        raise ArenaError(f"match {match_id} is {match.status}; only a done match can be reproduced")
    spec = MatchSpec.model_validate(match.config)
    threads = match.provenance.get("cpu_threads")
    if threads:
        torch.set_num_threads(int(threads))  # summation order, hence the last digits, depends on it
    replayed: list[dict] = []

    class Collect(MatchObserver):
        def checkpoint(self, row) -> None:
            replayed.append(row)

    with tempfile.TemporaryDirectory(prefix="arena-reproduce-") as fresh:
        cache = env.cache_root if reuse_cache else fresh
        summary = play_match(spec, Collect(), MatchEnvironment(data_root=env.data_root, cache_root=cache))
    rows = [
        _compare("victim_accuracy", match.victim_accuracy, summary.victim.test_accuracy),
        _compare("defender_accuracy", match.defender_accuracy, summary.defender.clean_accuracy),
    ]
    stored_points = queries.checkpoints(engine, match_id)
    rows.append(_compare("checkpoints", len(stored_points), len(replayed)))
    for index, (stored, again) in enumerate(zip(stored_points, replayed)):
        for name in _CHECKPOINT_FIELDS:
            rows.append(_compare(f"checkpoint {index} {name}", getattr(stored, name), getattr(again, name)))
    return ReproduceReport(rows=rows, threads=threads, device=str(resolve_device(spec.device)))


def _compare(what: str, stored, replayed) -> dict:
    return {"what": what, "stored": stored, "replayed": replayed, "equal": stored == replayed}
