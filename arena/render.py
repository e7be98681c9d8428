"""Terminal output: result tables (rich), machine formats (JSON/CSV) and plotext charts."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime

from rich.console import Console
from rich.table import Table

PERCENT_COLUMNS = {
    "victim_accuracy",
    "defender_accuracy",
    "clone_accuracy",
    "best_clone_accuracy",
    "fidelity_served",
    "fidelity_victim",
    "worst_clone_accuracy",
    "worst_clone_ci_low",
    "worst_clone_ci_high",
    "worst_fidelity",
    "served_accuracy",
    "utility_cost",
    "utility_cost_ci_high",
    "defender_accuracy_std",
    "clone_accuracy_std",
}
HEADERS = {
    "rank": "#",
    "id": "id",
    "defender": "defender",
    "attacker": "attacker",
    "label_mode": "label",
    "dataset": "data",
    "pool": "pool",
    "query_budget": "budget",
    "seed": "seed",
    "status": "status",
    "victim_accuracy": "victim",
    "defender_accuracy": "defender",
    "clone_accuracy": "clone",
    "best_clone_accuracy": "best clone",
    "fidelity_served": "fid/served",
    "fidelity_victim": "fid/victim",
    "queries_used": "queries",
    "serving_seconds_per_query": "us/query",
    "wall_seconds": "time s",
    "worst_attack": "worst attack",
    "worst_clone_accuracy": "worst clone",
    "worst_clone_ci_low": "ci low",
    "worst_clone_ci_high": "ci high",
    "worst_fidelity": "worst fid",
    "served_accuracy": "served",
    "utility_cost": "utility cost",
    "utility_cost_ci_high": "cost ci high",
    "defender_accuracy_std": "± defender",
    "clone_accuracy_std": "± clone",
    "knob_value": "knob",
    "defender_params": "defender params",
}


def fmt(name: str, value) -> str:
    if value is None:
        return "-"
    if name in PERCENT_COLUMNS:
        return f"{100 * value:.1f}%"
    if name == "serving_seconds_per_query":
        return f"{1e6 * value:.1f}"
    if name == "wall_seconds":
        return f"{value:.1f}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def table(rows: list[dict], columns: list[str], title: str | None = None) -> Table:
    out = Table(title=title, header_style="bold")
    for name in columns:
        numeric = any(isinstance(row.get(name), (int, float)) for row in rows)
        out.add_column(HEADERS.get(name, name), justify="right" if numeric else "left")
    for row in rows:
        out.add_row(*(fmt(name, row.get(name)) for name in columns))
    return out


def _plain(value):
    return value.isoformat() if isinstance(value, datetime) else value


def to_json(rows: list[dict]) -> str:
    return json.dumps([{k: _plain(v) for k, v in row.items()} for row in rows], indent=2)


def to_csv(rows: list[dict], columns: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _plain(row.get(k)) for k in columns})
    return buffer.getvalue()


def stdout_console() -> Console:
    """A console for stdout; piped output gets a wide fixed width instead of 80 columns."""
    console = Console()
    return console if console.is_terminal else Console(width=200)


def emit(rows: list[dict], columns: list[str], output_format: str, title: str | None = None) -> None:
    """Rows on stdout in the chosen format."""
    if output_format == "json":
        print(to_json(rows))
    elif output_format == "csv":
        print(to_csv(rows, columns), end="")
    else:
        stdout_console().print(table(rows, columns, title))


def curve_chart(
    series: list[tuple[str, list[int], list[float]]],
    width: int = 100,
    height: int = 22,
    reference: float | None = None,
    title: str = "",
    color: bool = False,
) -> str:
    """A plotext line chart (x: queries, log scale; y: percent) returned as text."""
    import plotext as plt

    plt.clear_figure()
    plt.plotsize(width, height)
    plt.theme("clear" if not color else "pro")
    for label, xs, ys in series:
        if xs:
            plt.plot(xs, [100 * y for y in ys], label=label, marker="braille")
    if reference is not None and any(xs for _, xs, _ in series):
        all_x = [x for _, xs, _ in series for x in xs]
        plt.plot([min(all_x), max(all_x)], [100 * reference] * 2, label="defender clean acc", marker="braille")
    if any(xs for _, xs, _ in series) and max(x for _, xs, _ in series for x in xs) > 10 * max(
        1, min(x for _, xs, _ in series for x in xs)
    ):
        plt.xscale("log")
    plt.ylim(0, 100)
    plt.xlabel("queries")
    plt.ylabel("%")
    if title:
        plt.title(title)
    text = plt.build()
    return text if color else plt.uncolorize(text)


def tradeoff_chart(
    series: list[tuple[str, list[float], list[float]]],
    width: int = 100,
    height: int = 22,
    title: str = "",
    color: bool = False,
) -> str:
    """A plotext chart of trade-off curves (x: served clean accuracy, y: clone accuracy,
    both in percent), one line with markers per series; returned as text."""
    import plotext as plt

    plt.clear_figure()
    plt.plotsize(width, height)
    plt.theme("clear" if not color else "pro")
    for label, xs, ys in series:
        if xs:
            plt.plot([100 * x for x in xs], [100 * y for y in ys], label=label, marker="braille")
            plt.scatter([100 * x for x in xs], [100 * y for y in ys], marker="o")
    plt.ylim(0, 100)
    plt.xlabel("served clean accuracy %")
    plt.ylabel("clone accuracy %")
    if title:
        plt.title(title)
    text = plt.build()
    return text if color else plt.uncolorize(text)
