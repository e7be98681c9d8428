"""The default screen: every match in the database, ranked per arena, with filters and sorting."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import DataTable, Footer, Header, Select, Static

from arena.render import fmt
from arena.tui.data import STATUSES, BoardFilter
from arena.tui.polled import PolledScreen
from arena.tui.widgets import status_text
from storage.records import BoardRow

COLUMNS = (
    ("mark", " "),
    ("rank", "#"),
    ("id", "id"),
    ("status", "status"),
    ("defender", "defender"),
    ("attacker", "attacker"),
    ("label_mode", "label"),
    ("dataset", "data"),
    ("query_budget", "budget"),
    ("defender_accuracy", "def acc"),
    ("clone_accuracy", "clone"),
    ("fidelity_served", "fidelity"),
    ("queries_used", "queries"),
)
SORTABLE = ("arena", "id", "clone_accuracy", "fidelity_served", "defender_accuracy", "query_budget", "status")
FILTERS = (("dataset", "data set"), ("attacker", "attacker"), ("label_mode", "label"), ("status", "status"))


class LeaderboardScreen(PolledScreen):
    BINDINGS = [
        Binding("n", "new_match", "New match"),
        Binding("enter", "open", "Open", show=False),
        Binding("s", "cycle_sort", "Sort"),
        Binding("r", "reverse", "Reverse", show=False),
        Binding("space", "mark", "Mark", show=False),
        Binding("c", "compare", "Compare"),
        Binding("d", "defences", "Defences"),
        Binding("f", "focus_filters", "Filters"),
        Binding("t", "focus_table", "Table", show=False),
        Binding("question_mark", "app.help", "Help"),
        Binding("q", "app.quit", "Quit"),
    ]
    AUTO_FOCUS = "#board"

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[BoardRow] = []
        self.filters = BoardFilter()
        self.sort_key = "arena"
        self.sort_reverse = False
        self.marked: int | None = None
        self._choices: dict[str, list[str]] = {}

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        with Horizontal(id="filters"):
            for name, label in FILTERS:
                yield Select([], prompt=f"{label}: all", id=f"filter-{name}", compact=True, allow_blank=True)
        table = DataTable(id="board", cursor_type="row", zebra_stripes=True)
        for key, label in COLUMNS:
            table.add_column(label, key=key)
        yield table
        yield Static("", id="board-status")
        yield Footer()

    def on_mount(self) -> None:
        self.title = "MISLEADER Arena"
        self.sub_title = "leaderboard"
        self.query_one("#filter-status", Select).set_options([(s, s) for s in STATUSES])
        self.start_polling()

    # -- data -----------------------------------------------------------------------------------
    def query_key(self) -> BoardFilter:
        return self.filters

    def read(self, filters: BoardFilter) -> tuple[list[BoardRow], dict[str, list[str]]]:
        return self.app.store.board(filters), self.app.store.choices()

    def show_data(self, data: tuple[list[BoardRow], dict[str, list[str]]]) -> None:
        rows, choices = data
        self._update_choices(choices)
        if rows != self.rows:
            self.rows = rows
            self._render_rows()
        else:
            self._update_status()

    def _update_choices(self, choices: dict[str, list[str]]) -> None:
        if choices == self._choices:
            return
        self._choices = choices
        for name, values in choices.items():
            select = self.query_one(f"#filter-{name}", Select)
            current = select.value
            with self.prevent(Select.Changed):
                select.set_options([(v, v) for v in values])
                if current in values:
                    select.value = current

    def sorted_rows(self) -> list[BoardRow]:
        if self.sort_key == "arena":
            return list(reversed(self.rows)) if self.sort_reverse else list(self.rows)

        def key(row: BoardRow):
            value = getattr(row, self.sort_key)
            return (value is None, value if value is not None else 0, row.id)

        rows = sorted(self.rows, key=key, reverse=self.sort_reverse)
        if self.sort_reverse:  # keep empty values last either way
            rows = [r for r in rows if getattr(r, self.sort_key) is not None] + [
                r for r in rows if getattr(r, self.sort_key) is None
            ]
        return rows

    def _render_rows(self) -> None:
        table = self.query_one("#board", DataTable)
        current = self.cursor_match()
        table.clear()
        widths = [len(label) for _, label in COLUMNS]
        for row in self.sorted_rows():
            cells = []
            for key, _ in COLUMNS:
                if key == "mark":
                    cells.append("*" if row.id == self.marked else " ")
                elif key == "status":
                    cells.append(status_text(row.status))
                else:
                    cells.append(fmt(key, getattr(row, key)))
            table.add_row(*cells, key=str(row.id))
            widths = [max(w, len(c)) for w, c in zip(widths, cells)]
        # The table measures new rows only when its message queue runs dry; on a machine whose
        # cores are all busy that can take many frames, and the first frames would cut cells
        # ("runnin"). The cells are plain text: set the widths they need now.
        for column, width in zip(table.columns.values(), widths):
            column.content_width = max(column.content_width, width)
        if current is not None and str(current) in table.rows:
            table.move_cursor(row=table.get_row_index(str(current)), animate=False)
        self._update_status()

    def _update_status(self) -> None:
        active = sum(1 for r in self.rows if r.status in ("queued", "running"))
        sort = self.sort_key.replace("_", " ") + (" (reversed)" if self.sort_reverse else "")
        mark = f" · marked #{self.marked}" if self.marked is not None else ""
        text = f"{len(self.rows)} matches · {active} active · sort: {sort}{mark}"
        if not self.rows:
            text = "no matches yet · press n to start one"
        self.query_one("#board-status", Static).update(text)

    def cursor_match(self) -> int | None:
        table = self.query_one("#board", DataTable)
        if table.row_count == 0:
            return None
        try:
            key = table.coordinate_to_cell_key((table.cursor_row, 0)).row_key
        except Exception:  # cursor outside the table while it is rebuilt
            return None
        return int(key.value) if key.value is not None else None

    # -- events ---------------------------------------------------------------------------------
    @on(Select.Changed)
    def _filter_changed(self, event: Select.Changed) -> None:
        name = (event.select.id or "").removeprefix("filter-")
        value = None if event.value is Select.NULL else str(event.value)
        self.filters = BoardFilter(**{**self.filters.__dict__, name: value})
        self.refresh_data()

    @on(DataTable.RowSelected, "#board")
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        self.app.open_match(int(event.row_key.value))

    @on(DataTable.HeaderSelected, "#board")
    def _header_selected(self, event: DataTable.HeaderSelected) -> None:
        key = event.column_key.value
        if key in ("mark", "rank"):
            key = "arena"
        self.sort_key, self.sort_reverse = key, (not self.sort_reverse if key == self.sort_key else False)
        self._render_rows()

    # -- actions --------------------------------------------------------------------------------
    def action_new_match(self) -> None:
        self.app.action_new_match()

    def action_open(self) -> None:
        match_id = self.cursor_match()
        if match_id is not None:
            self.app.open_match(match_id)

    def action_cycle_sort(self) -> None:
        position = SORTABLE.index(self.sort_key) if self.sort_key in SORTABLE else -1
        self.sort_key, self.sort_reverse = SORTABLE[(position + 1) % len(SORTABLE)], False
        self._render_rows()

    def action_reverse(self) -> None:
        self.sort_reverse = not self.sort_reverse
        self._render_rows()

    def action_mark(self) -> None:
        match_id = self.cursor_match()
        if match_id is not None:
            self.marked = None if self.marked == match_id else match_id
            self._render_rows()

    def action_compare(self) -> None:
        match_id = self.cursor_match()
        if match_id is None:
            return
        if self.marked is not None and self.marked != match_id:
            self.app.compare(self.marked, match_id)
        else:
            self.app.pick_and_compare(match_id)

    def action_defences(self) -> None:
        self.app.show_defences(self.filters.dataset)

    def action_focus_filters(self) -> None:
        self.query_one("#filter-dataset", Select).focus()

    def action_focus_table(self) -> None:
        self.query_one("#board", DataTable).focus()
