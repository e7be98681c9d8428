"""The Textual application behind `arena tui`.

Screens: leaderboard (default), new match, live match, match details / comparison, defence
ranking and a defence's trade-off curve, help.
Matches run in detached `arena worker` processes; this process only reads the database
(and writes cancellation requests), so it never imports torch.
"""

from __future__ import annotations

import gc
import os
import subprocess
import time

from textual import events, work
from textual.app import App
from textual.binding import Binding
from textual.reactive import var

from arena.tui import catalog as catalog_module
from arena.tui.catalog import Catalog
from arena.tui.data import ArenaStore
from arena.tui.detail import DetailScreen
from arena.tui.dialogs import HelpScreen, PickMatchScreen
from arena.tui.launcher import Settings, start_worker
from arena.tui.leaderboard import LeaderboardScreen
from arena.tui.live import LiveScreen
from arena.tui.new_match import NewMatchScreen
from arena.tui.ranking import DefenceRankingScreen
from engines.errors import ArenaError
from storage.records import MatchRecord


class ArenaApp(App):
    CSS_PATH = "arena.tcss"
    TITLE = "MISLEADER Arena"
    ENABLE_COMMAND_PALETTE = False  # the footer's room is for the arena's own keys
    BINDINGS = [
        Binding("f1", "help", "Help", show=False),
        Binding("ctrl+q", "quit", "Quit", show=False, priority=True),
    ]

    catalog: var[Catalog | None] = var(None)
    catalog_error: var[str | None] = var(None)

    # Python's full (generation 2) garbage collection paused this process for 30-180 ms once
    # Textual's render caches have grown, and left to itself it ran every few seconds, often
    # right after a keypress. With `idle_gc`, objects alive after start-up are frozen out of
    # collections, automatic full collections are off, and a full collection runs only when no
    # key or mouse input has come for IDLE_SECONDS (at most every GC_EVERY_SECONDS).
    IDLE_SECONDS = 1.0
    GC_EVERY_SECONDS = 5.0

    def __init__(
        self,
        db: str | None = None,
        data_root: str | None = None,
        cache_dir: str | None = None,
        run_config: str | None = None,
        catalog: Catalog | None = None,
        log_dir: str | None = None,
        idle_gc: bool = False,
    ):
        super().__init__()
        self.idle_gc = idle_gc
        self.last_input = time.monotonic()
        self.last_full_gc = time.monotonic()
        self.idle_collections = 0
        self._gc_threshold = gc.get_threshold()
        self.store = ArenaStore(db)
        self.settings = Settings(
            db_url=self.store.url,
            data_root=os.path.abspath(data_root or os.environ.get("ARENA_DATA", "data")),
            cache_dir=os.path.abspath(cache_dir or os.environ.get("ARENA_CACHE", ".arena/cache")),
            run_config=os.path.abspath(run_config) if run_config else None,
            log_dir=log_dir,
        )
        self._preset_catalog = catalog
        self.spawned: dict[int, subprocess.Popen] = {}  # worker processes this UI started
        self._reported_exits: set[int] = set()

    def on_mount(self) -> None:
        self.push_screen(LeaderboardScreen())
        if self._preset_catalog is not None:
            self.catalog = self._preset_catalog
        else:
            self._load_catalog()
        if self.idle_gc:
            self.call_after_refresh(self._start_idle_gc)

    # -- garbage collection off the keypress path -----------------------------------------------
    def _start_idle_gc(self) -> None:
        young, middle, _ = self._gc_threshold
        gc.set_threshold(young, middle, 1_000_000_000)  # generation 2 only when idle, below
        self.set_interval(self.IDLE_SECONDS / 2, self._collect_if_idle)

    def _collect_if_idle(self) -> None:
        now = time.monotonic()
        if now - self.last_input >= self.IDLE_SECONDS and now - self.last_full_gc >= self.GC_EVERY_SECONDS:
            gc.collect()
            if self.idle_collections == 0:
                gc.freeze()  # what survives start-up (modules, styles) stays: stop rescanning it
            self.last_full_gc = time.monotonic()
            self.idle_collections += 1

    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, (events.Key, events.MouseDown)):
            self.last_input = time.monotonic()
        await super().on_event(event)

    def watch_catalog(self, catalog: Catalog | None) -> None:
        for screen in self.screen_stack:
            if isinstance(screen, NewMatchScreen):
                screen.catalog_ready(catalog)

    def watch_catalog_error(self, message: str | None) -> None:
        for screen in self.screen_stack:
            if isinstance(screen, NewMatchScreen):
                screen.catalog_failed(message)

    @work(thread=True, exit_on_error=False, group="catalog")
    def _load_catalog(self) -> None:
        try:
            found = catalog_module.load(self.settings.cache_dir)
        except ArenaError as exc:
            self.call_from_thread(setattr, self, "catalog_error", str(exc))
            return
        self.call_from_thread(setattr, self, "catalog", found)

    def on_unmount(self) -> None:
        self.store.close()
        if self.idle_gc:
            gc.set_threshold(*self._gc_threshold)
            gc.unfreeze()

    # -- navigation -------------------------------------------------------------------------
    def open_match(self, match_id: int) -> None:
        match = self.store.match(match_id)
        if match is None:
            self.notify(f"match #{match_id} is gone from the database", severity="error")
        elif match.active:
            self.show_live(match_id)
        else:
            self.show_detail(match_id)

    def show_live(self, match_id: int) -> None:
        if self._below_is(LiveScreen, match_id):
            self.pop_screen()
        else:
            self.push_screen(LiveScreen(match_id))

    def show_detail(self, match_id: int) -> None:
        if self._below_is(DetailScreen, match_id):
            self.pop_screen()
        else:
            self.push_screen(DetailScreen([match_id]))

    def _below_is(self, kind: type, match_id: int) -> bool:
        """Is the screen under the current one the `kind` view of this match (go back, not deeper)?"""
        if len(self.screen_stack) < 2:
            return False
        below = self.screen_stack[-2]
        ids = getattr(below, "match_ids", [getattr(below, "match_id", None)])
        return isinstance(below, kind) and ids == [match_id]

    def compare(self, first: int, second: int) -> None:
        self.push_screen(DetailScreen([first, second]))

    def pick_and_compare(self, base: int) -> None:
        candidates = self.store.recent(exclude=base)

        def chosen(other: int | None) -> None:
            if other is not None:
                self.compare(base, other)

        self.push_screen(PickMatchScreen(base, candidates), chosen)

    def show_defences(self, dataset: str | None = None) -> None:
        if not isinstance(self.screen, DefenceRankingScreen):
            self.push_screen(DefenceRankingScreen(dataset))

    def action_new_match(self) -> None:
        if not isinstance(self.screen, NewMatchScreen):
            self.push_screen(NewMatchScreen())

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    # -- matches this UI started ------------------------------------------------------------
    def match_started(self, match_id: int, process: subprocess.Popen) -> None:
        self.spawned[match_id] = process
        self.switch_screen(LiveScreen(match_id))

    def start_worker(self, match_id: int) -> None:
        """A detached worker for an already queued match."""
        process = self.spawned.get(match_id)
        if process is not None and process.poll() is None:
            self.notify(f"a worker for match #{match_id} is already running", severity="warning")
            return
        self.spawned[match_id] = start_worker(match_id, self.settings)
        self._reported_exits.discard(match_id)
        self.notify(f"worker started for match #{match_id}")

    def check_worker(self, match: MatchRecord) -> None:
        """Tell the user once if a worker we started died without finishing its match."""
        process = self.spawned.get(match.id)
        if process is None or process.poll() is None or match.id in self._reported_exits:
            return
        if match.active and process.returncode != 0:
            self._reported_exits.add(match.id)
            log = self.settings.worker_log(match.id)
            self.notify(
                f"the worker of match #{match.id} exited with status {process.returncode}; see {log}",
                severity="error",
                timeout=30,
            )


def run_tui(db: str | None = None, data_root: str | None = None, cache_dir: str | None = None) -> None:
    """`arena tui`. $ARENA_TUI_CONFIG may name a TOML of MatchSpec fields that every match
    started from the form inherits (e.g. a smaller victim for demos and smoke tests)."""
    ArenaApp(
        db=db,
        data_root=data_root,
        cache_dir=cache_dir,
        run_config=os.environ.get("ARENA_TUI_CONFIG") or None,
        idle_gc=True,
    ).run()
