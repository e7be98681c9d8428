"""The one training loop's options: min_steps, early stopping with patience, tie rules, warm starts."""

import torch
from torch import nn

from engines.data.base import ImageSet
from engines.training import BestWeights, TrainConfig, Validation, cross_entropy_loss, fit, make_optimizer

CFG = TrainConfig(epochs=3, batch_size=5, lr=0.1, augment=False)


def tiny_problem(n: int = 10):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    inputs = torch.rand(n, 1, 2, 2)
    labels = (inputs.flatten(1).sum(1) > 2).long()
    return model, inputs, labels


def test_min_steps_adds_epochs():
    model, inputs, labels = tiny_problem()  # 2 steps per epoch
    report = fit(model, inputs, labels, CFG, torch.device("cpu"), torch.Generator().manual_seed(0), min_steps=9)
    assert report["epochs"] == 5


def test_patience_stops_early_and_ties_pick_the_epoch():
    model, inputs, labels = tiny_problem()
    never = torch.full((4,), -1)  # no prediction matches: every epoch scores 0.0
    cfg = CFG.model_copy(update={"epochs": 8})
    earlier = Validation(inputs[:4], never, metric="agreement", patience=2, ties="earlier")
    report = fit(model, inputs, labels, cfg, torch.device("cpu"), torch.Generator().manual_seed(0), val=earlier)
    assert report["epochs"] == 3 and report["best_epoch"] == 0 and report["best_val_agreement"] == 0.0
    later = Validation(inputs[:4], never, metric="agreement", patience=2, ties="later")
    report = fit(model, inputs, labels, cfg, torch.device("cpu"), torch.Generator().manual_seed(0), val=later)
    assert report["epochs"] == 8 and report["best_epoch"] == 7


def test_keep_best_restores_the_best_epochs_weights():
    model = nn.Linear(1, 1)
    best = BestWeights(ties="later")
    for epoch, score in enumerate([0.2, 0.5, 0.5, 0.1]):
        nn.init.constant_(model.weight, float(epoch))
        best.offer(model, score, epoch)
    best.restore(model)
    assert best.epoch == 2 and model.weight.item() == 2.0 and best.stale == 1


def test_image_set_validation_reports_accuracy():
    model, inputs, labels = tiny_problem()
    val = ImageSet((inputs[:4] * 255).to(torch.uint8), labels[:4])
    report = fit(model, inputs, labels, CFG, torch.device("cpu"), torch.Generator().manual_seed(0), val=val)
    assert 0.0 <= report["best_val_accuracy"] <= 1.0


def test_a_given_optimizer_carries_over_between_calls():
    """Two warm-started calls with one optimizer equal one call of twice the epochs (constant lr)."""
    cfg = CFG.model_copy(update={"schedule": "constant", "epochs": 2})
    model_a, inputs, labels = tiny_problem()
    opt = make_optimizer(model_a.parameters(), cfg)
    gen = torch.Generator().manual_seed(1)
    for _ in range(2):
        fit(model_a, inputs, labels, cfg, torch.device("cpu"), gen, optimizer=opt)
    model_b, _, _ = tiny_problem()
    fit(
        model_b,
        inputs,
        labels,
        cfg.model_copy(update={"epochs": 4}),
        torch.device("cpu"),
        torch.Generator().manual_seed(1),
        optimizer=make_optimizer(model_b.parameters(), cfg),
    )
    assert all(torch.equal(a, b) for a, b in zip(model_a.state_dict().values(), model_b.state_dict().values()))


def test_soft_and_label_targets_give_the_same_loss_for_one_hot_probabilities():
    logits = torch.randn(6, 3, generator=torch.Generator().manual_seed(2))
    labels = torch.tensor([0, 1, 2, 2, 1, 0])
    one_hot = torch.nn.functional.one_hot(labels, 3).float()
    assert torch.allclose(cross_entropy_loss(logits, labels), cross_entropy_loss(logits, one_hot))
