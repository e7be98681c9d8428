"""The defender interface.

A defender is built from the match's trained victim and the defender's own data splits
(never the attacker pool, never the test split for any decision), and then serves
probability vectors through the oracle. The oracle turns them into soft/hard/top-k answers,
so every defender has one output contract.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from engines.artifacts import ArtifactStore
from engines.data.base import DatasetSplits
from engines.registry import Registry
from engines.training import ProgressFn


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass
class DefenderContext:
    victim: nn.Module  # trained, in eval mode, on `device`
    victim_key: dict  # everything that determines the victim (for artifact keys)
    splits: DatasetSplits
    device: torch.device
    store: ArtifactStore
    seed: int
    data_root: str = "data"  # where torchvision data sets a defence names are read from
    download: bool = False
    progress: ProgressFn = lambda done, total, msg: None
    log: Callable[[str], None] = lambda msg: None
    should_stop: Callable[[], None] = lambda: None
    extra: dict = field(default_factory=dict)

    def fresh_victim_model(self) -> nn.Module:
        """An untrained model of the victim's architecture for this data set (on the CPU)."""
        from engines.models import build_model

        s = self.splits
        return build_model(self.victim_key["arch"], s.channels, s.num_classes, s.mean, s.std)

    @cached_property
    def victim_logits(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """The victim's logits for serving (an inference copy: batch norm folded, CPU-friendly
        layout; see engines/serving.py). Training-time uses (gradients, surrogates) keep
        `victim` itself."""
        from engines.serving import ServingModel

        return ServingModel(self.victim)


class Defender(ABC):
    """A defence served through the oracle.

    Class-level conventions every registered defence declares (tests walk `DEFENDERS` and
    rely on them; see tests/test_defence_properties.py):

    - `Params`: a pydantic model with `extra="forbid"` whose Field bounds refuse every knob
      value out of range (the spec layer turns the ValidationError into a one-line error).
    - `smoke_params`: tiny params for tests (few epochs, small surrogates); `{}` when the
      defaults are already cheap.
    - `knob`: the name of the one utility/protection parameter in `Params` (None when the
      defence has none), and `knob_values`: three or more of its settings ordered from weak
      to strong protection, the points of the defence's trade-off curve.
    - `zero_protection_params`: params at which the defence serves exactly the undefended
      victim's probabilities, or None when no such setting exists (e.g. `top1`).
    - `preserves_top1(params)`: True only when the defence guarantees that the served argmax
      equals the victim's argmax on every input.

    Randomised defences draw their noise from `engines.defenders._noise.QueryNoise`, keyed by
    (seed, index of the query among all images this defender has served), so answers do not
    depend on how queries are batched and the same seed gives the same answers.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Params: ClassVar[type[BaseModel]] = NoParams
    # The clean-accuracy drop the defence's paper promises at most (None: no promise). The
    # leaderboard flags a defence whose served accuracy falls further below the victim's.
    utility_tolerance: ClassVar[float | None] = None
    # Tiny Params values for tests/test_registry_walk.py ({} when the defaults are already
    # cheap). Deliberately no default: a registered defender that does not declare them
    # fails that test by name, so no entry passes untested.
    smoke_params: ClassVar[dict]
    knob: ClassVar[str | None] = None
    knob_values: ClassVar[tuple] = ()
    zero_protection_params: ClassVar[dict | None] = None

    @classmethod
    def datasets_needed(cls, params: BaseModel) -> list[str]:
        """Data sets besides the match's that the defence reads (e.g. a real outlier set):
        checked for availability before anything is written."""
        return []

    def __init__(self, params: BaseModel, ctx: DefenderContext):
        self.params = params
        self.ctx = ctx

    # Bumped by a trained defence when a change in its training changes the weights.
    trainer_version: ClassVar[int] = 1

    def training_spec(self, serving_only: frozenset[str] = frozenset()) -> dict:
        """The artifact key of a trained defence: the victim, the method, every parameter that
        affects training (all but `serving_only`), the seed and the trainer version."""
        return {
            "victim": self.ctx.victim_key,
            "method": self.name,
            **self.params.model_dump(mode="json", exclude=set(serving_only)),
            "seed": self.ctx.seed,
            "trainer_version": self.trainer_version,
        }

    @classmethod
    def preserves_top1(cls, params: BaseModel) -> bool:
        """Whether the served argmax equals the victim's argmax on every input, at these
        (validated) params. Default False: a defence claims the guarantee explicitly."""
        return False

    def prepare(self) -> dict:
        """Train or load what the defence needs; return facts to store with the match
        (training seconds, member accuracies, whether a cached artifact was reused)."""
        return {}

    @abstractmethod
    def serve(self, images: torch.Tensor) -> torch.Tensor:
        """Probabilities (N, C) for float images in [0, 1] already on the device.
        Called under torch.inference_mode(); must not depend on how queries are batched."""


DEFENDERS: Registry[type[Defender]] = Registry("defender", "engines.defenders")
