"""The defence ranking (`arena leaderboard --by defence`) and a defence's trade-off curve
(`arena tradeoff`), as screens.

Both only show what storage/ranking.py and storage/tradeoff.py compute; they read again when
the database changes, like the leaderboard (PolledScreen).
"""

from __future__ import annotations

import json
import math

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import DataTable, Footer, Header, Select, Static

from arena.render import fmt
from arena.tui.polled import PolledScreen
from arena.tui.widgets import TradeoffPlot, TradeoffPoint, pct
from storage.ranking import DefenceRow, Interval

RANKING_COLUMNS = (  # the flags before the counts: they must show in 80 columns
    ("rank", "#"),
    ("defence", "defence"),
    ("worst_attack", "worst attack"),
    ("worst_clone", "clone ±CI"),
    ("worst_fidelity", "fid"),
    ("utility_cost", "cost"),
    ("flags", "!"),
    ("attacks", "atk"),
    ("seeds", "seeds"),
    ("dataset", "data"),
)
POINT_COLUMNS = (
    ("mark", " "),
    ("setting", "setting"),
    ("seeds", "seeds"),
    ("defender_accuracy", "served"),
    ("defender_accuracy_std", "± served"),
    ("clone_accuracy", "clone"),
    ("clone_accuracy_std", "± clone"),
)


def interval_text(interval: Interval) -> str:
    """'45.0 [40.1–49.9]' in percent; a single seed has no interval."""
    if math.isinf(interval.low) or math.isinf(interval.high):
        return f"{100 * interval.mean:.1f} (n={interval.n})"
    return f"{100 * interval.mean:.1f} [{100 * interval.low:.1f}–{100 * interval.high:.1f}]"


def half_width_text(interval: Interval) -> str:
    """'45.0 ±4.9' in percent: the 95% interval, which is symmetric about the mean, in a
    table cell."""
    if math.isinf(interval.low) or math.isinf(interval.high):
        return f"{100 * interval.mean:.1f} (n={interval.n})"
    return f"{100 * interval.mean:.1f} ±{100 * interval.half_width:.1f}"


def flags_text(row: DefenceRow) -> Text:
    return Text(f"!{len(row.flags)}", style="bold yellow") if row.flags else Text("-", style="dim")


def row_key(row: DefenceRow) -> str:
    return f"{row.dataset}|{row.defender}|{json.dumps(row.defender_params, sort_keys=True)}"


