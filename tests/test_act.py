"""ACT: the watermark posterior, the fine-tuning objective, and a small trained defence."""

import pytest
import torch
import torch.nn.functional as F

from engines.defenders._outliers import OUTLIER_LABEL
from engines.defenders.act import WatermarkPosterior, act_loss, total_variation
from engines.errors import ArenaError
from engines.spec import MatchSpec
from tests.test_defence_properties import Arena, serve
from tests.test_dnf import SMALL_VICTIM

TRAINED = {"epochs": 3, "train_limit": 1200, "batch_size": 64}


def test_posterior_is_bounded_and_its_kl_vanishes_at_the_prior():
    posterior = WatermarkPosterior(1, 4, eps=0.1)
    for module in posterior.net:
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.zeros_(module.weight)
            torch.nn.init.zeros_(module.bias)
    x, e = torch.rand(3, 1, 32, 32), torch.randn(3, 1, 32, 32) * 10
    w, kl = posterior(x, e)
    assert w.abs().max() <= 0.1 and torch.allclose(kl, torch.zeros(3))  # mu 0, sigma 1


def test_loss_is_likelihood_plus_prior_term_minus_output_change_on_outliers():
    torch.manual_seed(0)
    defended, original, kl = torch.randn(4, 10), torch.randn(4, 10), torch.rand(4)
    labels = torch.tensor([2, OUTLIER_LABEL, 5, OUTLIER_LABEL])
    packed = torch.cat([defended, original, kl[:, None]], 1)
    inside = labels != OUTLIER_LABEL
    change = total_variation(torch.softmax(defended[~inside], 1), torch.softmax(original[~inside], 1)).mean()
    expected = F.cross_entropy(defended[inside], labels[inside]) + 0.1 * kl.mean() - 2.0 * change
    assert torch.allclose(act_loss(2.0, 0.1)(packed, labels), expected, atol=1e-6)
    assert 0 <= change <= 1


def test_bad_parameters_are_one_line_errors():
    for params in ({"eps": -0.1}, {"eps": 1.5}, {"lam": -1}, {"width": 0}, {"outliers": ["gaussian"]}, {"x": 1}):
        with pytest.raises(ArenaError):
            MatchSpec(defender="act", defender_params=params).resolve()


def test_digits_keep_their_answers_and_noise_answers_move(cache_dir, mnist5k):
    arena = Arena(cache_dir, mnist5k, SMALL_VICTIM)
    act = arena.defender("act", TRAINED)
    digits = arena.splits.test.floats(torch.arange(500))
    labels = arena.splits.test.labels[:500]
    noise = torch.rand((300, 1, 32, 32), generator=torch.Generator().manual_seed(1))
    served_digits, served_noise = serve(act, digits), serve(act, noise)
    victim_digits, victim_noise = arena.victim_probs(digits), arena.victim_probs(noise)
    served_accuracy = (served_digits.argmax(1) == labels).float().mean()
    assert served_accuracy >= (victim_digits.argmax(1) == labels).float().mean() - 0.03
    moved_digits = total_variation(served_digits, victim_digits).mean()
    moved_noise = total_variation(served_noise, victim_noise).mean()
    assert moved_noise > 0.3 and moved_noise > 2 * moved_digits
    assert not torch.equal(serve(act, digits[:20]), served_digits[:20])  # a fresh watermark per query
