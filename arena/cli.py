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
from engines.records import CHECKPOINT_FIELDS


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
                    message = " ".join(str(exc).split())
                    _err(message)
                    if k.get("output_format") == OutputFormat.json:  # a front end reads it from stdout
                        typer.echo(json.dumps({"error": {"field": exc.field, "message": message}}))
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
ExecutorOption = typer.Option("local", "--executor", help="local (this machine) or ray (a Ray cluster)")
WorkersOption = typer.Option(1, "--workers", min=1, help="local executor: matches played in parallel processes")
RayAddressOption = typer.Option(None, "--ray-address", help="Ray cluster HOST:PORT (default: start one here)")
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
# A checkpoint's table: the CheckpointRow's fields after its index (serving time is in the summary).
CHECKPOINT_COLUMNS = ["index", *(name for name in CHECKPOINT_FIELDS if name != "serving_seconds")]
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
    executor: str = ExecutorOption,
    workers: int = WorkersOption,
    ray_address: str | None = RayAddressOption,
    retries: int = typer.Option(
        1, "--retries", help="re-queue a match this often if its worker is lost (no heartbeat)"
    ),
) -> None:
    """Play a match, or a grid of matches. With no options: the default lineup on mnist5k.

    Ctrl-C or SIGTERM stops the batch: the running match and the queued rest are marked
    cancelled and the exit status is 130 (SIGINT) or 143 (SIGTERM); a second Ctrl-C exits at once."""
    from arena.executors import check_executor
    from arena.lifecycle import graceful_stop

    check_executor(executor)
    if retries < 0:
        raise ArenaError(f"--retries must be 0 or more, got {retries}", field="retries")
    with graceful_stop():
        specs = _specs(defender, attacker, dataset, pool, label, budget, seed, device, config)
        env = _env(data_root, cache_dir, download)
        _run_batch(specs, db, env, output_format, events, enqueue, retries, (executor, workers, ray_address))


def _specs(defender, attacker, dataset, pool, label, budget, seed, device, config) -> list:
    """`arena run`'s options and --config file as resolved specs (nothing written)."""
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
    return build_specs(file_fields, axes, {"device": device})


def _run_batch(specs, db, env, output_format, events, enqueue, retries, execution=("local", 1, None)) -> None:
    """Validate, queue and (unless --enqueue) play a batch of specs (`execution`: executor,
    local worker processes, Ray address)."""
    executor, workers, ray_address = execution
    from arena import lifecycle, runner
    from storage import liveness, open_database

    liveness.heartbeat_timeout()  # bad settings are refused before anything is written
    runner.apply_thread_setting()
    runner.validate_batch(specs, env)  # everything checked before anything is written
    if lifecycle.stop_requested():
        raise typer.Exit(lifecycle.exit_status())
    if executor == "ray" and not enqueue:
        from arena.executors import connect

        connect(ray_address)
    engine = open_database(db)
    _reap(engine)
    batch_id, ids = runner.enqueue(engine, specs, retries)
    if enqueue:
        if output_format == OutputFormat.json:
            typer.echo(json.dumps({"batch_id": batch_id, "match_ids": ids}))
        typer.echo(
            f"queued {len(ids)} match(es) {ids[0]}..{ids[-1]} (batch {batch_id}); run `arena worker` to play them",
            err=True,
        )
        return
    statuses = _dispatch(engine, db, ids, specs, env, output_format, events, executor, workers, ray_address)
    _print_results(engine, ids, output_format)
    if any(s != "done" for s in statuses):
        for match_id, status in zip(ids, statuses):
            if status == "failed":
                from storage import queries

                _err(f"match {match_id} failed: {queries.get_match(engine, match_id).error}")
        raise typer.Exit(1)


def _dispatch(engine, db, ids, specs, env, output_format, events, executor, workers, ray_address) -> list[str]:
    """Play queued matches with the chosen executor; returns their final statuses."""
    from arena import lifecycle
    from storage.engine import resolve_db_url

    if executor == "ray":
        from arena.executors import play_on_ray

        statuses = play_on_ray(resolve_db_url(db), ids, env, ray_address, on_done=_report_done)
    elif workers > 1:
        from arena.executors import play_in_pool

        statuses = play_in_pool(resolve_db_url(db), ids, env, workers, on_done=_report_done)
    else:
        return _play(engine, ids, specs, env, output_format, events)
    if lifecycle.stop_requested():
        _stop_batch(engine, ids)
    return statuses


