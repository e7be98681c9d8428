"""Scoring a clone on the test split (the attacker never sees it)."""

from __future__ import annotations

import torch
from torch import nn

from engines.data.base import ImageSet
from engines.records import CloneScores
from engines.training import predict_probs


class CloneScorer:
    """Clone accuracy and fidelity against the served answers and the undefended victim."""

    def __init__(self, test: ImageSet, served_labels: torch.Tensor, victim_labels: torch.Tensor, device: torch.device):
        self.test = test
        self.served_labels = served_labels
        self.victim_labels = victim_labels
        self.device = device
        self.best_clone_accuracy = float("-inf")

    def __call__(self, clone: nn.Module) -> CloneScores:
        predicted = predict_probs(clone, self.test.images, self.device).argmax(1)
        clone_accuracy = (predicted == self.test.labels).float().mean().item()
        self.best_clone_accuracy = max(self.best_clone_accuracy, clone_accuracy)
        return CloneScores(
            clone_accuracy=clone_accuracy,
            best_clone_accuracy=self.best_clone_accuracy,
            fidelity_served=(predicted == self.served_labels).float().mean().item(),
            fidelity_victim=(predicted == self.victim_labels).float().mean().item(),
        )
