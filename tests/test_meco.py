"""MeCo: randomised input perturbation with defensive training."""

import pytest
import torch

from engines.defenders._outliers import OUTLIER_LABEL
from engines.defenders.act import total_variation
from engines.defenders.meco import meco_loss
from engines.errors import ArenaError
from engines.spec import MatchSpec
from tests.test_defence_properties import Arena, serve
from tests.test_dnf import SMALL_VICTIM

TRAINED = {"epochs": 3, "train_limit": 1200, "batch_size": 64}


def test_loss_is_likelihood_minus_answer_change_at_the_least_favourable_point():
    torch.manual_seed(0)
    served, worst, original = torch.randn(4, 10), torch.randn(4, 10), torch.randn(4, 10)
    labels = torch.tensor([1, OUTLIER_LABEL, 3, OUTLIER_LABEL])
    inside = labels != OUTLIER_LABEL
    change = total_variation(torch.softmax(worst[~inside], 1), torch.softmax(original[~inside], 1)).mean()
    expected = torch.nn.functional.cross_entropy(served[inside], labels[inside]) - 0.5 * change
    got = meco_loss(0.5)(torch.cat([served, worst, original], 1), labels)
    assert torch.allclose(got, expected, atol=1e-6)


def test_bad_parameters_are_one_line_errors():
    for params in ({"eps": -0.1}, {"eps": 2}, {"rho": 1.5}, {"lam": -1}, {"width": 0}, {"noise": 1}):
        with pytest.raises(ArenaError):
            MatchSpec(defender="meco", defender_params=params).resolve()


def test_fresh_randomness_misleads_probes_and_keeps_benign_accuracy(cache_dir, mnist5k):
    arena = Arena(cache_dir, mnist5k, SMALL_VICTIM)
    meco = arena.defender("meco", TRAINED)
    digits = arena.splits.test.floats(torch.arange(500))
    labels = arena.splits.test.labels[:500]
    first, second = serve(meco, digits), serve(meco, digits)  # the same images asked twice
    assert not torch.allclose(first, second, atol=1e-3)
    victim = arena.victim_probs(digits)
    assert (first.argmax(1) == labels).float().mean() >= (victim.argmax(1) == labels).float().mean() - 0.03
    noise = torch.rand((300, 1, 32, 32), generator=torch.Generator().manual_seed(1))
    moved_noise = total_variation(serve(meco, noise), arena.victim_probs(noise)).mean()
    assert moved_noise > 2 * total_variation(first, victim).mean()
    # on attack-like images a zeroth-order probe does not see the victim's finite difference
    nudged = (noise + 1e-3).clamp(0, 1)
    probed = serve(meco, nudged) - serve(meco, noise)
    honest = arena.victim_probs(nudged) - arena.victim_probs(noise)
    assert ((probed - honest).norm(dim=1) / honest.norm(dim=1).clamp_min(1e-12)).median() > 0.9