def _play(engine, ids, specs, env, output_format, events) -> list[str]:
    from rich.console import Console

    from arena import lifecycle, runner
    from arena.progress import RichProgress

    console = Console(stderr=True)
    show_progress = output_format == OutputFormat.table and sys.stdout.isatty() and console.is_terminal
    statuses = []
    for number, (match_id, spec) in enumerate(zip(ids, specs), 1):
        if lifecycle.stop_requested():
            _stop_batch(engine, ids[number - 1 :])
        title = f"[{number}/{len(ids)}] #{match_id} {spec.defender} vs {spec.attacker} ({spec.label_mode})"
        extra = [runner.JsonLinesObserver(events, match_id)] if events else []
        try:
            if show_progress:
                with RichProgress(title, console) as bar:
                    status = runner.run_match(engine, match_id, env, extra=[bar, *extra])
            else:
                status = runner.run_match(engine, match_id, env, extra=extra)
        except KeyboardInterrupt:  # only outside graceful_stop (a caller's own SIGINT handling)
            _stop_batch(engine, ids[number:], 130)
        statuses.append(status)
    if lifecycle.stop_requested():
        _stop_batch(engine, ids)
    return statuses


def _stop_batch(engine, pending_ids, status: int | None = None) -> None:
    """Cancel the batch's matches that are still queued and exit 130/143."""
    from arena import lifecycle
    from storage import queries

    for pending in pending_ids:
        queries.request_cancel(engine, pending)
    _err("interrupted: the running match is marked cancelled, the rest of the batch too")
    raise typer.Exit(status or lifecycle.exit_status())


def _reap(engine) -> None:
    """Re-queue or fail matches whose worker went silent (storage.liveness), with a note."""
    from storage import liveness

    for match_id, status in liveness.reap_lost_matches(engine):
        typer.echo(f"warning: match {match_id}: its worker was lost (no heartbeat); now {status}", err=True)


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
    """Play queued matches from the database (start several for parallel work).

    Ctrl-C or SIGTERM cancels the match in play and exits 130 or 143; other queued matches
    stay queued for other workers."""
    from arena import lifecycle, runner
    from storage import liveness, open_database

    with lifecycle.graceful_stop():
        liveness.heartbeat_timeout()
        runner.apply_thread_setting()
        engine = open_database(db)
        env = _env(data_root, cache_dir)
        _reap(engine)
        if match_id is not None:
            status = runner.run_match(engine, match_id, env)
            if lifecycle.stop_requested():
                raise typer.Exit(lifecycle.exit_status())
            raise typer.Exit(0 if status in ("done", "cancelled") else 1)
        while not lifecycle.stop_requested():
            _reap(engine)
            claimed = runner.claim_next(engine)
            if claimed is None:
                break
            status = runner.run_match(engine, claimed, env, claimed=True)
            typer.echo(f"match {claimed}: {status}", err=True)
            if once:
                break
        if lifecycle.stop_requested():
            _err("interrupted: the running match is marked cancelled; queued matches stay queued")
            raise typer.Exit(lifecycle.exit_status())


