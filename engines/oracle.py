"""The query API: the only door an attacker has to the defended model.

One query is one image, whatever it is used for (a training label, a zeroth-order probe, a
generator sample). The budget is enforced here, not by attackers' own bookkeeping: a batch
that would cross it is refused whole with `QueryBudgetExceeded`.

Output contract, the same for every defender:
- `soft`: (N, C) probabilities (rows sum to 1);
- `hard`: (N,) int64 labels;
- `topk`: (N, C) probabilities with all but the k largest entries set to 0 (not renormalised,
  as a top-k API would report them).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

import torch

from engines.devices import synchronize
from engines.errors import ArenaError, QueryBudgetExceeded

LabelMode = Literal["soft", "hard", "topk"]
LABEL_MODES: tuple[str, ...] = ("soft", "hard", "topk")


class Oracle:
    """Counts, serves and times queries. Attackers get this object and nothing else."""

    __slots__ = (
        "_serve",
        "_device",
        "_should_stop",
        "query_budget",
        "label_mode",
        "topk",
        "num_classes",
        "input_shape",
        "queries_used",
        "serving_seconds",
        "calls",
    )

    def __init__(
        self,
        serve: Callable[[torch.Tensor], torch.Tensor],
        query_budget: int,
        label_mode: str,
        num_classes: int,
        input_shape: tuple[int, int, int],
        device: torch.device,
        topk: int = 3,
        should_stop: Callable[[], None] = lambda: None,
    ):
        if label_mode not in LABEL_MODES:
            raise ArenaError(f"unknown label mode {label_mode!r}; use soft, hard or topk", field="label_mode")
        if query_budget <= 0:
            raise ArenaError(f"query budget must be positive, got {query_budget}", field="query_budget")
        # The defender is reachable only through this closure, never as an attribute.
        self._serve = serve
        self._device = device
        # The match's cancellation check (the AttackContext's should_stop): asked before a batch
        # is counted, so a long data-free attack stops within one batch and a cancelled match
        # spends nothing more. It raises MatchCancelled; the oracle reports nothing itself.
        self._should_stop = should_stop
        self.query_budget = int(query_budget)
        self.label_mode = label_mode
        self.topk = max(1, min(int(topk), num_classes))
        self.num_classes = num_classes
        self.input_shape = tuple(input_shape)
        self.queries_used = 0
        self.serving_seconds = 0.0
        self.calls = 0

    @property
    def remaining(self) -> int:
        return self.query_budget - self.queries_used

    def query(self, images: torch.Tensor) -> torch.Tensor:
        """Answer a batch of float images in [0, 1], shape (N, C, H, W); returns on images.device."""
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or tuple(images.shape[1:]) != self.input_shape:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"oracle expects a (N, {', '.join(map(str, self.input_shape))}) tensor, got {shape}")
        n = images.shape[0]
        if n == 0:
            raise ValueError("oracle got an empty batch")
        if self.queries_used + n > self.query_budget:
            raise QueryBudgetExceeded(
                f"query budget exhausted: {self.queries_used} used of {self.query_budget}, batch of {n} refused"
            )
        self._should_stop()
        self.queries_used += n  # counted before serving: a failed call still spent its queries
        self.calls += 1
        x = images.detach().to(self._device, torch.float32)
        x = torch.nan_to_num(x, nan=0.0).clamp_(0.0, 1.0)  # the API accepts pixel values only
        synchronize(self._device)
        started = time.perf_counter()
        with torch.inference_mode():
            probs = self._serve(x).float()
            answer = self._format(probs)
        synchronize(self._device)
        self.serving_seconds += time.perf_counter() - started
        return answer.to(images.device).clone()  # a normal tensor, usable in autograd graphs

    def _format(self, probs: torch.Tensor) -> torch.Tensor:
        if self.label_mode == "soft":
            return probs
        if self.label_mode == "hard":
            return probs.argmax(dim=1)
        values, index = probs.topk(self.topk, dim=1)
        return torch.zeros_like(probs).scatter_(1, index, values)


def answers_to_targets(answers: torch.Tensor, label_mode: str, num_classes: int) -> torch.Tensor:
    """Training targets from oracle answers: labels for hard, renormalised probabilities otherwise."""
    if label_mode == "hard":
        return answers.long()
    probs = answers.float().clamp_min(0)
    return probs / probs.sum(1, keepdim=True).clamp_min(1e-12)
