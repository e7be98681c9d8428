"""The attacker interface.

An attacker receives the oracle (its only access to the defended model), its query pool
(data-based attacks; data-free ones ignore it), the data set's public shape facts and a way
to have its clone evaluated. It never sees the victim, the defender or the test split: the
evaluation callback scores the clone on the test split behind its back.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from pydantic import BaseModel, ConfigDict, field_validator
from torch import nn

from engines.artifacts import ArtifactStore
from engines.data.base import ImageSet
from engines.errors import ArenaError
from engines.models import MODELS, build_model, default_model_for
from engines.oracle import Oracle
from engines.registry import Registry
from engines.training import ProgressFn


class AttackerParams(BaseModel):
    """Base of every attacker's parameter model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

    clone_arch: str | None = None  # None: the data set family's default architecture

    @field_validator("clone_arch")
    @classmethod
    def _known_arch(cls, value):
        if value is not None and value not in MODELS:
            raise ValueError(f"unknown model {value!r}; choose one of {', '.join(MODELS.names())}")
        return value


@dataclass
class AttackContext:
    family: str
    num_classes: int
    image_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    pool: ImageSet  # the attacker's own query pool (unlabelled: attacks must not read .labels)
    device: torch.device
    seed: int
    checkpoints: list[int]  # query counts at which the clone is scored, increasing
    evaluate: Callable[[nn.Module, int], dict] = lambda clone, used: {}
    progress: ProgressFn = lambda done, total, msg: None
    log: Callable[[str], None] = lambda msg: None
    should_stop: Callable[[], None] = lambda: None
    # where an attack caches a stage that never touches the API (DFMS's proxy GAN), so a
    # tournament runs it once per seed rather than once per defence; None: no cache
    artifacts: ArtifactStore | None = None
    _next: int = field(default=0, repr=False)

    def build_clone(self, arch: str | None = None) -> nn.Module:
        name = arch or default_model_for(self.family)
        return build_model(name, self.image_shape[0], self.num_classes, self.mean, self.std).to(self.device)

    def generator(self, offset: int = 0) -> torch.Generator:
        """A CPU generator seeded from the match seed (offset separates independent streams)."""
        return torch.Generator().manual_seed(self.seed * 1_000_003 + offset)

    def pending_checkpoint(self) -> int | None:
        return self.checkpoints[self._next] if self._next < len(self.checkpoints) else None

    def checkpoint_if_due(self, clone: nn.Module, queries_used: int, force: bool = False) -> bool:
        """Score the clone if `queries_used` reached the next planned checkpoint (or `force`)."""
        due = self.pending_checkpoint()
        if not force and (due is None or queries_used < due):
            return False
        while self._next < len(self.checkpoints) and self.checkpoints[self._next] <= queries_used:
            self._next += 1
        self.evaluate(clone, queries_used)
        return True


class Attacker(ABC):
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    family: ClassVar[str] = "data-based"  # or "data-free"
    label_modes: ClassVar[frozenset[str]] = frozenset({"soft", "hard", "topk"})
    default_budget: ClassVar[int] = 1000  # CPU-scale default; users override with --budget
    # True for attackers that query pool images without replacement: the budget cannot
    # exceed the pool.
    bound_by_pool: ClassVar[bool] = False
    # For a defence-aware variant: the attack it adapts (the leaderboard flags a defence whose
    # perturbation this variant undoes, i.e. where it beats its base attack).
    base_attack: ClassVar[str | None] = None
    Params: ClassVar[type[AttackerParams]] = AttackerParams
    # Tiny settings for tests/test_registry_walk.py, which plays every registered attacker
    # with them. Deliberately no defaults: an attacker that does not declare them fails that
    # test by name, so no entry passes untested.
    smoke_params: ClassVar[dict]  # tiny Params values (few epochs/steps)
    smoke_budget: ClassVar[int]  # a tiny query budget the attack spends exactly
    smoke_label_mode: ClassVar[str]  # one of its label_modes

    def __init__(self, params: AttackerParams):
        self.params = params

    @classmethod
    def check(cls, label_mode: str, query_budget: int, pool_size: int) -> None:
        """Refuse impossible settings before anything runs (ArenaError with the fix)."""
        if label_mode not in cls.label_modes:
            raise ArenaError(
                f"attacker {cls.name!r} does not support --label {label_mode}; "
                f"use one of: {', '.join(sorted(cls.label_modes))}"
            )
        if cls.bound_by_pool and query_budget > pool_size:
            raise ArenaError(
                f"{cls.name} queries pool images without replacement: budget {query_budget} exceeds the query "
                f"pool of {pool_size} images; lower --budget or choose a larger --pool"
            )

    def validate(self, label_mode: str, query_budget: int, pool_size: int) -> None:
        """`check` with this attacker's actual parameters; override when they matter
        (e.g. a per-iteration query cost that depends on the batch size)."""
        type(self).check(label_mode, query_budget, pool_size)

    @abstractmethod
    def run(self, oracle: Oracle, ctx: AttackContext) -> nn.Module:
        """Spend (up to) the oracle's budget and return the final clone.

        Call `ctx.checkpoint_if_due(clone, oracle.queries_used)` whenever the clone is in a
        state worth scoring; the runner adds a final checkpoint if the last one is missing."""


ATTACKERS: Registry[type[Attacker]] = Registry("attacker", "engines.attackers")
