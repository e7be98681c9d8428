"""User-facing errors: one line that says what went wrong and what to do."""


class ArenaError(Exception):
    """An error caused by the user's input or environment (bad name, missing data, ...).

    The CLI prints `str(error)` on one line and exits with status 2; no traceback.
    `field` names the spec field or option at fault, where there is one (for forms and JSON).
    """

    def __init__(self, message: str = "", field: str | None = None):
        super().__init__(message)
        self.field = field


class QueryBudgetExceeded(ArenaError):
    """An attacker asked the oracle for more queries than its budget allows."""


class MatchCancelled(Exception):
    """Raised inside a running match when cancellation was requested."""
