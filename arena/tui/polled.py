"""A screen that shows rows read from the database and reads them again only when they may
have changed: every POLL_SECONDS a worker thread reads ArenaStore.board_token (one summary
row); the screen's own rows are read when that token or the screen's query changed."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from textual import work
from textual.screen import Screen


class PolledScreen(Screen):
    POLL_SECONDS = 1.0

    def __init__(self) -> None:
        super().__init__()
        self._polling = False
        self._token = None  # (board token, query) the rows shown were read at

    # -- for subclasses -------------------------------------------------------------------------
    def query_key(self) -> Hashable:
        """What the screen asks for (its filters); rows read for another key are not shown."""
        return None

    def read(self, key: Hashable) -> Any:
        """The screen's data for `key`, read in a worker thread from self.app.store."""
        raise NotImplementedError

    def show_data(self, data: Any) -> None:
        """Show freshly read data (on the UI thread)."""
        raise NotImplementedError

    # -- polling --------------------------------------------------------------------------------
    def start_polling(self) -> None:
        """Call from on_mount: read now, then poll."""
        self.refresh_data()
        self.set_interval(self.POLL_SECONDS, self.refresh_data)

    def on_screen_resume(self) -> None:
        self._token = None  # read again when coming back
        self.refresh_data()

    def refresh_data(self) -> None:
        if not self._polling:
            self._polling = True
            self._load(self.query_key())

    @work(thread=True, exit_on_error=False, group="poll")
    def _load(self, key: Hashable) -> None:
        try:
            token = (self.app.store.board_token(), key)
            if token == self._token:
                return  # nothing changed: nothing read, nothing redrawn
            data = self.read(key)
        finally:
            self._polling = False
        self.app.call_from_thread(self._apply, key, data, token)

    def _apply(self, key: Hashable, data: Any, token) -> None:
        if key != self.query_key():
            self.refresh_data()  # the query changed while this was read
            return
        self._token = token
        self.show_data(data)