@app.command()
def leaderboard(
    dataset: str | None = typer.Option(None, "--dataset", help="only this data set"),
    attacker: str | None = typer.Option(None, "--attacker", "-a", help="only this attacker"),
    defender: str | None = typer.Option(None, "--defender", "-d", help="only this defender"),
    label: str | None = typer.Option(None, "--label", "-l", help="only this label mode"),
    status: str = typer.Option("done", "--status", help="match status to list, or 'all'"),
    by: str = typer.Option("match", "--by", help="match (each match in its arena) or defence (worst case, CIs)"),
    output_format: OutputFormat = typer.Option(OutputFormat.table, "--format", "-f"),
    db: str | None = DbOption,
) -> None:
    """Matches ranked per arena (data set, attacker, label mode, budget): rank 1 = lowest clone accuracy.

    With --by defence: each defence's worst case over the attacks it faced, mean and 95% CI
    over seeds, ties where intervals overlap, and sanity flags (formula in the README)."""
    from arena.render import emit
    from storage import open_database
    from storage.queries import LEADERBOARD_COLUMNS, LEADERBOARD_TABLE_COLUMNS, LeaderboardFilter
    from storage.queries import leaderboard as query

    if label is not None and label not in ("soft", "hard", "topk"):
        raise ArenaError(f"unknown label mode {label!r}; use soft, hard or topk", field="label_mode")
    if by not in ("match", "defence", "defense"):
        raise ArenaError(f"unknown --by {by!r}; use match or defence", field="by")
    engine = open_database(db, write=False, create=False)
    _reap(engine)
    if by != "match":
        _defence_leaderboard(engine, dataset, output_format)
        return
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
    emit([r.as_dict() for r in rows], list(columns), output_format.value, title="leaderboard (rank 1 = best defence)")


def _defence_leaderboard(engine, dataset: str | None, output_format: OutputFormat) -> None:
    from arena.render import emit
    from storage.ranking import RANKING_COLUMNS, RANKING_TABLE_COLUMNS, defence_ranking

    rows = [row.as_dict() for row in defence_ranking(engine, dataset)]
    columns = RANKING_TABLE_COLUMNS if output_format == OutputFormat.table else RANKING_COLUMNS
    emit(rows, list(columns), output_format.value, title="defence ranking (worst case over attacks; rank 1 = best)")


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
    _reap(engine)
    match = queries.get_match(engine, match_id)
    if match is None:
        raise ArenaError(f"no match {match_id} in this database; see `arena leaderboard --status all`")
    points = queries.checkpoints(engine, match_id)
    if output_format != OutputFormat.table:
        record = match.as_dict()
        record["checkpoints"] = [p.as_dict() for p in points]
        if output_format == OutputFormat.json:
            print(json.dumps(record, indent=2, default=str))
        else:
            emit([p.as_dict() for p in points], CHECKPOINT_COLUMNS, "csv")
        return
    from arena.render import stdout_console

    console = stdout_console()
    summary = {name: getattr(match, name) for name in RESULT_COLUMNS}
    console.print(table([summary], RESULT_TABLE_COLUMNS, title=f"match {match_id}"))
    if match.error:
        console.print(f"[red]error:[/] {match.error}")
    console.print(table([p.as_dict() for p in points], CHECKPOINT_COLUMNS, title="checkpoints"))
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
    _show_tradeoff(console, engine, match)
    console.print(f"[bold]config[/] {json.dumps(match.config, sort_keys=True)}", highlight=False)
    console.print(f"[bold]provenance[/] {json.dumps(match.provenance)}", highlight=False)


def _show_tradeoff(console, engine, match) -> None:
    """Under `arena show`'s chart: the defender's other settings played in this match's arena
    (data set, attacker, label mode, budget), as `arena tradeoff` points; nothing when this
    setting is the only one. `*` marks this match's setting."""
    from arena.render import table
    from storage.tradeoff import setting_names
    from storage.tradeoff import tradeoff as query

    rows = query(
        engine,
        match.defender,
        match.attacker,
        label_mode=match.label_mode,
        dataset=match.dataset,
        query_budget=match.query_budget,
    )
    if len(rows) < 2:
        return
    own = json.dumps(match.config.get("defender_params", {}), sort_keys=True)
    for row, name in zip(rows, setting_names(rows)):
        row["setting"] = ("* " if row["defender_params"] == own else "  ") + name
    columns = ["setting", "seeds", "defender_accuracy", "defender_accuracy_std", "clone_accuracy", "clone_accuracy_std"]
    title = (
        f"trade-off: {match.defender} settings vs {match.attacker} ({match.label_mode}, budget {match.query_budget})"
    )
    console.print(table(rows, columns, title=title))


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


def _report_done(match_id: int, status: str) -> None:
    typer.echo(f"match {match_id}: {status}", err=True)


# More commands register themselves on `app` (imported last: they use the options above).
from arena import cli_tournament  # noqa: E402, F401


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
