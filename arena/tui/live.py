"""Watch a queued or running match: phase, queries against budget, ETA, live curves, log.

The screen polls the database twice a second in a thread (checkpoints and events newer than
what it has), so any match can be watched, including one started by another UI or `arena run`.
"""

from __future__ import annotations

from datetime import UTC, datetime

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Header, RichLog, Static

from arena.tui.data import FINAL, LiveSnapshot
from arena.tui.widgets import CurvePlot, Curves, duration, pct, status_text
from storage.records import EventRecord, MatchRecord, StoredCheckpoint

LOG_STYLES = {"phase": "bold", "error": "red", "log": ""}


def estimate_eta(started: datetime | None, done: int, total: int, now: datetime) -> float | None:
    """Seconds left in the current phase at the pace so far (None until there is a pace)."""
    if started is None or done <= 0 or total <= 0 or done > total:
        return None
    elapsed = (now - started).total_seconds()
    return max(0.0, elapsed * (total - done) / done)


def bar(done: int, total: int, width: int = 20) -> str:
    """A text progress bar for the current phase ('' when the phase reports no total)."""
    if total <= 0:
        return ""
    filled = round(width * min(done, total) / total)
    return f"[{'#' * filled}{'.' * (width - filled)}] {100 * min(done, total) // total:3d}%"


class LiveScreen(Screen):
    BINDINGS = [
        Binding("x", "cancel_match", "Cancel match"),
        Binding("w", "start_worker", "Start worker", show=False),
        Binding("d", "details", "Details"),
        Binding("escape", "back", "Back"),
        Binding("question_mark", "app.help", "Help"),
        Binding("q", "app.quit", "Quit"),
    ]
    POLL_SECONDS = 0.5

    def __init__(self, match_id: int) -> None:
        super().__init__()
        self.match_id = match_id
        self.match: MatchRecord | None = None
        self.points: list[StoredCheckpoint] = []
        self.last_event = 0
        self.phase_started: datetime | None = None
        self.cancel_sent = False
        self._polling = False
        self._shown: dict[str, Text] = {}

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="live-title")
        yield Static("", id="live-phase")
        yield Static("", id="live-numbers")
        yield CurvePlot(id="live-plot")
        yield RichLog(id="live-log", max_lines=500, wrap=False, markup=False, auto_scroll=True)
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = f"match #{self.match_id}"
        self.call_after_refresh(self.poll)  # draw the screen first, then fill it: a faster first frame
        self.set_interval(self.POLL_SECONDS, self.poll)
        self.set_interval(1.0, self._tick)

    def poll(self) -> None:
        if not self._polling:
            self._polling = True
            self._read(self._last_index(), self.last_event)

    @work(thread=True, exit_on_error=False, group="live")
    def _read(self, after_index: int, after_event: int) -> None:
        try:
            snapshot = self.app.store.snapshot(self.match_id, after_index, after_event)
        finally:
            self._polling = False
        self.app.call_from_thread(self.apply, snapshot)

    def _last_index(self) -> int:
        return self.points[-1].index if self.points else -1

    def apply(self, snapshot: LiveSnapshot | None) -> None:
        if snapshot is None:
            self.query_one("#live-title", Static).update(f"match #{self.match_id} is not in this database")
            return
        finished = self.match is not None and self.match.active and not snapshot.match.active
        self.match = snapshot.match
        if finished:
            self.notify(
                f"match #{self.match_id} {self.match.status}; press d for its details",
                severity="error" if self.match.status == "failed" else "information",
            )
        fresh = [p for p in snapshot.points if p.index > self._last_index()]
        self.points.extend(fresh)
        self._add_events(snapshot.events)
        self._render_status()
        m = self.match
        self.query_one(CurvePlot).show([Curves("", tuple(self.points), m.defender_accuracy, m.query_budget)])

    def _add_events(self, events: list[EventRecord]) -> None:
        log = self.query_one("#live-log", RichLog)
        for event in events:
            if event.id <= self.last_event:
                continue
            self.last_event = event.id
            if event.kind == "phase":
                self.phase_started = event.created_at
            stamp = event.created_at.astimezone().strftime("%H:%M:%S") if event.created_at else "--:--:--"
            message = event.message if event.kind != "error" else event.message.strip().splitlines()[-1]
            log.write(Text.assemble((stamp + " ", "dim"), (message, LOG_STYLES.get(event.kind, ""))))

    def _tick(self) -> None:
        if self.match is not None:
            self._render_status()

    def _render_status(self) -> None:
        m = self.match
        self._set(
            "#live-title",
            Text.assemble(status_text(m.status), "  ", (m.title, "bold"), f" · seed {m.seed} · {m.device}"),
        )
        now = datetime.now(UTC)
        phase = m.phase if not (self.cancel_sent and m.active) else f"{m.phase} (cancelling)"
        if m.status in FINAL:
            progress, eta_text = "", f"finished in {duration(m.wall_seconds)}"
        else:
            eta = estimate_eta(self.phase_started, m.progress_done, m.progress_total, now)
            eta_text = f"phase ETA {duration(eta)}" if eta is not None else "phase ETA -"
            progress = bar(m.progress_done, m.progress_total)
        self._set("#live-phase", Text.assemble(f"phase: {phase} ", (progress, "bold"), f" {eta_text}"))
        used = m.queries_now()
        last = self.points[-1] if self.points else None
        numbers = (
            f"queries {used}/{m.query_budget} · checkpoints {len(self.points)} · "
            f"clone {pct(last.clone_accuracy if last else None)} · "
            f"fidelity {pct(last.fidelity_served if last else None)} · "
            f"defender clean {pct(m.defender_accuracy)}"
        )
        if m.error:
            numbers += f" · error: {m.error}"
        self._set("#live-numbers", Text(numbers))
        self.app.check_worker(m)

    def _set(self, selector: str, content: Text) -> None:
        """Update a line only when it changed (each update costs a redraw)."""
        if self._shown.get(selector) != content:
            self._shown[selector] = content
            self.query_one(selector, Static).update(content)

    def action_cancel_match(self) -> None:
        if self.match is not None and not self.match.active:
            self.notify(f"match #{self.match_id} is already {self.match.status}", severity="warning")
            return
        self._cancel()

    @work(thread=True, exit_on_error=False, group="cancel")
    def _cancel(self) -> None:
        # A write: it may wait briefly for the worker's transaction, so not on the UI thread.
        accepted = self.app.store.request_cancel(self.match_id)
        self.app.call_from_thread(self._cancel_answered, accepted)

    def _cancel_answered(self, accepted: bool) -> None:
        if accepted:
            self.cancel_sent = True
            self.notify(f"cancelling match #{self.match_id}; its checkpoints are kept")
            self.poll()
        else:
            self.notify(f"match #{self.match_id} is not queued or running", severity="warning")

    def action_start_worker(self) -> None:
        """Play a queued match that no worker has taken (e.g. queued by `arena run --enqueue`)."""
        if self.match is None or self.match.status != "queued":
            self.notify("only a queued match needs a worker", severity="warning")
            return
        self.app.start_worker(self.match_id)

    def action_details(self) -> None:
        self.app.show_detail(self.match_id)

    def action_back(self) -> None:
        self.app.pop_screen()
