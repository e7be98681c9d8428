"""The data-free attacks' `target` option: the arena's protocol and the public script's replay."""

import pytest
import torch

from engines.attackers._common import centred_log_probs
from engines.attackers.dfme import dfme_target
from engines.attackers.maze import teacher_distribution
from engines.errors import ArenaError
from engines.spec import MatchSpec
from tests.test_match import TINY_DFME, TINY_VICTIM, play


def _probs(n=8, c=10, seed=0):
    logits = torch.randn((n, c), generator=torch.Generator().manual_seed(seed)) * 3
    return torch.softmax(logits, dim=1)


def test_log_probs_target_is_the_centred_log_probability():
    probs = _probs()
    assert torch.equal(dfme_target(probs, "log-probs"), centred_log_probs(probs, 1e-12))
    assert teacher_distribution(probs, "log-probs") is probs


def test_probs_as_logits_target_is_p_minus_its_mean():
    """log-softmax of p, centred, is p minus its row mean (1/C): the flat target the public
    script gives DFME against a probability-serving defence."""
    probs = _probs()
    target = dfme_target(probs, "probs-as-logits")
    torch.testing.assert_close(target, probs - 1 / probs.shape[1])
    flat = teacher_distribution(probs, "probs-as-logits")
    torch.testing.assert_close(flat, torch.softmax(probs, dim=1))
    # within a factor e of uniform, while the honest target is peaked
    assert (flat.max(1).values / flat.min(1).values).max() <= torch.e + 1e-6
    assert probs.max(1).values.min() > flat.max(1).values.max()


@pytest.mark.parametrize("attacker", ["dfme", "maze"])
def test_target_is_recorded_with_the_match_and_changes_the_clone(tmp_path, attacker):
    params = dict(TINY_DFME) if attacker == "dfme" else {"batch_size": 8, "ndirs": 2, "generator_width": 4, "nz": 8}
    budget = 2 * 16 * 7 if attacker == "dfme" else 2 * 8 * 15
    honest, _ = play(tmp_path / "a", attacker=attacker, query_budget=budget, attacker_params=params, seed=1)
    replay, _ = play(
        tmp_path / "b",
        attacker=attacker,
        query_budget=budget,
        attacker_params={**params, "target": "probs-as-logits"},
        seed=1,
    )
    spec = MatchSpec(
        device="cpu",
        victim=TINY_VICTIM,
        attacker=attacker,
        query_budget=budget,
        attacker_params={**params, "target": "probs-as-logits"},
    ).resolve()
    assert spec.attacker_params["target"] == "probs-as-logits"
    assert (
        spec.identity()
        != MatchSpec(device="cpu", victim=TINY_VICTIM, attacker=attacker, query_budget=budget, attacker_params=params)
        .resolve()
        .identity()
    )
    assert honest.victim.test_accuracy == replay.victim.test_accuracy
    assert honest.final.scores != replay.final.scores


def test_unknown_target_is_a_one_line_error():
    with pytest.raises(ArenaError, match="target"):
        MatchSpec(device="cpu", attacker="dfme", attacker_params={"target": "logits"}).resolve()
