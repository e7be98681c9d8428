"""User-facing errors: one line that says what went wrong and what to do."""


class ArenaError(Exception):
    """An error caused by the user's input or environment (bad name, missing data, ...).

    The CLI prints `str(error)` on one line and exits with status 2; no traceback.
    """


class QueryBudgetExceeded(ArenaError):
    """An attacker asked the oracle for more queries than its budget allows."""


class MatchCancelled(Exception):
    """Raised inside a running match when cancellation was requested."""
