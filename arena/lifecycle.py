"""A clean stop for `arena run` and `arena worker` on SIGINT (Ctrl-C) or SIGTERM.

The first signal only records a request; the running match notices it at its next check
(`stop_requested()`, polled by runner.DatabaseRecorder on every observer call, which the
training and attack loops make many times a second), is marked `cancelled` with its
checkpoints kept, and the command cancels the rest of its batch and exits 128 + signal
number: 130 for SIGINT, 143 for SIGTERM. A second signal exits at once (status the same);
the match then stays `running` until the reaper (storage.liveness) notices the silence.
"""

from __future__ import annotations

import os
import signal
import threading

_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_state: dict[str, int | None] = {"signum": None}
_installed = threading.local()


def stop_requested() -> int | None:
    """The signal number of a pending stop request, or None."""
    return _state["signum"]


def exit_status() -> int:
    """128 + the signal number, as a shell reports a process ended by that signal."""
    return 128 + (_state["signum"] or signal.SIGINT)


def active() -> bool:
    """True inside `graceful_stop()` (then runner must not install its own SIGTERM handler)."""
    return getattr(_installed, "on", False)


def _handler(signum, frame) -> None:
    if _state["signum"] is not None:
        os.write(2, b"error: interrupted again: exiting at once\n")
        os._exit(128 + signum)
    _state["signum"] = signum
    name = signal.Signals(signum).name
    os.write(2, f"{name}: stopping; the running match is cancelled at its next check (again: exit at once)\n".encode())


class graceful_stop:  # noqa: N801 - used as a `with` statement, like contextlib helpers
    """Install the two-stage SIGINT/SIGTERM handlers for the duration of a command."""

    def __enter__(self) -> graceful_stop:
        _state["signum"] = None
        self._previous = {}
        if threading.current_thread() is not threading.main_thread():
            return self
        for signum in _SIGNALS:
            self._previous[signum] = signal.signal(signum, _handler)
        _installed.on = True
        return self

    def __exit__(self, *exc) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        _installed.on = False
        _state["signum"] = None
