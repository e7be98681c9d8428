"""End-to-end matches at tiny budgets through the engine (no database)."""

import pytest

from engines.match import MatchEnvironment, MatchObserver, play_match
from engines.spec import MatchSpec

TINY_VICTIM = {"arch": None, "train": {"epochs": 2, "batch_size": 128, "lr": 0.05}}
TINY_KNOCKOFF = {"epochs": 2, "min_steps": 10}
TINY_DFME = {"batch_size": 16, "generator_width": 8, "nz": 16}


class Recorder(MatchObserver):
    def __init__(self):
        self.rows, self.phases = [], []

    def phase(self, phase, detail=""):
        self.phases.append(phase)

    def checkpoint(self, row):
        self.rows.append(row)


def play(tmp_path, **fields):
    spec = MatchSpec(device="cpu", victim=TINY_VICTIM, **fields).resolve()
    observer = Recorder()
    summary = play_match(spec, observer, MatchEnvironment(cache_root=str(tmp_path / "cache")))
    return summary, observer


@pytest.mark.parametrize("label_mode", ["soft", "hard", "topk"])
def test_knockoff_spends_exactly_its_budget(tmp_path, label_mode):
    summary, obs = play(
        tmp_path, attacker="knockoff", label_mode=label_mode, query_budget=40, attacker_params=TINY_KNOCKOFF
    )
    assert summary.queries_used == 40
    assert len(obs.rows) >= 10 and obs.rows[-1].queries_used == 40
    assert [r.queries_used for r in obs.rows] == sorted(r.queries_used for r in obs.rows)
    for row in obs.rows:
        assert 0 <= row.clone_accuracy <= 1 and 0 <= row.fidelity_served <= 1
    assert obs.phases[-1] == "attacking"


def test_dfme_counts_probes_and_generator_samples(tmp_path):
    per_iteration = 16 * (1 * 2 + 5)
    summary, obs = play(tmp_path, attacker="dfme", query_budget=3 * per_iteration + 10, attacker_params=TINY_DFME)
    # three whole iterations; the 10 left over cannot buy another one
    assert summary.queries_used == 3 * per_iteration
    assert obs.rows[-1].queries_used == 3 * per_iteration


def test_same_seed_same_numbers(tmp_path):
    first, obs1 = play(tmp_path / "a", attacker="knockoff", query_budget=30, attacker_params=TINY_KNOCKOFF, seed=3)
    second, obs2 = play(tmp_path / "b", attacker="knockoff", query_budget=30, attacker_params=TINY_KNOCKOFF, seed=3)

    def strip(rows):
        return [(r.queries_used, r.scores) for r in rows]  # the timings differ

    assert strip(obs1.rows) == strip(obs2.rows)
    assert first.victim.test_accuracy == second.victim.test_accuracy


def test_dfme_is_deterministic(tmp_path):
    budget = 2 * 16 * 7
    _, obs1 = play(tmp_path / "a", attacker="dfme", query_budget=budget, attacker_params=TINY_DFME, seed=1)
    _, obs2 = play(tmp_path / "b", attacker="dfme", query_budget=budget, attacker_params=TINY_DFME, seed=1)
    assert [r.clone_accuracy for r in obs1.rows] == [r.clone_accuracy for r in obs2.rows]


def test_victim_is_reused_from_cache(tmp_path):
    first, _ = play(tmp_path, attacker="knockoff", query_budget=20, attacker_params=TINY_KNOCKOFF)
    second, _ = play(tmp_path, attacker="knockoff", query_budget=20, attacker_params=TINY_KNOCKOFF, label_mode="hard")
    assert first.victim.reused is False and second.victim.reused is True


def test_knockoff_refuses_budget_larger_than_pool(tmp_path):
    from engines.errors import ArenaError

    with pytest.raises(ArenaError, match="exceeds the query pool"):
        play(tmp_path, attacker="knockoff", query_budget=5000)


def test_dfme_refuses_hard_labels(tmp_path):
    from engines.errors import ArenaError

    with pytest.raises(ArenaError, match="does not support --label hard"):
        play(tmp_path, attacker="dfme", label_mode="hard", query_budget=2000)


def test_cancellation_reaches_a_data_free_attack_between_two_oracle_batches(tmp_path):
    """dfme asks ctx.should_stop once per iteration (7 oracle batches here); the oracle asks it
    before every batch, so a cancellation is noticed after the first batch, not the iteration."""
    from engines.errors import MatchCancelled

    class CancelAfterFirstBatch(Recorder):
        spent: list[int] = []

        def progress(self, done, total, message):
            if self.phases[-1] == "attacking":
                self.spent.append(done)

        def should_stop(self):
            if self.spent and self.spent[-1] > 0:
                raise MatchCancelled()

    spec = MatchSpec(
        device="cpu", victim=TINY_VICTIM, attacker="dfme", query_budget=3 * 16 * 7, attacker_params=TINY_DFME
    ).resolve()
    observer = CancelAfterFirstBatch()
    observer.spent = []
    with pytest.raises(MatchCancelled):
        play_match(spec, observer, MatchEnvironment(cache_root=str(tmp_path / "cache")))
    # the gradient estimate's batch: 16 images and 16 * grad_m probes; an iteration costs 112
    assert observer.spent[-1] == 32 and observer.rows == []
