"""A match specification: configuration as data, validated, and saved with every match."""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from engines.attackers import ATTACKERS
from engines.data import DATASETS
from engines.data.loading import IN_DISTRIBUTION
from engines.defenders import DEFENDERS
from engines.devices import validate_device_name
from engines.errors import ArenaError
from engines.models import MODELS, default_model_for
from engines.training import TrainConfig

TRAINER_VERSION = 1  # bump when victim training changes in a way that changes weights


class VictimSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    arch: str | None = None  # None: the data set family's default (lenet5 / resnet34_8x)
    train: TrainConfig = TrainConfig(epochs=40, batch_size=64, lr=0.05)


class MatchSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    defender: str = "undefended"
    defender_params: dict = Field(default_factory=dict)
    attacker: str = "knockoff"
    attacker_params: dict = Field(default_factory=dict)
    dataset: str = "mnist5k"
    pool: str = IN_DISTRIBUTION
    label_mode: Literal["soft", "hard", "topk"] = "soft"
    topk: int = Field(3, ge=1)
    query_budget: int | None = Field(None, gt=0)
    seed: int = Field(0, ge=0)
    device: str = "auto"
    checkpoints: int = Field(12, ge=2, le=200)
    victim: VictimSpec = VictimSpec()

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        try:
            return validate_device_name(value)
        except ArenaError as exc:
            raise ValueError(str(exc)) from None

    def resolve(self) -> MatchSpec:
        """Fill defaults from the registries and validate names and parameters.

        Raises ArenaError (one line) on anything unknown or impossible."""
        defender_cls = DEFENDERS.get(self.defender)
        attacker_cls = ATTACKERS.get(self.attacker)
        source = DATASETS.get(self.dataset)
        if self.pool != IN_DISTRIBUTION and self.pool not in DATASETS:
            raise ArenaError(
                f"unknown pool {self.pool!r}; use in-distribution or a data set name (see `arena list`)", field="pool"
            )
        arch = self.victim.arch or default_model_for(source.family)
        if arch not in MODELS:
            try:
                MODELS.get(arch)
            except ArenaError as exc:
                raise exc.at("victim.arch") from None
        defender_params = _validate_params(
            defender_cls.Params, self.defender_params, f"defender {self.defender!r}", "defender_params"
        )
        attacker_params = _validate_params(
            attacker_cls.Params, self.attacker_params, f"attacker {self.attacker!r}", "attacker_params"
        )
        return self.model_copy(
            update={
                "defender_params": defender_params,
                "attacker_params": attacker_params,
                "query_budget": self.query_budget or attacker_cls.default_budget,
                "victim": self.victim.model_copy(update={"arch": arch}),
            }
        )

    def identity(self) -> str:
        """The match's identity: a hash of the resolved spec (what `arena tournament` resumes by)."""
        return spec_identity(self.model_dump(mode="json"))

    def label(self) -> str:
        return f"{self.defender} vs {self.attacker} ({self.label_mode}) on {self.dataset}, seed {self.seed}"


def spec_identity(config: dict) -> str:
    """SHA-256 (hex, 24 chars) of a resolved spec's canonical JSON: equal specs, equal identity."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:24]


def _validate_params(model: type[BaseModel], values: dict, owner: str, field: str) -> dict:
    """Validated parameters; an error names `field.key` (e.g. attacker_params.epochs)."""
    from pydantic import ValidationError

    try:
        return model.model_validate(values).model_dump(mode="json")
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ArenaError(
            f"bad parameter {where or 'params'!r} for {owner}: {first['msg']}",
            field=f"{field}.{where}" if where else field,
        ) from None


def checkpoint_schedule(query_budget: int, count: int) -> list[int]:
    """`count` log-spaced query counts from about budget/50 up to the budget (inclusive)."""
    first = max(1, round(query_budget / 50))
    if count <= 1 or first >= query_budget:
        return [query_budget]
    ratio = (query_budget / first) ** (1 / (count - 1))
    points = sorted({min(query_budget, max(1, round(first * ratio**i))) for i in range(count)})
    points[-1] = query_budget
    return points
