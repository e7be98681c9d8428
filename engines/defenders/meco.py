"""MeCo (Wang, Shen, Liu, Duan, Zhu, Zhan, Doermann & Gao, "Defending against Data-Free Model
Extraction by Distributionally Robust Defensive Training", NeurIPS 2023).

The served model randomises its input: every query x is answered as

    served(x) = softmax(f'(clip(x + eps * P(x, z))))        z ~ N(0, I), fresh per query

where P is a small convolutional perturbation network (output in [-1, 1], so eps bounds the
perturbation in L-infinity) and f' the victim after defensive training. The paper names three
effects of the randomised input: (1) the knowledge-distillation loss an attacker computes on
its queries no longer matches the victim's function; (2) the finite differences of
zeroth-order gradient estimates are dominated by the fresh randomness of each probe; (3) the
labels of attack queries change. Defensive training keeps the log-likelihood of the labels
on the defender's data and, on attack-like data, moves the served answers away from the
victim's, with the attack-like data taken at its least favourable point in a neighbourhood
(distributional robustness):

    L = CE(served(x), y)  -  lam * TV(served(x_o*), f(x_o*))
    x_o* = clip(x_o - rho * sign(grad_x TV(served(x_o), f(x_o))))

f is the original victim (frozen), TV the total-variation distance of two probability vectors
and x_o a synthetic attack-like image; the inner step moves x_o to where the defence changes
the answer least, so the defence learns to change it everywhere near the attack distribution,
not only on the samples it saw. Where MeCo retrains the victim (ACT, by the same group, is the
"slight fine-tuning" variant), f' starts from the victim and trains for `epochs`.

No public code was available: the terms above follow the paper's description; the network,
the change measure (total variation, bounded, so maximising it cannot diverge), the one-step
inner maximisation and the learning rates are this module's choices. Attack-like data is made
from the defender's own data (`_outliers.py`: noise, low-frequency blobs, untrained-generator
samples) or read from a named torchvision set; the defence never sees the attacker pool or the
test split. Training runs through the arena's one loop (`fit`).

Randomness: z comes from the defence's counter-based noise stream keyed by (seed, index of the
query), so answers do not depend on batching. With eps = 0 and no training the served answer
is the victim's own (zero protection). Scale for 2 CPU cores: 10 epochs, width 16.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from engines.defenders._outliers import OUTLIER_LABEL, OutlierKind, OutlierSource
from engines.defenders._randomised_input import RandomisedInputDefence, ReferencedVictim
from engines.defenders.act import total_variation
from engines.defenders.base import DEFENDERS


class MecoParams(OutlierSource):
    eps: float = Field(0.1, ge=0, le=1)  # L-infinity bound of the input perturbation
    lam: float = Field(1.0, ge=0)  # weight of the answer change on attack-like data
    rho: float = Field(0.05, ge=0, le=1)  # radius of the inner (least favourable) step
    train_victim: bool = True
    epochs: int = Field(10, ge=1)
    lr: float = Field(0.01, gt=0)  # SGD, momentum 0.9
    batch_size: int = Field(128, ge=1)
    width: int = Field(16, ge=1)
    outliers: tuple[OutlierKind, ...] = Field(("noise", "blobs", "generator"), min_length=1)


class PerturbationNet(nn.Module):
    """P(x, z): three 3x3 convolutions on the image and one noise channel; output in [-1, 1]."""

    def __init__(self, channels: int, width: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels + 1, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(torch.cat([x, z], dim=1)))


class RandomisedVictim(ReferencedVictim):
    """f'(clip(x + eps * P(x, z))); in training, packs what `meco_loss` needs as
    (N, 3C): served logits at x, served and original logits at the least favourable x*."""

    def __init__(self, victim: nn.Module, perturb: PerturbationNet, eps: float, rho: float, train_victim: bool):
        super().__init__(victim, train_victim)
        self.perturb, self.eps, self.rho = perturb, eps, rho

    def answer(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.victim((x + self.eps * self.perturb(x, z)).clamp(0, 1))

    def _noise(self, x: torch.Tensor) -> torch.Tensor:
        return torch.randn((x.shape[0], 1, *x.shape[2:]), device=x.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            original = self.original(x)
        probe = x.detach().requires_grad_(True)
        change = total_variation(torch.softmax(self.answer(probe, self._noise(x)), 1), torch.softmax(original, 1))
        (step,) = torch.autograd.grad(change.sum(), probe)
        worst = (x - self.rho * step.sign()).clamp(0, 1).detach()
        with torch.no_grad():
            original_worst = self.original(worst)
        return torch.cat([self.answer(x, self._noise(x)), self.answer(worst, self._noise(x)), original_worst], dim=1)


def meco_loss(lam: float):
    def loss(packed: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        served, served_worst, original_worst = packed.chunk(3, dim=1)
        inside = targets != OUTLIER_LABEL
        total = packed.new_zeros(())
        if inside.any():
            total = total + F.cross_entropy(served[inside], targets[inside])
        if lam > 0 and (~inside).any():
            change = total_variation(
                torch.softmax(served_worst[~inside], 1), torch.softmax(original_worst[~inside], 1)
            ).mean()
            total = total - lam * change
        return total

    return loss


@DEFENDERS.register("meco")
class Meco(RandomisedInputDefence):
    description = "MeCo: randomised input perturbation, defensively trained to mislead distillation and probes"
    Params = MecoParams
    smoke_params = {"epochs": 1, "train_limit": 128, "batch_size": 64, "width": 4}
    knob = "eps"
    knob_values = (0.02, 0.05, 0.1, 0.2)
    zero_protection_params = {"eps": 0.0, "train_victim": False}
    utility_tolerance = 1.0
    seed_offset = 61

    def build(self) -> RandomisedVictim:
        p = self.params
        perturb = PerturbationNet(self.ctx.splits.channels, p.width)
        return RandomisedVictim(self.ctx.victim, perturb, p.eps, p.rho, p.train_victim)

    def loss(self):
        return meco_loss(self.params.lam)

    def noise_for(self, images: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        n, _, h, w = images.shape
        return self.noise.normal(indices, h * w).view(n, 1, h, w)
