"""Typed records that cross the layers: the engine builds them, `storage` maps them to its
tables (storage/queries.py), the CLI and the TUI read them.

Frozen dataclasses rather than pydantic models: they are built by the engine's own code from
numbers it just computed, never parsed from user input, so there is nothing to validate; a
dataclass costs nothing per checkpoint, cannot be changed after the fact by an observer, and
needs no import beyond the standard library (the TUI reads them without loading torch).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class CloneScores:
    """A clone scored on the test split (engines.metrics.CloneScorer)."""

    clone_accuracy: float
    best_clone_accuracy: float  # the best clone accuracy of the match so far
    fidelity_served: float  # agreement with the defender's served labels
    fidelity_victim: float  # agreement with the undefended victim's labels


@dataclass(frozen=True)
class CheckpointRow:
    """The clone's scores after `queries_used` queries, with the attack's time so far."""

    queries_used: int
    clone_accuracy: float
    best_clone_accuracy: float
    fidelity_served: float
    fidelity_victim: float
    wall_seconds: float  # since the attack started
    serving_seconds: float  # of which spent answering queries (the defender's cost)

    @classmethod
    def of(cls, queries_used: int, scores: CloneScores, wall_seconds: float, serving_seconds: float) -> CheckpointRow:
        return cls(
            queries_used=queries_used, **asdict(scores), wall_seconds=wall_seconds, serving_seconds=serving_seconds
        )

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(CheckpointRow)}

    @property
    def scores(self) -> CloneScores:
        return CloneScores(self.clone_accuracy, self.best_clone_accuracy, self.fidelity_served, self.fidelity_victim)


CHECKPOINT_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(CheckpointRow))


@dataclass(frozen=True)
class VictimFacts:
    """The undefended victim of a match."""

    test_accuracy: float
    reused: bool  # loaded from the artifact cache instead of trained
    training: dict  # engines.training.fit's report (epochs, best validation accuracy, seconds)

    def as_dict(self) -> dict:
        """The training report with `reused` (the form kept in a match's details)."""
        return {**self.training, "reused": self.reused}


@dataclass(frozen=True)
class DefenderFacts:
    """The prepared defender of a match."""

    clean_accuracy: float  # accuracy of its served labels on the test split
    prepare_seconds: float
    report: dict  # what the defender's prepare() returned (free form; {} when it trains nothing)

    def as_dict(self) -> dict:
        """The prepare() report with `prepare_seconds` (the form kept in a match's details)."""
        return {**self.report, "prepare_seconds": self.prepare_seconds}


@dataclass(frozen=True)
class MatchSummary:
    """What a finished match returns (engines.match.play_match)."""

    victim: VictimFacts
    defender: DefenderFacts
    final: CheckpointRow | None  # the last checkpoint; None if the attacker returned no clone
    queries_used: int
    serving_seconds_per_query: float
    attack_seconds: float
    queries_per_second: float | None
    split: dict  # how the data set was split (seed, sizes)

    @property
    def clone_accuracy(self) -> float | None:
        return None if self.final is None else self.final.clone_accuracy

    def as_dict(self) -> dict:
        """A flat JSON-ready form: the accuracies, the final scores, the facts' reports."""
        final = {} if self.final is None else asdict(self.final.scores)
        return {
            "victim_accuracy": self.victim.test_accuracy,
            "defender_accuracy": self.defender.clean_accuracy,
            **final,
            "queries_used": self.queries_used,
            "serving_seconds_per_query": self.serving_seconds_per_query,
            "attack_seconds": self.attack_seconds,
            "queries_per_second": self.queries_per_second,
            "split": self.split,
            "victim": self.victim.as_dict(),
            "defender": self.defender.as_dict(),
        }
