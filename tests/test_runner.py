"""Match orchestration with the database: checkpoints survive crashes and cancellation."""

import pytest
import torch

from arena import runner
from engines.match import MatchEnvironment, MatchObserver
from engines.records import CheckpointRow, CloneScores, DefenderFacts, MatchSummary, VictimFacts
from engines.spec import MatchSpec
from storage import open_database, queries

TINY = dict(
    device="cpu",
    attacker="knockoff",
    query_budget=40,
    attacker_params={"epochs": 2, "min_steps": 10},
    victim={"train": {"epochs": 2, "batch_size": 128}},
)


@pytest.fixture
def engine(tmp_path):
    engine = open_database(str(tmp_path / "r.db"))
    yield engine
    engine.dispose()


class Trigger(MatchObserver):
    def __init__(self, after, action):
        self.seen, self.after, self.action = 0, after, action

    def checkpoint(self, row):
        self.seen += 1
        if self.seen == self.after:
            self.action()


def _queue(engine, **fields):
    spec = MatchSpec(**{**TINY, **fields}).resolve()
    _, ids = runner.enqueue(engine, [spec])
    return ids[0]


def test_crash_keeps_committed_checkpoints(engine, cache_dir):
    match_id = _queue(engine)

    def crash():
        raise RuntimeError("simulated crash")

    status = runner.run_match(engine, match_id, MatchEnvironment(cache_root=cache_dir), extra=[Trigger(3, crash)])
    assert status == "failed"
    match = queries.get_match(engine, match_id)
    assert match.status == "failed" and "simulated crash" in match.error
    assert len(queries.checkpoints(engine, match_id)) == 3


def test_cancel_marks_cancelled_and_keeps_checkpoints(engine, cache_dir):
    match_id = _queue(engine)
    trigger = Trigger(2, lambda: queries.request_cancel(engine, match_id))
    status = runner.run_match(
        engine, match_id, MatchEnvironment(cache_root=cache_dir), extra=[trigger], poll_seconds=0.0
    )
    assert status == "cancelled"
    assert queries.get_match(engine, match_id).status == "cancelled"
    assert len(queries.checkpoints(engine, match_id)) >= 2
    kinds = [e.kind for e in queries.events(engine, match_id)]
    assert "phase" in kinds


def test_cancelling_a_queued_match_means_it_never_runs(engine, cache_dir):
    match_id = _queue(engine)
    assert queries.request_cancel(engine, match_id)
    assert runner.run_match(engine, match_id, MatchEnvironment(cache_root=cache_dir)) == "cancelled"
    assert queries.checkpoints(engine, match_id) == []


def test_a_match_runs_once(engine, cache_dir):
    match_id = _queue(engine)
    assert runner.claim_next(engine) == match_id
    assert runner.claim_next(engine) is None
    # someone else claimed it: run_match without `claimed` leaves it alone
    assert runner.run_match(engine, match_id, MatchEnvironment(cache_root=cache_dir)) == "running"


def test_leaderboard_ranks_lowest_clone_accuracy_first(engine):
    spec = MatchSpec(**TINY).resolve()
    _, ids = runner.enqueue(engine, [spec, spec.model_copy(update={"defender": "undefended", "seed": 1})])
    for match_id, accuracy in zip(ids, (0.9, 0.4)):
        queries.add_checkpoint(
            engine,
            match_id,
            0,
            CheckpointRow(40, accuracy, accuracy, accuracy, accuracy, wall_seconds=1.0, serving_seconds=0.1),
        )
        queries.update_match(engine, match_id, status="done")
    board = queries.leaderboard(engine)
    assert [(r.id, r.rank) for r in board] == [(ids[1], 1), (ids[0], 2)]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_tiny_match_on_gpu(engine, cache_dir):
    match_id = _queue(engine, device="cuda")
    assert runner.run_match(engine, match_id, MatchEnvironment(cache_root=cache_dir)) == "done"


def test_records_round_trip_through_the_database(engine):
    """What the engine emits is what the CLI and TUI read back: same values, typed."""
    match_id = _queue(engine)
    rows = [
        CheckpointRow(10, 0.5, 0.5, 0.4, 0.45, wall_seconds=1.25, serving_seconds=0.125),
        CheckpointRow(40, 0.1 + 0.2, 0.5, 1 / 3, 2 / 3, wall_seconds=2.5, serving_seconds=0.25),
    ]
    for index, row in enumerate(rows):
        queries.add_checkpoint(engine, match_id, index, row)
    stored = queries.checkpoints(engine, match_id)
    assert [p.row for p in stored] == rows and [p.index for p in stored] == [0, 1]
    assert queries.checkpoints(engine, match_id, after_index=0)[0].row == rows[1]

    victim = VictimFacts(test_accuracy=0.97, reused=True, training={"epochs": 2, "best_epoch": 1})
    defender = DefenderFacts(clean_accuracy=0.96, prepare_seconds=0.5, report={"members": [1, 2]})
    queries.record_defender_ready(engine, match_id, victim, defender)
    summary = MatchSummary(
        victim=victim,
        defender=defender,
        final=rows[-1],
        queries_used=40,
        serving_seconds_per_query=0.25 / 40,
        attack_seconds=3.0,
        queries_per_second=40 / 3.0,
        split={"split_seed": 0},
    )
    queries.finish_match(engine, match_id, summary, wall_seconds=9.0)
    match = queries.get_match(engine, match_id)
    assert match.status == "done" and match.wall_seconds == 9.0
    assert (match.victim_accuracy, match.defender_accuracy) == (0.97, 0.96)
    assert (
        CloneScores(match.clone_accuracy, match.best_clone_accuracy, match.fidelity_served, match.fidelity_victim)
        == rows[-1].scores
    )
    assert (match.queries_used, match.serving_seconds_per_query, match.queries_per_second) == (40, 0.25 / 40, 40 / 3)
    assert match.details == {
        "split": {"split_seed": 0},
        "victim": victim.as_dict(),
        "defender": defender.as_dict(),
        "attack_seconds": 3.0,
    }
