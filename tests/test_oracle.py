import pytest
import torch

from engines.errors import QueryBudgetExceeded
from engines.oracle import Oracle, answers_to_targets


class CountingDefender:
    """Serves fixed logits and counts every image it sees."""

    def __init__(self, num_classes=4):
        self.seen = 0
        self.weight = torch.randn(3 * 8 * 8, num_classes, generator=torch.Generator().manual_seed(0))

    def __call__(self, x):
        self.seen += x.shape[0]
        return torch.softmax(x.flatten(1) @ self.weight, dim=1)


def make_oracle(budget=10, mode="soft", defender=None, **kw):
    defender = defender or CountingDefender()
    return Oracle(defender, budget, mode, 4, (3, 8, 8), torch.device("cpu"), **kw), defender


def test_soft_answers_are_probabilities():
    oracle, _ = make_oracle()
    out = oracle.query(torch.rand(5, 3, 8, 8))
    assert out.shape == (5, 4)
    assert torch.allclose(out.sum(1), torch.ones(5))


def test_hard_and_topk_modes():
    x = torch.rand(6, 3, 8, 8)
    soft, _ = make_oracle(mode="soft")
    hard, _ = make_oracle(mode="hard")
    topk, _ = make_oracle(mode="topk", topk=2)
    probs = soft.query(x)
    labels = hard.query(x)
    assert labels.dtype == torch.int64 and torch.equal(labels, probs.argmax(1))
    top = topk.query(x)
    assert ((top > 0).sum(1) == 2).all()
    assert torch.equal(top.argmax(1), labels)


def test_budget_is_enforced_and_refused_batches_are_not_served():
    oracle, defender = make_oracle(budget=10)
    oracle.query(torch.rand(7, 3, 8, 8))
    with pytest.raises(QueryBudgetExceeded):
        oracle.query(torch.rand(4, 3, 8, 8))
    assert oracle.queries_used == 7 and defender.seen == 7
    oracle.query(torch.rand(3, 3, 8, 8))
    assert oracle.remaining == 0
    with pytest.raises(QueryBudgetExceeded):
        oracle.query(torch.rand(1, 3, 8, 8))


def test_every_image_counts_including_probes():
    oracle, defender = make_oracle(budget=100)
    base = torch.rand(4, 3, 8, 8)
    probes = base + 1e-3 * torch.randn(3, 4, 3, 8, 8)
    oracle.query(base)
    oracle.query(probes.flatten(0, 1))
    assert oracle.queries_used == 16 == defender.seen


def test_oracle_hides_the_defender():
    oracle, defender = make_oracle()
    assert not any(
        value is defender for value in (getattr(oracle, name, None) for name in dir(oracle) if not name.startswith("_"))
    )
    with pytest.raises(AttributeError):
        oracle.defender  # noqa: B018


def test_bad_shapes_are_rejected_without_spending():
    oracle, _ = make_oracle()
    with pytest.raises(ValueError):
        oracle.query(torch.rand(2, 1, 8, 8))
    assert oracle.queries_used == 0


def test_inputs_are_clamped_to_pixel_range():
    seen = []
    oracle = Oracle(
        lambda x: seen.append(x.clone()) or torch.full((x.shape[0], 4), 0.25),
        10,
        "soft",
        4,
        (3, 8, 8),
        torch.device("cpu"),
    )
    oracle.query(torch.full((1, 3, 8, 8), 3.0))
    assert seen[0].max() == 1.0


def test_serving_time_is_recorded():
    oracle, _ = make_oracle()
    oracle.query(torch.rand(2, 3, 8, 8))
    assert oracle.serving_seconds > 0 and oracle.calls == 1


def test_answers_to_targets_renormalises_topk():
    answers = torch.tensor([[0.6, 0.2, 0.0, 0.0]])
    assert torch.allclose(answers_to_targets(answers, "topk", 4), torch.tensor([[0.75, 0.25, 0.0, 0.0]]))
    assert answers_to_targets(torch.tensor([2]), "hard", 4).dtype == torch.int64


def test_a_cancelled_match_spends_no_more_queries():
    from engines.errors import MatchCancelled

    cancelled = []

    def should_stop():
        if cancelled:
            raise MatchCancelled()

    oracle, defender = make_oracle(budget=10, should_stop=should_stop)
    oracle.query(torch.rand(3, 3, 8, 8))
    cancelled.append(True)
    with pytest.raises(MatchCancelled):
        oracle.query(torch.rand(3, 3, 8, 8))
    assert oracle.queries_used == 3 and defender.seen == 3
