"""Widgets shared by the screens: the curve plot and small formatting helpers."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

from rich.text import Text
from textual_plotext import PlotextPlot

from arena.render import fmt
from storage.records import StoredCheckpoint

# Line colours per match (A, B) and their NO_COLOR markers (shapes instead of colours).
COLOURS = (("cyan", "magenta"), ("yellow", "red"))
REFERENCE_COLOURS = ("green", "blue")
PLAIN_MARKERS = (("*", "+"), ("o", "x"))
PLAIN_REFERENCE = ("-", "=")


class GuardedPlot(PlotextPlot):
    """A plotext plot that draws nothing before its data arrives and never lets a plotting
    corner case take the screen down. Subclasses say `has_data()` and `_draw()` the figure."""

    redraws = 0

    def has_data(self) -> bool:
        raise NotImplementedError

    def _draw(self) -> None:
        raise NotImplementedError

    def render(self):
        if not self.has_data():
            return Text("")  # nothing to plot yet: the screen's first poll brings the data
        self.redraws += 1
        try:
            self._draw()
            return super().render()
        except Exception as exc:  # a plotting corner case must not take the screen down
            return Text(f"plot unavailable ({exc.__class__.__name__}: {exc})", style="dim")


@dataclass(frozen=True)
class Curves:
    """One match's curves as the plot needs them."""

    label: str  # "" for a single match, "A"/"B" when comparing
    points: tuple[StoredCheckpoint, ...]
    reference: float | None  # the defender's clean accuracy
    budget: int


class CurvePlot(GuardedPlot):
    """Clone accuracy and fidelity (%) against queries, with the defender's clean accuracy as a
    reference line. Data changes mark the plot dirty; Textual coalesces refreshes per frame and
    the screens feed it at most a few times per second. `redraws` counts actual renders; with
    $ARENA_TUI_TRACE set, each render appends `time point_count` to that file (benchmarks)."""

    def __init__(self, *, id: str | None = None, classes: str | None = None):
        super().__init__(id=id, classes=classes)
        self.curves: list[Curves] = []
        self.redraws = 0
        self._trace = os.environ.get("ARENA_TUI_TRACE")

    @property
    def point_count(self) -> int:
        return sum(len(c.points) for c in self.curves)

    def show(self, curves: list[Curves]) -> None:
        if curves != self.curves:
            self.curves = list(curves)
            self.refresh()

    def has_data(self) -> bool:
        return bool(self.curves)

    def _draw(self) -> None:
        if self._trace:
            with open(self._trace, "a") as trace:
                trace.write(f"{time.time():.4f} {self.point_count}\n")
        self._draw_curves()

    def _draw_curves(self) -> None:
        plt = self.plt
        plt.clear_data()
        plain = self.app.no_color
        budget = max([c.budget for c in self.curves] or [1])
        xs_all = [p.queries_used for c in self.curves for p in c.points]
        low = max(1, min(xs_all)) if xs_all else max(1, budget // 50)
        for number, curve in enumerate(self.curves):
            prefix = f"{curve.label} " if curve.label else ""
            xs = [p.queries_used for p in curve.points]
            for which, (name, values) in enumerate(
                (
                    ("clone acc", [100 * p.clone_accuracy for p in curve.points]),
                    ("fidelity", [100 * p.fidelity_served for p in curve.points]),
                )
            ):
                if not xs:
                    continue
                if plain:
                    plt.plot(xs, values, label=prefix + name, marker=PLAIN_MARKERS[number % 2][which])
                else:
                    plt.plot(xs, values, label=prefix + name, marker="braille", color=COLOURS[number % 2][which])
            if curve.reference is not None:
                marker = PLAIN_REFERENCE[number % 2] if plain else "braille"
                colour = None if plain else REFERENCE_COLOURS[number % 2]
                kwargs = {"color": colour} if colour else {}
                plt.plot(
                    [low, budget], [100 * curve.reference] * 2, label=f"{prefix}defender clean", marker=marker, **kwargs
                )
        drawn = bool(xs_all) or any(c.reference is not None for c in self.curves)
        if drawn and budget > 10 * low:  # plotext takes log-scale limits as exponents
            plt.xscale("log")
            plt.xlim(math.log10(low), math.log10(budget))
        else:
            plt.xscale("linear")
            plt.xlim(0 if not drawn else low, budget)
        plt.ylim(0, 100)
        plt.xlabel("queries")
        plt.ylabel("%")


def pct(value: float | None) -> str:
    return fmt("clone_accuracy", value)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


STATUS_STYLES = {
    "queued": "yellow",
    "running": "bold cyan",
    "done": "green",
    "failed": "bold red",
    "cancelled": "magenta",
}


def status_text(status: str) -> Text:
    return Text(status, style=STATUS_STYLES.get(status, ""))


@dataclass(frozen=True)
class TradeoffPoint:
    """One defender setting on the trade-off plot (fractions, as stored)."""

    setting: str
    served: float
    clone: float
    ranked: bool  # the setting the defence ranking's row is about


class TradeoffPlot(GuardedPlot):
    """A defence's trade-off curve (storage/tradeoff.py): clone accuracy (%) against served
    clean accuracy (%), one point per defender setting, in the order the settings were
    listed; the ranked setting is drawn again with its own marker."""

    def __init__(self, *, id: str | None = None, classes: str | None = None):
        super().__init__(id=id, classes=classes)
        self.points: list[TradeoffPoint] = []
        self.redraws = 0

    def show(self, points: list[TradeoffPoint]) -> None:
        if points != self.points:
            self.points = list(points)
            self.refresh()

    def has_data(self) -> bool:
        return bool(self.points)

    def _draw(self) -> None:
        plt = self.plt
        plt.clear_data()
        plain = self.app.no_color
        xs = [100 * p.served for p in self.points]
        ys = [100 * p.clone for p in self.points]
        if plain:
            plt.plot(xs, ys, label="settings", marker=PLAIN_MARKERS[0][0])
        else:
            plt.plot(xs, ys, label="settings", marker="braille", color=COLOURS[0][0])
            plt.scatter(xs, ys, marker="o", color=COLOURS[0][0])
        ranked = [(x, y) for x, y, p in zip(xs, ys, self.points) if p.ranked]
        if ranked:
            kwargs = {} if plain else {"color": COLOURS[1][0]}
            plt.scatter([x for x, _ in ranked], [y for _, y in ranked], label="ranked setting", marker="@", **kwargs)
        plt.xscale("linear")
        plt.xlim(0, 100)
        plt.ylim(0, 100)
        plt.xlabel("served clean acc %")
        plt.ylabel("clone acc %")