class DefenceRankingScreen(PolledScreen):
    """Each defence's worst case over the attacks it faced, ranked per data set."""

    BINDINGS = [
        Binding("t", "tradeoff", "Trade-off"),
        Binding("enter", "tradeoff", "Trade-off", show=False),
        Binding("f", "focus_filter", "Filter"),
        Binding("escape", "back", "Back"),
        Binding("question_mark", "app.help", "Help"),
        Binding("q", "app.quit", "Quit"),
    ]
    AUTO_FOCUS = "#ranking"

    def __init__(self, dataset: str | None = None) -> None:
        super().__init__()
        self.dataset = dataset
        self.rows: list[DefenceRow] = []
        self._datasets: list[str] = []

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        with Horizontal(id="ranking-filters"):
            yield Select([], prompt="data set: all", id="ranking-dataset", compact=True, allow_blank=True)
            yield Static("in %; rank 1 = lowest worst case; !n = n flags", id="ranking-legend")
        table = DataTable(id="ranking", cursor_type="row", zebra_stripes=True)
        for key, label in RANKING_COLUMNS:
            table.add_column(label, key=key)
        yield table
        yield Static("", id="ranking-detail")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "defence ranking"
        if self.dataset is not None:  # shown as chosen until the data sets are read
            self._update_datasets([self.dataset])
        self.start_polling()

    # -- data -----------------------------------------------------------------------------------
    def query_key(self) -> str | None:
        return self.dataset

    def read(self, dataset: str | None) -> tuple[list[DefenceRow], list[str]]:
        store = self.app.store
        return store.defence_ranking(dataset), store.choices()["dataset"]

    def show_data(self, data: tuple[list[DefenceRow], list[str]]) -> None:
        rows, datasets = data
        self._update_datasets(datasets)
        if rows != self.rows:
            self.rows = rows
            self._render_rows()

    def _update_datasets(self, datasets: list[str]) -> None:
        if datasets == self._datasets:
            return
        self._datasets = datasets
        select = self.query_one("#ranking-dataset", Select)
        with self.prevent(Select.Changed):
            select.set_options([(d, d) for d in datasets])
            if self.dataset in datasets:
                select.value = self.dataset

    def _render_rows(self) -> None:
        table = self.query_one("#ranking", DataTable)
        current = self.cursor_row()
        table.clear()
        for row in self.rows:
            cells = {
                "rank": str(row.rank) if row.rank is not None else "-",
                "defence": Text(row.defence),  # not markup: "[eps=0.5]" is part of the name
                "worst_attack": Text(row.worst_attack),
                "worst_clone": half_width_text(row.worst_clone),
                "worst_fidelity": f"{100 * row.worst_fidelity.mean:.1f}",
                "utility_cost": f"{100 * row.utility_cost.mean:.1f}",
                "attacks": str(row.attacks),
                "seeds": str(row.seeds),
                "flags": flags_text(row),
                "dataset": row.dataset,
            }
            table.add_row(*(cells[key] for key, _ in RANKING_COLUMNS), key=row_key(row))
        if current is not None and row_key(current) in table.rows:
            table.move_cursor(row=table.get_row_index(row_key(current)), animate=False)
        self._update_detail()

    def cursor_row(self) -> DefenceRow | None:
        table = self.query_one("#ranking", DataTable)
        if table.row_count == 0 or not 0 <= table.cursor_row < len(self.rows):
            return None
        try:
            key = table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value
        except Exception:  # cursor outside the table while it is rebuilt
            return None
        return next((row for row in self.rows if row_key(row) == key), None)

    def _update_detail(self) -> None:
        detail = self.query_one("#ranking-detail", Static)
        row = self.cursor_row()
        if row is None:
            detail.update("no finished matches with results yet" if not self.rows else "")
            return
        ranked = f"rank {row.rank}" if row.rank is not None else "unranked"
        text = Text()
        text.append(f"{row.defence}", style="bold")
        text.append(
            f" on {row.dataset} · {ranked} · worst of {row.attacks} attacks: {row.worst_attack}, clone"
            f" {interval_text(row.worst_clone)} (95% CI, {row.worst_clone.n} seeds) · served"
            f" {pct(row.served_accuracy.mean)} (cost {pct(row.utility_cost.mean)})"
        )
        for flag in row.flags or ["no sanity flags"]:
            text.append("\n")
            text.append(f"! {flag}" if row.flags else flag, style="yellow" if row.flags else "dim")
        detail.update(text)

    # -- events ---------------------------------------------------------------------------------
    @on(DataTable.RowHighlighted, "#ranking")
    def _row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._update_detail()

    @on(Select.Changed, "#ranking-dataset")
    def _dataset_changed(self, event: Select.Changed) -> None:
        self.dataset = None if event.value is Select.NULL else str(event.value)
        self.refresh_data()

    # -- actions --------------------------------------------------------------------------------
    def action_tradeoff(self) -> None:
        row = self.cursor_row()
        if row is not None and row.worst_cell is not None:
            self.app.push_screen(TradeoffScreen(row))

    def action_focus_filter(self) -> None:
        self.query_one("#ranking-dataset", Select).focus()

    def action_back(self) -> None:
        self.app.pop_screen()


class TradeoffScreen(PolledScreen):
    """One defender's trade-off curve in the arena of a ranking row's worst case: every
    setting of the defender played there, served clean accuracy against clone accuracy."""

    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("question_mark", "app.help", "Help"),
        Binding("q", "app.quit", "Quit"),
    ]

    def __init__(self, row: DefenceRow) -> None:
        super().__init__()
        self.row = row
        self.attacker, self.label_mode, self.query_budget = row.worst_cell
        self.points: list[dict] = []

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        yield Static("", id="tradeoff-title")
        yield TradeoffPlot(id="tradeoff-plot")
        table = DataTable(id="tradeoff-points", cursor_type="row", zebra_stripes=True)
        for key, label in POINT_COLUMNS:
            table.add_column(label, key=key)
        yield table
        yield Footer()

    def on_mount(self) -> None:
        row = self.row
        self.sub_title = f"trade-off: {row.defender}"
        title = Text()
        title.append(f"{row.defender} vs {self.attacker} ({self.label_mode}, budget {self.query_budget})", "bold")
        title.append(f" on {row.dataset}: the worst case of {row.defence}")
        self.query_one("#tradeoff-title", Static).update(title)
        self.start_polling()

    def read(self, key) -> list[dict]:
        row = self.row
        return self.app.store.tradeoff(row.defender, self.attacker, self.label_mode, row.dataset, self.query_budget)

    def is_ranked(self, point: dict) -> bool:
        return json.loads(point["defender_params"]) == self.row.defender_params

    def show_data(self, points: list[dict]) -> None:
        if points == self.points:
            return
        self.points = points
        self.query_one(TradeoffPlot).show(
            [
                TradeoffPoint(p["setting"], p["defender_accuracy"], p["clone_accuracy"], self.is_ranked(p))
                for p in points
                if p["defender_accuracy"] is not None and p["clone_accuracy"] is not None
            ]
        )
        table = self.query_one("#tradeoff-points", DataTable)
        table.clear()
        for point in points:
            mark = "*" if self.is_ranked(point) else " "
            table.add_row(*(mark if key == "mark" else fmt(key, point.get(key)) for key, _ in POINT_COLUMNS))
        if len(points) < 2:
            self.notify(
                "one setting played in this arena: play others (defender_params in an `arena run --config` file)"
            )

    def action_back(self) -> None:
        self.app.pop_screen()
