"""`arena`: play matches, query the leaderboard, inspect matches, open the TUI.

Machine-readable output goes to stdout; progress and diagnostics go to stderr. Heavy
imports (torch, textual) happen inside the commands that need them.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from enum import StrEnum

import typer

from engines.errors import ArenaError


class _ArenaTyper(typer.Typer):
    """Every command turns an ArenaError into one line on stderr and exit status 2."""

    def command(self, *args, **kwargs):
        register = super().command(*args, **kwargs)

        def decorator(func):
            @functools.wraps(func)
            def wrapper(*a, **k):
                try:
                    return func(*a, **k)
                except ArenaError as exc:
                    _err(str(exc))
                    raise typer.Exit(2) from None

            return register(wrapper)

        return decorator


app = _ArenaTyper(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="MISLEADER Arena: model-extraction matches between defenders and attackers.",
)


class OutputFormat(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


DbOption = typer.Option(None, "--db", help="SQLite path or SQLAlchemy URL (default $ARENA_DB or ./arena.db)")
DataRootOption = typer.Option(
    None, "--data-root", help="folder with torchvision data sets (default $ARENA_DATA or ./data)"
)
CacheOption = typer.Option(None, "--cache-dir", help="artifact cache (default $ARENA_CACHE or ./.arena/cache)")


def _env(data_root: str | None, cache_dir: str | None, download: bool = False):
    from engines.match import MatchEnvironment

    return MatchEnvironment(
        data_root=data_root or os.environ.get("ARENA_DATA", "data"),
        cache_root=cache_dir or os.environ.get("ARENA_CACHE", ".arena/cache"),
        download=download,
    )


def _err(message: str) -> None:
    typer.echo(f"error: {message}", err=True)


RESULT_COLUMNS = [
    "id",
    "defender",
    "attacker",
    "label_mode",
    "dataset",
    "query_budget",
    "seed",
    "status",
    "victim_accuracy",
    "defender_accuracy",
    "clone_accuracy",
    "fidelity_served",
    "fidelity_victim",
    "queries_used",
    "serving_seconds_per_query",
    "wall_seconds",
]
RESULT_TABLE_COLUMNS = [
    "id",
    "defender",
    "attacker",
    "label_mode",
    "query_budget",
    "status",
    "victim_accuracy",
    "defender_accuracy",
    "clone_accuracy",
    "fidelity_served",
    "fidelity_victim",
    "wall_seconds",
]


@app.command()
def run(
    defender: str | None = typer.Option(None, "--defender", "-d", help="defender name(s), comma-separated for a grid"),
    attacker: str | None = typer.Option(None, "--attacker", "-a", help="attacker name(s), comma-separated"),
    dataset: str | None = typer.Option(None, "--dataset", help="data set name(s) (default mnist5k)"),
    pool: str | None = typer.Option(None, "--pool", help="attacker query pool: in-distribution or a data set name"),
    label: str | None = typer.Option(None, "--label", "-l", help="answer mode(s): soft, hard, topk"),
    budget: str | None = typer.Option(None, "--budget", "-b", help="query budget(s) (default: the attacker's)"),
    seed: str | None = typer.Option(None, "--seed", "-s", help="seed(s) (default 0)"),
    device: str | None = typer.Option(None, "--device", help="auto, cpu, cuda or cuda:N (default auto)"),
    config: str | None = typer.Option(
        None, "--config", "-c", help="match spec TOML file (fields, [grid], [[matches]])"
    ),
    db: str | None = DbOption,
    data_root: str | None = DataRootOption,
    cache_dir: str | None = CacheOption,
    download: bool = typer.Option(False, "--download", help="download torchvision data sets (needs a network)"),
    output_format: OutputFormat = typer.Option(OutputFormat.table, "--format", "-f", help="result format on stdout"),
    events: str | None = typer.Option(None, "--events", help="append JSON-lines match events to this file"),
    enqueue: bool = typer.Option(False, "--enqueue", help="only queue the matches, for `arena worker` processes"),
) -> None:
    """Play a match, or a grid of matches. With no options: the default lineup on mnist5k."""
    from arena.config import build_specs, load_toml, parse_axis

    file_fields = load_toml(config) if config else None
    axes = {
        name: parse_axis(name, raw)
        for name, raw in (
            ("defender", defender),
            ("attacker", attacker),
            ("dataset", dataset),
            ("pool", pool),
            ("label_mode", label),
            ("query_budget", budget),
            ("seed", seed),
        )
    }
    specs = build_specs(file_fields, axes, {"device": device})
    env = _env(data_root, cache_dir, download)

    from arena import runner
    from storage import open_database

    runner.apply_thread_setting()
    runner.validate_batch(specs, env)  # everything checked before anything is written
    engine = open_database(db)
    batch_id, ids = runner.enqueue(engine, specs)
    if enqueue:
        typer.echo(
            f"queued {len(ids)} match(es) {ids[0]}..{ids[-1]} (batch {batch_id}); run `arena worker` to play them",
            err=True,
        )
        return
    statuses = _play(engine, ids, specs, env, output_format, events)
    _print_results(engine, ids, output_format)
    if any(s != "done" for s in statuses):
        for match_id, status in zip(ids, statuses):
            if status == "failed":
                from storage import queries

                _err(f"match {match_id} failed: {queries.get_match(engine, match_id).error}")
        raise typer.Exit(1)


def _play(engine, ids, specs, env, output_format, events) -> list[str]:
    from rich.console import Console

    from arena import runner
    from arena.progress import RichProgress

    console = Console(stderr=True)
    show_progress = output_format == OutputFormat.table and sys.stdout.isatty() and console.is_terminal
    statuses = []
    for number, (match_id, spec) in enumerate(zip(ids, specs), 1):
        title = f"[{number}/{len(ids)}] #{match_id} {spec.defender} vs {spec.attacker} ({spec.label_mode})"
        extra = [runner.JsonLinesObserver(events, match_id)] if events else []
        try:
            if show_progress:
                with RichProgress(title, console) as bar:
                    status = runner.run_match(engine, match_id, env, extra=[bar, *extra])
            else:
                status = runner.run_match(engine, match_id, env, extra=extra)
        except KeyboardInterrupt:
            from storage import queries

            for pending in ids[number:]:
                queries.request_cancel(engine, pending)
            _err("interrupted: the running match is marked cancelled, the rest of the batch too")
            raise typer.Exit(130) from None
        statuses.append(status)
    return statuses


def _print_results(engine, ids, output_format) -> None:
    from storage import queries

    rows = []
    for match_id in ids:
        match = queries.get_match(engine, match_id)
        rows.append({name: getattr(match, name) for name in RESULT_COLUMNS})
    from arena.render import emit

    columns = RESULT_TABLE_COLUMNS if output_format == OutputFormat.table else RESULT_COLUMNS
    emit(rows, columns, output_format.value, title="match results")


@app.command()
def worker(
    db: str | None = DbOption,
    data_root: str | None = DataRootOption,
    cache_dir: str | None = CacheOption,
    match_id: int | None = typer.Option(None, "--match", help="play this queued match only"),
    once: bool = typer.Option(False, "--once", help="play one queued match and stop"),
) -> None:
    """Play queued matches from the database (start several for parallel work)."""
    from arena import runner
    from storage import open_database

    runner.apply_thread_setting()
    engine = open_database(db)
    env = _env(data_root, cache_dir)
    if match_id is not None:
        status = runner.run_match(engine, match_id, env)
        raise typer.Exit(0 if status in ("done", "cancelled") else 1)
    while True:
        claimed = runner.claim_next(engine)
        if claimed is None:
            break
        status = runner.run_match(engine, claimed, env, claimed=True)
        typer.echo(f"match {claimed}: {status}", err=True)
        if once:
            break


@app.command()
def leaderboard(
    dataset: str | None = typer.Option(None, "--dataset", help="only this data set"),
    attacker: str | None = typer.Option(None, "--attacker", "-a", help="only this attacker"),
    defender: str | None = typer.Option(None, "--defender", "-d", help="only this defender"),
    label: str | None = typer.Option(None, "--label", "-l", help="only this label mode"),
    status: str = typer.Option("done", "--status", help="match status to list, or 'all'"),
    output_format: OutputFormat = typer.Option(OutputFormat.table, "--format", "-f"),
    db: str | None = DbOption,
) -> None:
    """Matches ranked per arena (data set, attacker, label mode, budget): rank 1 = lowest clone accuracy."""
    from arena.render import emit
    from storage import open_database
    from storage.queries import LEADERBOARD_COLUMNS, LEADERBOARD_TABLE_COLUMNS, LeaderboardFilter
    from storage.queries import leaderboard as query

    if label is not None and label not in ("soft", "hard", "topk"):
        raise ArenaError(f"unknown label mode {label!r}; use soft, hard or topk")
    engine = open_database(db, write=False, create=False)
    rows = query(
        engine,
        LeaderboardFilter(
            dataset=dataset,
            attacker=attacker,
            defender=defender,
            label_mode=label,
            status=None if status == "all" else status,
        ),
    )
    columns = LEADERBOARD_TABLE_COLUMNS if output_format == OutputFormat.table else LEADERBOARD_COLUMNS
    emit(rows, list(columns), output_format.value, title="leaderboard (rank 1 = best defence)")


@app.command()
def show(
    match_id: int = typer.Argument(..., help="match id (see `arena leaderboard`)"),
    output_format: OutputFormat = typer.Option(OutputFormat.table, "--format", "-f"),
    db: str | None = DbOption,
) -> None:
    """A match's summary and a chart of clone accuracy and fidelity against queries."""
    from arena.render import curve_chart, emit, table
    from storage import open_database, queries

    engine = open_database(db, write=False, create=False)
    match = queries.get_match(engine, match_id)
    if match is None:
        raise ArenaError(f"no match {match_id} in this database; see `arena leaderboard --status all`")
    points = queries.checkpoints(engine, match_id)
    if output_format != OutputFormat.table:
        record = match.model_dump()
        for key in ("config_json", "provenance_json", "details_json"):
            record[key.removesuffix("_json")] = json.loads(record.pop(key))
        record["checkpoints"] = [p.model_dump(exclude={"id", "match_id"}) for p in points]
        if output_format == OutputFormat.json:
            print(json.dumps(record, indent=2, default=str))
        else:
            emit(
                [p.model_dump() for p in points],
                [
                    "index",
                    "queries_used",
                    "clone_accuracy",
                    "best_clone_accuracy",
                    "fidelity_served",
                    "fidelity_victim",
                    "wall_seconds",
                ],
                "csv",
            )
        return
    from arena.render import stdout_console

    console = stdout_console()
    summary = {name: getattr(match, name) for name in RESULT_COLUMNS}
    console.print(table([summary], RESULT_TABLE_COLUMNS, title=f"match {match_id}"))
    if match.error:
        console.print(f"[red]error:[/] {match.error}")
    console.print(
        table(
            [p.model_dump() for p in points],
            [
                "index",
                "queries_used",
                "clone_accuracy",
                "best_clone_accuracy",
                "fidelity_served",
                "fidelity_victim",
                "wall_seconds",
            ],
            title="checkpoints",
        )
    )
    if points:
        xs = [p.queries_used for p in points]
        chart = curve_chart(
            [
                ("clone accuracy", xs, [p.clone_accuracy for p in points]),
                ("fidelity (served)", xs, [p.fidelity_served for p in points]),
            ],
            width=min(console.width, 110),
            reference=match.defender_accuracy,
            title=f"#{match_id} {match.defender} vs {match.attacker} ({match.label_mode}) on {match.dataset}",
            color=console.is_terminal and not os.environ.get("NO_COLOR"),
        )
        sys.stdout.write(chart + "\n")
        sys.stdout.flush()
    config = json.loads(match.config_json)
    console.print(f"[bold]config[/] {json.dumps(config, sort_keys=True)}", highlight=False)
    console.print(f"[bold]provenance[/] {match.provenance_json}", highlight=False)


