"""What ACT and MeCo share (private helper module, not a defence): a trained copy of the victim
answers every query through a randomised input transform, fresh per query.

- `ReferencedVictim`: the trainable copy (`victim`) beside a frozen copy of the original
  (`original`, the reference answers the training objective moves away from); subclasses add
  the transform (`answer(x, noise)`) and pack what their loss needs in `forward`.
- `RandomisedInputDefence`: trains such a model once through `fit` on the defender's images
  and its outliers (cached as an artifact), and serves `answer(x, noise)` with the noise drawn
  from the defence's counter-based stream keyed by (seed, query index), so answers do not
  depend on batching. With eps = 0 and no training the victim's own answer is served (zero
  protection).
"""

from __future__ import annotations

import copy
import time
from abc import abstractmethod
from typing import ClassVar

import torch
from torch import nn

from engines.defenders._noise import QueryNoise
from engines.defenders._outliers import OutlierSource, fit_with_outliers, outlier_images
from engines.defenders.base import Defender
from engines.training import LossFn, TrainConfig, accuracy


class ReferencedVictim(nn.Module):
    def __init__(self, victim: nn.Module, train_victim: bool):
        super().__init__()
        self.victim = copy.deepcopy(victim)
        self.original = copy.deepcopy(victim).eval()
        for parameter in self.original.parameters():
            parameter.requires_grad_(False)
        if not train_victim:
            for parameter in self.victim.parameters():
                parameter.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.original.eval()  # the reference answers never change
        return self

    def answer(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Logits for x under the randomised transform driven by `noise` (subclasses)."""
        raise NotImplementedError


class RandomisedInputDefence(Defender):
    """Subclasses set `seed_offset` and implement `build`, `loss` and `noise_for`; their
    Params extend OutlierSource with `eps`, `train_victim`, `epochs`, `lr`, `batch_size`."""

    seed_offset: ClassVar[int]

    @classmethod
    def datasets_needed(cls, params: OutlierSource) -> list[str]:
        return params.datasets_needed()

    def __init__(self, params, ctx):
        super().__init__(params, ctx)
        self.noise = QueryNoise(ctx.seed, self.name)

    @abstractmethod
    def build(self) -> ReferencedVictim:
        """The untrained model (transform initialised from the global RNG)."""

    @abstractmethod
    def loss(self) -> LossFn:
        """The training objective on the model's packed output and labels / OUTLIER_LABEL."""

    @abstractmethod
    def noise_for(self, images: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """The transform's noise for served images at these query indices."""

    def serves_the_victim(self) -> bool:
        return self.params.eps == 0 and not self.params.train_victim

    def prepare(self) -> dict:
        ctx, p = self.ctx, self.params
        train = p.training_images(ctx.splits)
        base = ctx.seed * 1_000_003 + self.seed_offset
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(base)  # the transform's initialisation
            model = self.build().to(ctx.device)

        def train_model():
            started = time.perf_counter()
            if not self.serves_the_victim():
                generator = torch.Generator().manual_seed(base + 1)
                outliers = outlier_images(p, train, generator, ctx)
                cfg = TrainConfig(epochs=p.epochs, batch_size=p.batch_size, lr=p.lr, augment=False)
                ctx.log(f"{self.name}: training on {len(train) + len(outliers)} images (defender's and outliers)")
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(base + 2)  # the transform's draws during training
                    fit_with_outliers(model, train, outliers, cfg, generator, ctx, self.loss())
            trained = {k: v for k, v in model.state_dict().items() if not k.startswith("original.")}
            return trained, {"train_seconds": time.perf_counter() - started}

        tensors, facts, reused = ctx.store.get_or_build("defender", self.training_spec(), train_model)
        model.load_state_dict({**model.state_dict(), **tensors})
        self.model = model.eval()
        if reused:
            ctx.log(f"{self.name}: trained model loaded from the artifact cache")
        val_accuracy = accuracy(model.victim, ctx.splits.defender_val, ctx.device)
        return {"reused": reused, **facts, "trained_victim_val_accuracy": val_accuracy}

    def serve(self, images: torch.Tensor) -> torch.Tensor:
        indices = self.noise.next_indices(len(images), images.device)  # advanced even when unused
        if self.serves_the_victim():
            return torch.softmax(self.ctx.victim_logits(images).float(), dim=1)
        return torch.softmax(self.model.answer(images, self.noise_for(images, indices)).float(), dim=1)
