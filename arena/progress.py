"""Rich progress on stderr for a match's long phases (victim training, defender, attack)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from engines.match import MatchObserver
from engines.records import CheckpointRow


class RichProgress(MatchObserver):
    def __init__(self, title: str, console: Console):
        self.title = title
        self.console = console
        self.bar = Progress(
            TextColumn("[bold]{task.fields[title]}[/] {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self.task = None

    def __enter__(self):
        self.bar.start()
        return self

    def __exit__(self, *exc):
        self.bar.stop()

    def phase(self, phase: str, detail: str = "") -> None:
        if self.task is not None:
            self.bar.remove_task(self.task)
        self.task = self.bar.add_task(phase, total=None, title=self.title)
        self.console.print(f"[dim]{self.title}[/] {phase}" + (f": {detail}" if detail else ""))

    def progress(self, done: int, total: int, message: str) -> None:
        if self.task is not None:
            self.bar.update(self.task, completed=done, total=total)

    def log(self, message: str) -> None:
        self.console.print(f"[dim]{self.title}[/] {message}")

    def checkpoint(self, row: CheckpointRow) -> None:
        self.console.print(
            f"[dim]{self.title}[/] {row.queries_used:>8} queries  clone acc {100 * row.clone_accuracy:5.1f}%  "
            f"fidelity {100 * row.fidelity_served:5.1f}%"
        )