@app.command()
def tradeoff(
    defender: str = typer.Option(..., "--defender", "-d", help="the defence whose curve to draw"),
    attacker: str = typer.Option(..., "--attacker", "-a", help="the attacker it faced"),
    label: str | None = typer.Option(None, "--label", "-l", help="only this label mode"),
    dataset: str | None = typer.Option(None, "--dataset", help="only this data set"),
    budget: int | None = typer.Option(None, "--budget", help="only this query budget"),
    output_format: OutputFormat = typer.Option(OutputFormat.table, "--format", "-f"),
    db: str | None = DbOption,
) -> None:
    """A defence's trade-off curve: served clean accuracy against final clone accuracy, one
    point per knob setting (mean over seeds of finished matches)."""
    from arena.render import emit, stdout_console, table, tradeoff_chart
    from engines.attackers import ATTACKERS
    from engines.defenders import DEFENDERS
    from storage import open_database
    from storage.tradeoff import TRADEOFF_COLUMNS, TRADEOFF_TABLE_COLUMNS
    from storage.tradeoff import tradeoff as query

    if label is not None and label not in ("soft", "hard", "topk"):
        raise ArenaError(f"unknown label mode {label!r}; use soft, hard or topk")
    knob = DEFENDERS.get(defender).knob
    ATTACKERS.get(attacker)  # an unknown name is an error, not an empty curve
    engine = open_database(db, write=False, create=False)
    rows = query(engine, defender, attacker, knob=knob, label_mode=label, dataset=dataset, query_budget=budget)
    if output_format != OutputFormat.table:
        emit(rows, list(TRADEOFF_COLUMNS), output_format.value)
        return
    if not rows:
        _err(
            f"no finished matches of {defender} vs {attacker}; "
            f"play some with `arena run` at several {knob or 'settings'} values"
        )
        return
    console = stdout_console()
    title = f"trade-off: {defender} (knob {knob or 'none'}) vs {attacker}"
    console.print(table(rows, list(TRADEOFF_TABLE_COLUMNS), title=title))
    series: dict[str, tuple[list[float], list[float]]] = {}
    for row in rows:
        if row["defender_accuracy"] is None or row["clone_accuracy"] is None:
            continue
        xs, ys = series.setdefault(f"{row['dataset']} {row['label_mode']} {row['query_budget']}", ([], []))
        xs.append(row["defender_accuracy"])
        ys.append(row["clone_accuracy"])
    chart = tradeoff_chart(
        [(name, xs, ys) for name, (xs, ys) in series.items()],
        width=min(console.width, 110),
        title=title,
        color=console.is_terminal and not os.environ.get("NO_COLOR"),
    )
    sys.stdout.write(chart + "\n")
    sys.stdout.flush()


