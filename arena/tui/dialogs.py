"""Modal screens: the key help and the compare picker."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from arena.render import fmt
from storage.records import MatchRecord

HELP = (
    (
        "Leaderboard",
        (
            ("up/down, pgup/pgdn", "move through the matches"),
            ("enter", "open the match (live if running, else its details)"),
            ("n", "new match"),
            ("s / r", "cycle the sort column / reverse it (or click a header)"),
            ("f / t", "focus the filters (data set, attacker, label, status) / the table"),
            ("space, c", "mark a match, then c on another compares the two"),
            ("d", "defence ranking (worst cases, CIs, flags)"),
        ),
    ),
    (
        "New match",
        (
            ("tab / shift+tab", "next / previous field"),
            ("enter or ctrl+s", "check, queue and start the match"),
            ("escape", "back without starting"),
        ),
    ),
    (
        "Live match",
        (
            ("x", "cancel the match (it is marked cancelled; its checkpoints are kept)"),
            ("w", "start a worker for a queued match (e.g. one queued by `arena run --enqueue`)"),
            ("d", "details of the match"),
            ("escape", "back; the match keeps running in its own process"),
        ),
    ),
    (
        "Match details",
        (
            ("left/right", "switch tabs: curves, numbers, config, provenance, log"),
            ("c", "compare with another match (curves overlaid as A and B)"),
            ("l", "live view"),
        ),
    ),
    (
        "Defence ranking",
        (
            ("up/down", "select a defence (its interval and flags show below)"),
            ("f", "focus the data set filter"),
            ("t or enter", "the defence's trade-off curve in its worst-case arena"),
            ("escape", "back to the leaderboard"),
        ),
    ),
    (
        "Everywhere",
        (
            ("? or f1", "this help"),
            ("q / ctrl+q", "quit (running matches go on; reopen to watch them)"),
        ),
    ),
)


def help_table() -> Table:
    table = Table(show_header=False, box=None, padding=(0, 1), expand=True)
    table.add_column("key", style="bold", no_wrap=True)
    table.add_column("what", ratio=1)
    for section, rows in HELP:
        table.add_row(Text(section, style="bold underline"), "")
        for key, what in rows:
            table.add_row(key, what)
    return table


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark,f1", "close", "Close")]

    def compose(self) -> ComposeResult:
        with Vertical(id="help-box"):
            yield Static("Keyboard help · MISLEADER Arena", id="help-title")
            with VerticalScroll(id="help-scroll"):
                yield Static(help_table(), id="help-body")
            yield Static("escape closes", id="help-foot")

    def action_close(self) -> None:
        self.dismiss(None)


class PickMatchScreen(ModalScreen[int | None]):
    """Choose the second match of a comparison."""

    BINDINGS = [Binding("escape", "close", "Close")]

    def __init__(self, base: int, candidates: list[MatchRecord]) -> None:
        super().__init__()
        self.base = base
        self.candidates = candidates

    def compose(self) -> ComposeResult:
        with Vertical(id="pick-box"):
            yield Static(f"Compare #{self.base} with…", id="pick-title")
            options = [
                Option(
                    f"#{m.id:<4} {m.status:<9} {m.defender} vs {m.attacker} ({m.label_mode}) "
                    f"{m.dataset} b{m.query_budget} s{m.seed} clone {fmt('clone_accuracy', m.clone_accuracy)}",
                    id=str(m.id),
                )
                for m in self.candidates
            ]
            yield OptionList(*options, id="pick-list")
            if not options:
                yield Static("no other match in this database yet")

    @on(OptionList.OptionSelected)
    def _picked(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(int(event.option.id))

    def action_close(self) -> None:
        self.dismiss(None)
