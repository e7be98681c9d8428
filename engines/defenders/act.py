"""ACT: Bayesian active watermarking (Wang, Wu & Huang, "Defense against Model Extraction
Attack by Bayesian Active Watermarking", ICML 2024).

The victim is fine-tuned together with a watermark posterior conditioned on the input. At
serving time a watermark is sampled from that posterior and added to each query, and the
fine-tuned victim answers the watermarked query:

    w ~ q(w | x) = eps * tanh(mu(x) + sigma(x) * e),   e ~ N(0, I), fresh per query
    served(x) = softmax(f'(clip(x + w)))

The fine-tuning objective (as the paper states it): maximise the log-likelihood of the
labels on watermarked in-distribution training data (utility), and maximise the change of
the model's outputs on watermarked out-of-distribution data (defence), with the posterior
kept near its prior (the Bayesian part):

    L = CE(f'(x + w), y) + beta * KL(q(. | x) || N(0, I)) - lam * TV(f'(x_o + w_o), f(x_o))

where f is the original victim (frozen), TV the total-variation distance between the two
probability vectors and KL the Gaussian posterior's divergence from the prior, per pixel.
Attack queries are mostly out of distribution, so what an attacker distils is the changed,
misleading function, while benign users keep the victim's accuracy.

No public code was available: the names above are the paper's; the change measure (total
variation, bounded in [0, 1] so maximising it cannot diverge), the small convolutional
watermark network, beta and the learning rates are this module's choices and are stated as
such. Out-of-distribution data is built from the defender's own data (`_outliers.py`: noise,
low-frequency blobs, untrained-generator samples) or read from a named torchvision set; the
defence never sees the attacker pool or the test split. Training runs through the arena's
one loop (`fit`): in- and out-of-distribution rows are shuffled together and the loss treats
each kind by its target.

Randomness: e comes from the defence's counter-based noise stream keyed by (seed, index of
the query), so answers do not depend on batching. With eps = 0 and no fine-tuning the served
answer is the victim's own (zero protection). Scale for 2 CPU cores: 5 epochs of
fine-tuning ("slight fine-tuning" is the paper's point) and a watermark network of width 16.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from engines.defenders._outliers import OUTLIER_LABEL, OutlierKind, OutlierSource
from engines.defenders._randomised_input import RandomisedInputDefence, ReferencedVictim
from engines.defenders.base import DEFENDERS

LOG_SIGMA_RANGE = (-6.0, 2.0)


class ActParams(OutlierSource):
    eps: float = Field(0.1, ge=0, le=1)  # L-infinity bound of a watermark
    lam: float = Field(1.0, ge=0)  # weight of the output change on out-of-distribution data
    beta: float = Field(1e-3, ge=0)  # weight of the posterior's KL to its prior
    train_victim: bool = True  # fine-tune the victim with the posterior
    epochs: int = Field(5, ge=1)
    lr: float = Field(0.01, gt=0)  # SGD, momentum 0.9, for the victim and the watermark network
    batch_size: int = Field(128, ge=1)
    width: int = Field(16, ge=1)
    outliers: tuple[OutlierKind, ...] = Field(("noise", "blobs", "generator"), min_length=1)


class WatermarkPosterior(nn.Module):
    """q(w | x): per-pixel Gaussian (mu, log sigma) from three 3x3 convolutions, squashed
    into [-eps, eps] by tanh."""

    def __init__(self, channels: int, width: int, eps: float):
        super().__init__()
        self.eps = eps
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A watermark for each image and the posterior's KL to N(0, I), per image (mean per pixel)."""
        mu, log_sigma = self.net(x).chunk(2, dim=1)
        log_sigma = log_sigma.clamp(*LOG_SIGMA_RANGE)
        w = self.eps * torch.tanh(mu + log_sigma.exp() * e)
        kl = 0.5 * (mu.pow(2) + (2 * log_sigma).exp() - 1 - 2 * log_sigma).flatten(1).mean(1)
        return w, kl


class WatermarkedVictim(ReferencedVictim):
    """f'(clip(x + w)) with w ~ q(w | x); in training also the original victim's logits and the
    posterior's KL, packed as (N, 2C + 1) so that `fit` can train it with `act_loss`."""

    def __init__(self, victim: nn.Module, posterior: WatermarkPosterior, train_victim: bool):
        super().__init__(victim, train_victim)
        self.posterior = posterior

    def answer(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        w, _ = self.posterior(x, e)
        return self.victim((x + w).clamp(0, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, kl = self.posterior(x, torch.randn_like(x))
        defended = self.victim((x + w).clamp(0, 1))
        with torch.no_grad():
            original = self.original(x)
        return torch.cat([defended, original, kl[:, None]], dim=1)


def total_variation(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return 0.5 * (p - q).abs().sum(1)


def act_loss(lam: float, beta: float):
    def loss(packed: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        classes = (packed.shape[1] - 1) // 2
        defended, original, kl = packed[:, :classes], packed[:, classes:-1], packed[:, -1]
        inside = targets != OUTLIER_LABEL
        total = beta * kl.mean()
        if inside.any():
            total = total + F.cross_entropy(defended[inside], targets[inside])
        if lam > 0 and (~inside).any():
            change = total_variation(torch.softmax(defended[~inside], 1), torch.softmax(original[~inside], 1))
            total = total - lam * change.mean()
        return total

    return loss


@DEFENDERS.register("act")
class Act(RandomisedInputDefence):
    description = "ACT: fine-tuned victim answers each query with a watermark sampled from a learned posterior"
    Params = ActParams
    smoke_params = {"epochs": 1, "train_limit": 128, "batch_size": 64, "width": 4}
    knob = "lam"
    knob_values = (0.25, 1.0, 4.0)
    zero_protection_params = {"eps": 0.0, "train_victim": False}
    utility_tolerance = 1.0
    seed_offset = 73

    def build(self) -> WatermarkedVictim:
        p = self.params
        posterior = WatermarkPosterior(self.ctx.splits.channels, p.width, p.eps)
        return WatermarkedVictim(self.ctx.victim, posterior, p.train_victim)

    def loss(self):
        return act_loss(self.params.lam, self.params.beta)

    def noise_for(self, images: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        return self.noise.normal(indices, images[0].numel()).view_as(images)
