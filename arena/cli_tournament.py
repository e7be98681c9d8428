"""`arena tournament`, `arena export` and `arena reproduce`: many matches at once, and what
they leave behind. Registered on the one `arena` app (arena/cli.py imports this module)."""

from __future__ import annotations

import json
import os
import sys

import typer

from arena.cli import (
    CacheOption,
    DataRootOption,
    DbOption,
    ExecutorOption,
    OutputFormat,
    RayAddressOption,
    WorkersOption,
    _dispatch,
    _env,
    _print_results,
    _reap,
    app,
)
from engines.errors import ArenaError


@app.command()
def tournament(
    spec_file: str = typer.Argument(..., help="tournament spec TOML (defenders x attackers x label modes x seeds)"),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="print the plan (matches, artifacts, time) and write nothing"
    ),
    enqueue: bool = typer.Option(False, "--enqueue", help="only queue the missing matches, for `arena worker`"),
    executor: str = ExecutorOption,
    workers: int = WorkersOption,
    ray_address: str | None = RayAddressOption,
    db: str | None = DbOption,
    data_root: str | None = DataRootOption,
    cache_dir: str | None = CacheOption,
    download: bool = typer.Option(False, "--download", help="download torchvision data sets (needs a network)"),
    output_format: OutputFormat = typer.Option(OutputFormat.table, "--format", "-f", help="result format on stdout"),
) -> None:
    """Play a tournament; rerunning it skips matches already played (resumable).

    Stops like `arena run` on Ctrl-C / SIGTERM (queued matches cancelled, exit 130 / 143);
    rerunning the spec then plays what is left."""
    from arena.executors import check_executor
    from arena.lifecycle import graceful_stop
    from arena.tournament import load_tournament

    check_executor(executor)
    spec = load_tournament(spec_file)
    env = _env(data_root, cache_dir, download)
    with graceful_stop():
        _play_tournament(spec, env, db, dry_run, enqueue, output_format, (executor, workers, ray_address))


def _play_tournament(spec, env, db, dry_run, enqueue, output_format, execution) -> None:
    from arena import runner
    from arena.tournament import enqueue_plan, plan_tournament
    from storage import open_database

    executor, workers, ray_address = execution
    runner.apply_thread_setting()
    if executor == "ray" and not dry_run and not enqueue:
        from arena.executors import connect

        connect(ray_address)  # an unreachable cluster is refused before anything is written
    engine = open_database(db, write=not dry_run, create=not dry_run) if not dry_run or _db_exists(db) else None
    if engine is not None and not dry_run:
        _reap(engine)
    plan = plan_tournament(engine, spec, env)
    if dry_run:
        _print_plan(spec.name, plan, output_format)
        return
    to_play = enqueue_plan(engine, plan)
    match_ids = [match_id for match_id, _ in to_play]
    typer.echo(
        f"tournament {spec.name!r}: {len(plan.specs)} matches, {len(plan.done)} already done, "
        f"{len(plan.running)} running elsewhere, {len(match_ids)} to play",
        err=True,
    )
    if enqueue or not match_ids:
        if enqueue and match_ids:
            typer.echo(f"queued {len(match_ids)} match(es); run `arena worker` to play them", err=True)
        _print_results(engine, _tournament_ids(plan, match_ids), output_format)
        return
    specs = [spec for _, spec in to_play]
    statuses = _dispatch(engine, db, match_ids, specs, env, output_format, None, executor, workers, ray_address)
    _print_results(engine, _tournament_ids(plan, match_ids), output_format)
    if any(s != "done" for s in statuses):
        raise typer.Exit(1)


def _db_exists(db: str | None) -> bool:
    from storage.engine import resolve_db_url

    url = resolve_db_url(db)
    return not url.startswith("sqlite:///") or os.path.exists(url.removeprefix("sqlite:///"))


def _tournament_ids(plan, played: list[int]) -> list[int]:
    return sorted({*plan.done.values(), *plan.running.values(), *played})


