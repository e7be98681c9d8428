"""User-facing errors: one line that says what went wrong and what to do."""

from __future__ import annotations


class ArenaError(Exception):
    """An error caused by the user's input or environment (bad name, missing data, ...).

    The CLI prints `str(error)` on one line and exits with status 2; no traceback. `field`
    names the input at fault when there is one: a MatchSpec field ("attacker",
    "query_budget", "attacker_params.epochs", ...) or a CLI option ("config", "db"); the CLI
    reports it with `--format json` so that a front end can show the message next to it.
    """

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field

    def at(self, field: str) -> ArenaError:
        """The same error, about `field` (when the code that raised it could not know)."""
        self.field = field
        return self


class QueryBudgetExceeded(ArenaError):
    """An attacker asked the oracle for more queries than its budget allows."""


class MatchCancelled(Exception):
    """Raised inside a running match when cancellation was requested."""
