"""EDM: the diversity objective, the keyed member hash, and a small trained ensemble."""

import pytest
import torch
from torch import nn

from engines.defenders.edm import OUTLIER_LABEL, coherence, edm_loss, member_index
from engines.errors import ArenaError
from engines.spec import MatchSpec
from tests.test_defence_properties import Arena, random_batch, serve
from tests.test_dnf import SMALL_VICTIM

TRAINED = {"k": 3, "epochs": 4, "train_limit": 1200, "batch_size": 64, "lam": 1.0}


def test_coherence_is_one_for_equal_members_and_zero_for_disjoint_ones():
    same = torch.softmax(torch.randn(4, 1, 10), 2).expand(4, 3, 10)
    assert torch.allclose(coherence(same), torch.ones(4, 3))
    disjoint = torch.eye(10)[:3].unsqueeze(0).expand(2, 3, 10)
    assert torch.allclose(coherence(disjoint), torch.zeros(2, 3))


def test_loss_is_members_cross_entropy_plus_weighted_smooth_max_coherence():
    torch.manual_seed(0)
    logits = torch.randn(6, 3, 10)
    labels = torch.tensor([1, 2, OUTLIER_LABEL, 4, OUTLIER_LABEL, 0])
    inside = labels != OUTLIER_LABEL
    ce = sum(nn.functional.cross_entropy(logits[inside, k], labels[inside]) for k in range(3))
    div = torch.logsumexp(coherence(torch.softmax(logits[~inside], 2)), 1).mean()
    assert torch.allclose(edm_loss(0.5)(logits, labels), ce + 0.5 * div, atol=1e-6)
    assert torch.allclose(edm_loss(0.0)(logits, labels), ce, atol=1e-6)


def test_member_hash_is_per_image_keyed_and_sensitive_to_any_change():
    images = torch.rand(200, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    key = (7).to_bytes(8, "little")
    picks = member_index(images, 5, key)
    assert torch.equal(picks, torch.cat([member_index(images[:77], 5, key), member_index(images[77:], 5, key)]))
    assert set(picks.tolist()) == set(range(5))  # every member answers some images
    assert not torch.equal(picks, member_index(images, 5, (8).to_bytes(8, "little")))  # the key matters
    nudged = images.clone()
    nudged[:, 0, 0, 0] += 1e-3  # a zeroth-order probe's size
    assert (member_index(nudged, 5, key) != picks).float().mean() > 0.5


def test_impossible_parameters_are_one_line_errors():
    for params in ({"k": 1}, {"lam": -1}, {"outlier_ratio": 0}, {"outliers": ["gaussian"]}, {"kk": 2}):
        with pytest.raises(ArenaError):
            MatchSpec(defender="edm", defender_params=params).resolve()


@pytest.fixture(scope="module")
def trained(cache_dir, mnist5k):
    arena = Arena(cache_dir, mnist5k, SMALL_VICTIM)
    return arena, arena.defender("edm", TRAINED)


def test_members_agree_in_distribution_and_disagree_on_noise(trained):
    arena, edm = trained
    report = edm.prepared
    assert len(report["member_val_accuracy"]) == 3
    digits = arena.splits.test.floats(torch.arange(300))
    noise = torch.rand((300, 1, 32, 32), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        votes_digits = torch.stack([m(digits).argmax(1) for m in edm.members])
        votes_noise = torch.stack([m(noise).argmax(1) for m in edm.members])
    agree_digits = (votes_digits == votes_digits[0]).all(0).float().mean().item()
    agree_noise = (votes_noise == votes_noise[0]).all(0).float().mean().item()
    assert agree_digits > 0.8
    assert agree_noise < agree_digits - 0.3
    assert report["outlier_max_coherence"] < 0.9
    # answers are one member's softmax, picked by the hash
    images = random_batch(arena.splits, 2)
    picks = member_index(images, 3, edm.key)
    with torch.inference_mode():
        expected = torch.stack([torch.softmax(edm.members[k](images[i : i + 1]), 1)[0] for i, k in enumerate(picks)])
    assert torch.allclose(serve(edm, images), expected, atol=1e-6)
    # a second prepare loads the artifact instead of training again
    assert report["reused"] is False and arena.defender("edm", TRAINED).prepared["reused"] is True