def _print_plan(name: str, plan, output_format: OutputFormat) -> None:
    from arena.render import emit

    summary = {"tournament": name, **plan.summary()}
    if output_format == OutputFormat.table:
        seconds = summary["estimated_seconds"]
        estimate = "unknown (no past rows)" if seconds is None else f"{seconds / 60:.1f} min"
        if seconds is not None and summary["matches_without_estimate"]:
            estimate += f" + {summary['matches_without_estimate']} match(es) with no past rows"
        lines = [
            f"tournament {name!r}: {summary['matches']} matches",
            f"  already done: {summary['done']}; running elsewhere: {summary['running_elsewhere']}; "
            f"queued (resumed): {summary['queued']}; to enqueue: {summary['to_enqueue']}",
            f"  victims: {summary['victims']} ({summary['victims_cached']} cached); "
            f"defender preparations: {summary['defender_preparations']} (each reused by every attack)",
            f"  estimated time: {estimate}",
        ]
        typer.echo("\n".join(lines))
        return
    emit([summary], list(summary), output_format.value)


@app.command()
def export(
    what: str = typer.Option("matches", "--what", help="matches or checkpoints"),
    output_format: OutputFormat = typer.Option(OutputFormat.json, "--format", "-f", help="json or csv"),
    output: str | None = typer.Option(None, "--output", "-o", help="write to this file instead of stdout"),
    status: str = typer.Option("all", "--status", help="match status to export, or 'all'"),
    db: str | None = DbOption,
) -> None:
    """Every match (with its spec, provenance and details) or every checkpoint, as JSON or CSV."""
    from arena.render import to_csv
    from storage import open_database
    from storage.export import CHECKPOINT_COLUMNS, MATCH_COLUMNS, export_checkpoints, export_matches

    if what not in ("matches", "checkpoints"):
        raise ArenaError(f"unknown --what {what!r}; use matches or checkpoints", field="what")
    if output_format == OutputFormat.table:
        raise ArenaError("export writes json or csv; pass --format json or --format csv", field="format")
    if output is not None and not os.path.isdir(os.path.dirname(os.path.abspath(output))):
        raise ArenaError(f"cannot write {output!r}: its folder does not exist", field="output")
    engine = open_database(db, write=False, create=False)
    wanted = None if status == "all" else status
    if what == "matches":
        rows, columns = export_matches(engine, wanted, nested=output_format == OutputFormat.json), MATCH_COLUMNS
    else:
        rows, columns = export_checkpoints(engine, wanted), CHECKPOINT_COLUMNS
    # nested rows (checkpoints inside matches) hold datetimes too: ISO strings via str()
    text = (
        json.dumps(rows, indent=2, default=str) if output_format == OutputFormat.json else to_csv(rows, list(columns))
    )
    if output is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    else:
        with open(output, "w") as fh:
            fh.write(text)
        typer.echo(f"wrote {len(rows)} {what} to {output}", err=True)


@app.command()
def reproduce(
    match_id: int = typer.Argument(..., help="a done match to replay"),
    reuse_cache: bool = typer.Option(
        False, "--reuse-cache", help="load the victim/defender from the artifact cache instead of retraining them"
    ),
    db: str | None = DbOption,
    data_root: str | None = DataRootOption,
    cache_dir: str | None = CacheOption,
    output_format: OutputFormat = typer.Option(OutputFormat.table, "--format", "-f"),
) -> None:
    """Replay a stored match's spec and report whether every number matches (exit 1 if not)."""
    from arena.reproduce import reproduce_match
    from storage import open_database

    engine = open_database(db, write=False, create=False)
    env = _env(data_root, cache_dir)
    report = reproduce_match(engine, match_id, env, reuse_cache=reuse_cache)
    from arena.render import emit

    columns = ["what", "stored", "replayed", "equal"]
    if output_format == OutputFormat.table:  # every digit shown: "identical" means to the last one
        shown = [{**row, "stored": repr(row["stored"]), "replayed": repr(row["replayed"])} for row in report.rows]
        emit(shown, columns, "table", title=f"reproduce match {match_id}")
        verdict = "identical to the last digit" if report.identical else f"DIFFERS in {report.differences} value(s)"
        typer.echo(f"match {match_id}: {verdict} (threads {report.threads}, device {report.device})", err=True)
    else:
        emit(report.rows, columns, output_format.value)
    if not report.identical:
        raise typer.Exit(1)
