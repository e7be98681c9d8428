"""A finished (or any) match in detail: curves, final numbers, config, provenance, log.

Given two ids it compares them: both matches' curves overlaid (A and B), numbers side by
side, and the config keys that differ marked.
"""

from __future__ import annotations

import json

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, RichLog, Static, TabbedContent, TabPane

from arena.render import fmt
from arena.tui.widgets import CurvePlot, Curves
from storage.records import EventRecord, MatchRecord, StoredCheckpoint

NUMBERS = (
    ("status", "status"),
    ("defender", "defender"),
    ("attacker", "attacker"),
    ("label_mode", "label mode"),
    ("dataset", "data set"),
    ("pool", "query pool"),
    ("query_budget", "query budget"),
    ("seed", "seed"),
    ("device", "device"),
    ("victim_accuracy", "victim accuracy"),
    ("defender_accuracy", "defender clean acc"),
    ("clone_accuracy", "clone accuracy"),
    ("best_clone_accuracy", "best clone acc"),
    ("fidelity_served", "fidelity (served)"),
    ("fidelity_victim", "fidelity (victim)"),
    ("queries_used", "queries used"),
    ("serving_seconds_per_query", "serving us/query"),
    ("queries_per_second", "queries/s"),
    ("wall_seconds", "wall time s"),
    ("error", "error"),
)


def flatten(value, prefix: str = "") -> dict[str, str]:
    """Nested dicts -> {'a.b': 'value'} for a two-column table."""
    if isinstance(value, dict) and value:
        out: dict[str, str] = {}
        for key in sorted(value):
            out.update(flatten(value[key], f"{prefix}.{key}" if prefix else str(key)))
        return out
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return {prefix or "value": text}


class DetailScreen(Screen):
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("c", "compare", "Compare with…"),
        Binding("l", "live", "Live view"),
        Binding("question_mark", "app.help", "Help"),
        Binding("q", "app.quit", "Quit"),
    ]

    def __init__(self, match_ids: list[int]) -> None:
        super().__init__()
        self.match_ids = list(match_ids)[:2]
        self.matches: list[MatchRecord] = []
        self.points: list[list[StoredCheckpoint]] = []

    @property
    def comparing(self) -> bool:
        return len(self.match_ids) == 2

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="detail-title")
        with TabbedContent(id="detail-tabs"):
            with TabPane("Curves", id="tab-curves"):
                yield CurvePlot(id="detail-plot")
            for title, pane_id in (
                ("Numbers", "tab-numbers"),
                ("Config", "tab-config"),
                ("Provenance", "tab-provenance"),
                ("Log", "tab-log"),
            ):
                yield TabPane(title, id=pane_id)  # filled when first shown: a faster first frame
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = (
            "compare " + " vs ".join(f"#{i}" for i in self.match_ids)
            if self.comparing
            else f"match #{self.match_ids[0]}"
        )
        self.filled: set[str] = set()
        self.events: list[list[EventRecord]] = []
        self.call_after_refresh(self._load)  # draw the screen first, then fill it: a faster first frame

    @work(thread=True, exit_on_error=False)
    def _load(self) -> None:
        store = self.app.store
        matches, points, events = [], [], []
        for match_id in self.match_ids:
            match = store.match(match_id)
            if match is None:
                self.app.call_from_thread(self._missing, match_id)
                return
            matches.append(match)
            points.append(store.points(match_id))
            events.append(store.events(match_id))
        self.app.call_from_thread(self._show, matches, points, events)

    def _missing(self, match_id: int) -> None:
        self.query_one("#detail-title", Static).update(f"match #{match_id} is not in this database")

    @property
    def labels(self) -> list[str]:
        return ["A", "B"] if self.comparing else [""]

    def _show(
        self, matches: list[MatchRecord], points: list[list[StoredCheckpoint]], events: list[list[EventRecord]]
    ) -> None:
        self.matches, self.points, self.events = matches, points, events
        title = Text()
        for label, match in zip(self.labels, matches):
            if title:
                title.append("\n")
            title.append(f"{label + ': ' if label else ''}{match.title}", style="bold")
            title.append(f"  seed {match.seed} · {match.status}")
        self.query_one("#detail-title", Static).update(title)
        self.query_one(CurvePlot).show(
            [
                Curves(label, tuple(p), m.defender_accuracy, m.query_budget)
                for label, m, p in zip(self.labels, matches, points)
            ]
        )
        self.call_later(self._fill_pane, self.query_one(TabbedContent).active)

    @on(TabbedContent.TabActivated)
    async def _tab_activated(self, event: TabbedContent.TabActivated) -> None:
        await self._fill_pane(event.pane.id)

    async def _fill_pane(self, pane_id: str | None) -> None:
        if not self.matches or pane_id in self.filled or pane_id in (None, "tab-curves"):
            return
        self.filled.add(pane_id)
        pane = self.query_one(f"#{pane_id}", TabPane)
        matches = self.matches
        headers = [f"#{m.id} ({label})" if label else f"#{m.id}" for label, m in zip(self.labels, matches)]
        if pane_id == "tab-log":
            log = RichLog(id="detail-log", wrap=True, markup=False)
            await pane.mount(log)
            for label, match_events in zip(self.labels, self.events):
                for event in match_events:
                    stamp = event.created_at.astimezone().strftime("%H:%M:%S") if event.created_at else ""
                    log.write(
                        Text.assemble(
                            (f"{label} " if label else "", "bold"),
                            (stamp + " ", "dim"),
                            (event.message.rstrip(), "red" if event.kind == "error" else ""),
                        )
                    )
            return
        table = DataTable(id=pane_id.replace("tab-", "detail-"), cursor_type="row", zebra_stripes=True)
        await pane.mount(table)
        if pane_id == "tab-numbers":
            rows = [(title, [fmt(key, getattr(m, key)) for m in matches]) for key, title in NUMBERS]
        elif pane_id == "tab-config":
            rows = self._flat_rows([m.config for m in matches])
        else:
            rows = self._flat_rows([{"provenance": m.provenance, "details": m.details} for m in matches])
        self._fill(table, headers, rows)

    def _fill(self, table: DataTable, headers: list[str], rows: list[tuple[str, list[str]]]) -> None:
        table.add_columns("", *headers)
        if self.comparing:
            table.add_column("", key="diff")
        for name, values in rows:
            cells = [name, *values]
            if self.comparing:
                cells.append("≠" if values[0] != values[1] else "")
            table.add_row(*cells)

    @staticmethod
    def _flat_rows(values: list[dict]) -> list[tuple[str, list[str]]]:
        flat = [flatten(v) for v in values]
        return [(key, [f.get(key, "-") for f in flat]) for key in sorted(set().union(*flat))]

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_compare(self) -> None:
        self.app.pick_and_compare(self.match_ids[0])

    def action_live(self) -> None:
        self.app.show_live(self.match_ids[0])