@app.command("list")
def list_entries(output_format: OutputFormat = typer.Option(OutputFormat.table, "--format", "-f")) -> None:
    """Defenders, attackers, data sets and models, with one-line descriptions."""
    from arena.render import emit
    from engines.attackers import ATTACKERS
    from engines.data import DATASETS
    from engines.defenders import DEFENDERS
    from engines.models import MODELS

    rows = []
    for name, cls in DEFENDERS.items():
        rows.append({"kind": "defender", "name": name, "description": cls.description})
    for name, cls in ATTACKERS.items():
        modes = "/".join(sorted(cls.label_modes))
        rows.append(
            {
                "kind": "attacker",
                "name": name,
                "description": f"{cls.description} [labels: {modes}; default budget {cls.default_budget}]",
            }
        )
    for name, cls in DATASETS.items():
        rows.append({"kind": "dataset", "name": name, "description": cls.description})
    for name, info in MODELS.items():
        rows.append({"kind": "model", "name": name, "description": info.description})
    emit(rows, ["kind", "name", "description"], output_format.value)


@app.command()
def cancel(match_id: int = typer.Argument(...), db: str | None = DbOption) -> None:
    """Ask a queued or running match to stop (its checkpoints are kept)."""
    from storage import open_database, queries

    engine = open_database(db, create=False)
    if not queries.request_cancel(engine, match_id):
        raise ArenaError(f"match {match_id} is not queued or running")
    typer.echo(f"match {match_id}: cancellation requested", err=True)


@app.command()
def tui(db: str | None = DbOption, data_root: str | None = DataRootOption, cache_dir: str | None = CacheOption) -> None:
    """Interactive arena: configure matches, watch them live, browse the leaderboard."""
    from arena.tui.app import run_tui

    run_tui(db=db, data_root=data_root, cache_dir=cache_dir)


def main() -> None:
    try:
        app()
    except ArenaError as exc:
        _err(str(exc))
        sys.exit(2)
    except Exception as exc:  # a bug, not bad input: one line, the trace on request
        if os.environ.get("ARENA_DEBUG"):
            raise
        _err(
            f"internal error ({exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
            "rerun with ARENA_DEBUG=1 for the traceback and report it"
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
