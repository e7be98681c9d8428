"""`arena tui` on a database of recorded matches: leaderboard, filters, sorting, details,
comparison, the new-match form's inline validation, help, 80x24 text captures and NO_COLOR.

No match is played here (see test_tui_live.py); the registries' catalog is read in-process."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC

import pytest
from textual.widgets import DataTable, Input, Select, Static

from arena.tui import catalog as catalog_module
from arena.tui import new_match
from arena.tui.app import ArenaApp
from arena.tui.catalog import Catalog
from arena.tui.detail import DetailScreen, flatten
from arena.tui.dialogs import HelpScreen, PickMatchScreen
from arena.tui.launcher import FormError, MatchForm, Settings, check_form, read_reply, run_command
from arena.tui.leaderboard import LeaderboardScreen
from arena.tui.live import LiveScreen, estimate_eta
from arena.tui.new_match import NewMatchScreen
from arena.tui.widgets import CurvePlot
from engines.records import CheckpointRow
from engines.spec import MatchSpec
from storage import open_database, queries

SIZE = (80, 24)


def screen_text(app) -> str:
    """What the terminal shows, as plain text (one line per row)."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


def shows(app, *texts: str) -> bool:
    """True when every text is on the terminal now (rows and footers fill in after a frame)."""
    screen = screen_text(app)
    return all(text in screen for text in texts)


async def until(pilot, condition, timeout: float = 60.0) -> None:
    """Wait for `condition`; the deadline only bounds a failure, so it is generous: a machine
    whose cores are all busy can take many seconds to lay out a screen."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out; the screen shows:\n{screen_text(pilot.app)}")
        await pilot.pause(0.05)


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.from_dict(catalog_module.collect())


def _checkpoint(engine, match_id, index, queries_used, clone, fidelity):
    queries.add_checkpoint(
        engine,
        match_id,
        index,
        CheckpointRow(
            queries_used=queries_used,
            clone_accuracy=clone,
            best_clone_accuracy=clone,
            fidelity_served=fidelity,
            fidelity_victim=fidelity,
            wall_seconds=1.0 + index,
            serving_seconds=0.01,
        ),
    )


@pytest.fixture(autouse=True)
def no_reaping(monkeypatch):
    """The running matches here are simulated: no worker stamps a heartbeat for them, so the
    reaper (which the TUI runs) must not judge them lost however slow the machine is."""
    monkeypatch.setenv("ARENA_HEARTBEAT_TIMEOUT", str(7 * 24 * 3600))


@pytest.fixture
def db(tmp_path):
    """Four recorded matches: three done (soft twice, hard once), one running with two checkpoints."""
    path = str(tmp_path / "arena.db")
    engine = open_database(path)
    specs = [
        MatchSpec(attacker="knockoff", label_mode=mode, query_budget=60, seed=seed, device="cpu")
        for mode, seed in (("soft", 0), ("hard", 0), ("soft", 1), ("soft", 2))
    ]
    ids = queries.create_matches(engine, "batch", specs, {"python": "3.11", "torch": "test"})
    finals = {ids[0]: 0.62, ids[1]: 0.48, ids[2]: 0.55}
    for match_id, final in finals.items():
        queries.update_match(engine, match_id, status="running", phase="attacking")
        queries.update_match(engine, match_id, victim_accuracy=0.97, defender_accuracy=0.96)
        for index, used in enumerate((2, 8, 60)):
            _checkpoint(engine, match_id, index, used, final * (index + 1) / 3, final * (index + 1) / 3 + 0.05)
        queries.update_match(engine, match_id, status="done", phase="done", wall_seconds=10.0)
    running = ids[3]
    queries.update_match(
        engine,
        running,
        status="running",
        phase="attacking",
        progress_done=20,
        progress_total=60,
        victim_accuracy=0.97,
        defender_accuracy=0.96,
    )
    queries.add_event(engine, running, "phase", "attacking: knockoff (soft), budget 60")
    _checkpoint(engine, running, 0, 2, 0.2, 0.25)
    _checkpoint(engine, running, 1, 8, 0.3, 0.35)
    engine.dispose()
    return path, ids


def plot_points(app) -> int:
    """Points drawn by the current screen's plot (-1 while it has none mounted)."""
    plots = app.screen.query(CurvePlot)
    return plots.first().point_count if plots else -1


def run(coro):
    return asyncio.run(coro)


def board_ids(app) -> list[int]:
    table = app.screen.query_one("#board", DataTable)
    return [int(key.value) for key in table.rows]


# -- leaderboard --------------------------------------------------------------------------------
def test_leaderboard_lists_ranks_filters_and_sorts(db, catalog, tmp_path):
    path, ids = db

    async def scenario():
        app = ArenaApp(db=path, cache_dir=str(tmp_path / "cache"), catalog=catalog)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: len(board_ids(app)) == 4)
            assert isinstance(app.screen, LeaderboardScreen)
            # the running match first, then the soft arena ranked by clone accuracy, then hard
            assert board_ids(app)[0] == ids[3]
            screen = app.screen
            ranks = {row.id: row.rank for row in screen.rows}
            assert ranks[ids[2]] == 1 and ranks[ids[0]] == 2 and ranks[ids[1]] == 1 and ranks[ids[3]] is None
            # sort by clone accuracy (s cycles: arena -> id -> clone_accuracy), reversed with r
            await pilot.press("s", "s")
            assert screen.sort_key == "clone_accuracy"
            # (the running match's clone accuracy is its last checkpoint's, 30 %)
            assert board_ids(app) == [ids[3], ids[1], ids[2], ids[0]]
            await pilot.press("r")
            assert board_ids(app) == [ids[0], ids[2], ids[1], ids[3]]
            # filter on the label mode through the filter menu
            screen.query_one("#filter-label_mode", Select).value = "hard"
            await until(pilot, lambda: board_ids(app) == [ids[1]])
            screen.query_one("#filter-label_mode", Select).clear()
            screen.query_one("#filter-status", Select).value = "running"
            await until(pilot, lambda: board_ids(app) == [ids[3]])

    run(scenario())


def test_leaderboard_picks_up_new_matches_while_open(db, catalog, tmp_path):
    path, ids = db

    async def scenario():
        app = ArenaApp(db=path, cache_dir=str(tmp_path / "cache"), catalog=catalog)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: len(board_ids(app)) == 4)
            engine = open_database(path)
            new = queries.create_matches(engine, "b2", [MatchSpec(query_budget=60, device="cpu")], {})[0]
            engine.dispose()
            await until(pilot, lambda: new in board_ids(app))

    run(scenario())


def test_enter_opens_live_view_for_running_and_details_for_finished(db, catalog, tmp_path):
    path, ids = db

    async def scenario():
        app = ArenaApp(db=path, cache_dir=str(tmp_path / "cache"), catalog=catalog)
        async with app.run_test(size=(100, 30)) as pilot:
            await until(pilot, lambda: len(board_ids(app)) == 4)
            await pilot.press("enter")  # cursor on the running match
            assert isinstance(app.screen, LiveScreen) and app.screen.match_id == ids[3]
            plot = app.screen.query_one(CurvePlot)
            await until(pilot, lambda: plot.point_count == 2 and plot.redraws > 0)
            assert plot.curves[0].reference == pytest.approx(0.96)
            text = screen_text(app)
            assert "phase: attacking" in text and "queries 20/60" in text and "checkpoints 2" in text
            assert "attacking: knockoff (soft), budget 60" in text  # the log panel
            # a checkpoint written by the worker reaches the plot on the next poll
            engine = open_database(path)
            _checkpoint(engine, ids[3], 2, 30, 0.4, 0.45)
            engine.dispose()
            await until(pilot, lambda: plot.point_count == 3)
            await pilot.press("escape")
            assert isinstance(app.screen, LeaderboardScreen)
            await pilot.press("down", "enter")
            assert isinstance(app.screen, DetailScreen)
            plot = app.screen.query_one(CurvePlot)
            await until(pilot, lambda: plot.point_count == 3)
            assert "seed" in screen_text(app) and "done" in screen_text(app)

    run(scenario())


def test_compare_overlays_two_matches(db, catalog, tmp_path):
    path, ids = db

    async def scenario():
        app = ArenaApp(db=path, cache_dir=str(tmp_path / "cache"), catalog=catalog)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: len(board_ids(app)) == 4)
            await pilot.press("down", "space", "down", "c")  # mark the 2nd row, compare with the 3rd
            assert isinstance(app.screen, DetailScreen) and app.screen.comparing
            plot = app.screen.query_one(CurvePlot)
            await until(pilot, lambda: plot.point_count == 6)
            assert [c.label for c in plot.curves] == ["A", "B"]
            await pilot.press("right")  # Numbers tab
            numbers = app.screen.query_one("#detail-numbers", DataTable)

            def numbers_rows():
                return {numbers.get_row_at(i)[0]: numbers.get_row_at(i) for i in range(numbers.row_count)}

            await until(pilot, lambda: "clone accuracy" in numbers_rows() and "attacker" in numbers_rows())
            rows = numbers_rows()
            assert rows["clone accuracy"][3] == "≠" and rows["attacker"][3] == ""
            # from a match's details, c opens the picker
            await pilot.press("escape", "enter")
            await until(pilot, lambda: isinstance(app.screen, (DetailScreen, LiveScreen)))
            await pilot.press("escape")
            await pilot.press("down", "enter")
            await until(pilot, lambda: isinstance(app.screen, DetailScreen))
            await pilot.press("c")
            assert isinstance(app.screen, PickMatchScreen) and len(app.screen.candidates) == 3
            await pilot.press("enter")
            assert isinstance(app.screen, DetailScreen) and len(app.screen.match_ids) == 2

    run(scenario())


def test_cancel_key_requests_cancellation_of_a_queued_match(db, catalog, tmp_path):
    path, ids = db
    engine = open_database(path)
    queued = queries.create_matches(engine, "b3", [MatchSpec(query_budget=60, device="cpu")], {})[0]

    async def scenario():
        app = ArenaApp(db=path, cache_dir=str(tmp_path / "cache"), catalog=catalog)
        async with app.run_test(size=SIZE) as pilot:
            app.show_live(queued)
            await until(pilot, lambda: isinstance(app.screen, LiveScreen) and app.screen.match is not None)
            await pilot.press("x")
            await until(pilot, lambda: app.screen.match.status == "cancelled")
            assert "cancelled" in screen_text(app)

    run(scenario())
    assert queries.get_match(engine, queued).cancel_requested
    engine.dispose()


# -- the new-match form -------------------------------------------------------------------------
def test_form_offers_registry_names_and_validates_inline(db, catalog, tmp_path, monkeypatch):
    path, _ = db

    async def scenario():
        app = ArenaApp(db=path, cache_dir=str(tmp_path / "cache"), catalog=catalog)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("n")
            screen = app.screen
            assert isinstance(screen, NewMatchScreen)
            await until(pilot, lambda: screen.ready)  # noqa: F821 (deleted below, after use)
            options = {
                name: [v for _, v in screen.query_one(f"#in-{name}", Select)._options]
                for name in ("defender", "attacker", "dataset", "device")
            }
            assert options["defender"] == list(catalog.defenders) and "knockoff" in options["attacker"]
            assert "mnist5k" in options["dataset"] and options["device"][:2] == ["auto", "cpu"]

            # the label modes follow the attacker
            def label_options():
                return [v for _, v in screen.query_one("#in-label_mode", Select)._options]  # noqa: F821

            screen.query_one("#in-attacker", Select).value = "dfme"
            await until(pilot, lambda: label_options() == list(catalog.attackers["dfme"].label_modes))
            assert (
                screen.query_one("#in-budget", Input).placeholder
                == f"default {catalog.attackers['dfme'].default_budget}"
            )
            screen.query_one("#in-attacker", Select).value = "knockoff"
            await until(pilot, lambda: label_options() == list(catalog.attackers["knockoff"].label_modes))
            # bad numbers: messages under the fields, and nothing is started
            screen.query_one("#in-budget", Input).value = "-5"
            screen.query_one("#in-seed", Input).value = "-1"
            budget_error = screen.query_one("#err-budget", Static)
            seed_error = screen.query_one("#err-seed", Static)
            await until(pilot, lambda: budget_error.display and seed_error.display)
            assert "above 0" in str(budget_error.render())
            await pilot.press("ctrl+s")
            assert isinstance(app.screen, NewMatchScreen) and not screen.starting
            screen.query_one("#in-budget", Input).value = "60"
            screen.query_one("#in-seed", Input).value = "3"
            await until(pilot, lambda: not budget_error.display and not seed_error.display)
            assert screen.read_form() == MatchForm(
                "undefended", "knockoff", "mnist5k", "in-distribution", "soft", "60", "3", "auto"
            )
            # a refusal by `arena run --enqueue --format json` is shown under the field it names
            for spec_field, shown_under in (("pool", "pool"), ("attacker_params.epochs", "attacker")):
                reply = json.dumps({"error": {"field": spec_field, "message": f"{spec_field} refused"}})
                monkeypatch.setattr(new_match, "enqueue", lambda form, settings, r=reply: read_reply(2, r, ""))
                await pilot.press("ctrl+s")
                error = screen.query_one(f"#err-{shown_under}", Static)
                await until(pilot, lambda: error.display and not screen.starting)  # noqa: B023
                assert str(error.render()) == f"{spec_field} refused" and isinstance(app.screen, NewMatchScreen)
                assert screen.query_one(f"#in-{shown_under}").has_focus
                assert not screen.query_one("#err-form", Static).display
            await pilot.press("escape")
            assert isinstance(app.screen, LeaderboardScreen)

    run(scenario())


def test_form_built_when_the_catalog_arrives_late_and_closed_forms_are_freed(db, catalog, tmp_path):
    import gc
    import weakref

    path, _ = db

    async def scenario():
        app = ArenaApp(db=path, cache_dir=str(tmp_path / "cache"), catalog=catalog)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.catalog is not None)
            app.catalog = None  # as if the registries were still being read
            await pilot.press("n")
            screen = app.screen
            assert isinstance(screen, NewMatchScreen) and not screen.ready
            assert "reading the registries" in screen_text(app)
            app.catalog = catalog
            await until(pilot, lambda: screen.ready)  # noqa: F821 (deleted below, after use)
            closed = [weakref.ref(screen)]
            del screen
            await pilot.press("escape")
            for _ in range(3):
                await pilot.press("n")
                await until(pilot, lambda: isinstance(app.screen, NewMatchScreen) and app.screen.ready)
                closed.append(weakref.ref(app.screen))
                await pilot.press("escape")
            await until(pilot, lambda: isinstance(app.screen, LeaderboardScreen))

            def all_freed() -> bool:
                gc.collect()
                return [ref() for ref in closed] == [None] * 4

            await until(pilot, all_freed)  # nothing keeps a closed form alive

    run(scenario())


def test_idle_gc_moves_full_collections_off_the_keypress_path(db, catalog, tmp_path):
    import gc

    path, _ = db
    before = gc.get_threshold()

    async def scenario():
        app = ArenaApp(db=path, cache_dir=str(tmp_path / "cache"), catalog=catalog, idle_gc=True)
        app.IDLE_SECONDS = app.GC_EVERY_SECONDS = 0.3
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: gc.get_threshold()[2] > before[2])  # automatic full collections off
            await until(pilot, lambda: app.idle_collections >= 1 and gc.get_freeze_count() > 0)  # ...run when idle
            # While keys keep coming, none runs. A long idle threshold keeps this true on a
            # loaded machine (a gap between two keys never reaches it); GC_EVERY_SECONDS has
            # passed, so a collection that ignored the keys would show up here.
            app.IDLE_SECONDS = 30
            for _ in range(6):
                count = app.idle_collections
                await pilot.press("down")
                await pilot.pause(0.1)  # time passing for the idle check, not a synchronisation
                assert app.idle_collections == count
        assert gc.get_threshold() == before and gc.get_freeze_count() == 0  # restored on exit

    try:
        run(scenario())
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


def test_check_form_and_command_line(catalog):
    good = MatchForm("undefended", "knockoff", "mnist5k", "in-distribution", "hard", "", "0", "cuda:1")
    assert check_form(good, catalog) == {}
    bad = MatchForm("nope", "dfme", "mnist5k", "nowhere", "hard", "0", "x", "gpu")
    assert set(check_form(bad, catalog)) == {"defender", "pool", "label_mode", "budget", "seed", "device"}
    settings = Settings(db_url="sqlite:///x.db", data_root="/d", cache_dir="/c", run_config="/tiny.toml")
    args = run_command(
        MatchForm("undefended", "knockoff", "mnist5k", "in-distribution", "soft", "60", "2", "cpu"), settings
    )
    assert args[1:7] == ["-m", "arena.cli", "run", "--enqueue", "--format", "json"]
    pairs = dict(zip(args[7::2], args[8::2]))
    assert pairs["--budget"] == "60" and pairs["--seed"] == "2" and pairs["--config"] == "/tiny.toml"
    assert pairs["--db"] == "sqlite:///x.db" and pairs["--label"] == "soft"
    assert "--budget" not in run_command(good, settings)  # empty: the attacker's default


def test_enqueue_reply_is_read_from_the_json_on_stdout():
    assert read_reply(0, '{"batch_id": "b1", "match_ids": [7, 8]}\n', "queued 2 match(es) 7..8") == 7
    refusals = {
        "query_budget": "budget",
        "attacker_params.epochs": "attacker",
        "dataset": "dataset",
        "config": None,
        None: None,
    }
    for spec_field, shown_under in refusals.items():
        reply = json.dumps({"error": {"field": spec_field, "message": "refused"}})
        with pytest.raises(FormError) as refused:
            read_reply(2, reply + "\n", "error: refused")
        assert (str(refused.value), refused.value.field) == ("refused", shown_under)
    with pytest.raises(FormError, match="failed: internal error") as crashed:
        read_reply(1, "", "error: internal error (KeyError: 'x')")
    assert crashed.value.field is None


def test_estimate_eta():
    from datetime import datetime, timedelta

    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert estimate_eta(now - timedelta(seconds=30), 30, 90, now) == pytest.approx(60)
    assert estimate_eta(now, 0, 90, now) is None and estimate_eta(None, 5, 10, now) is None


def test_flatten_nested_config():
    assert flatten({"a": 1, "b": {"c": "x", "d": [1, 2]}, "e": {}}) == {
        "a": "1",
        "b.c": "x",
        "b.d": "[1, 2]",
        "e": "{}",
    }


# -- text captures of the main screens, at 80x24 and larger ---------------------------------
@pytest.mark.parametrize("size", [SIZE, (120, 40)])
def test_main_screens_fit_the_terminal(db, catalog, tmp_path, size):
    path, ids = db

    async def scenario():
        app = ArenaApp(db=path, cache_dir=str(tmp_path / "cache"), catalog=catalog)
        captures = {}
        async with app.run_test(size=size) as pilot:
            # the footer and the rows fill in after the screen's first frame: wait for what is checked
            await until(pilot, lambda: len(board_ids(app)) == 4 and shows(app, "n New match", "undefended", "running"))
            captures["leaderboard"] = screen_text(app)
            await pilot.press("enter")
            await until(
                pilot,
                lambda: (
                    plot_points(app) == 2
                    and shows(app, "x Cancel match", "queries 20/60", "clone acc", "defender clean")
                ),
            )
            captures["live"] = screen_text(app)
            await pilot.press("escape", "down", "enter")
            await until(pilot, lambda: plot_points(app) == 3 and shows(app, "Curves", "Numbers", "clone acc"))
            captures["detail"] = screen_text(app)
            await pilot.press("escape", "n")
            await until(pilot, lambda: app.screen.ready and shows(app, "Start match", "query pool"))
            captures["form"] = screen_text(app)
            await pilot.press("escape", "question_mark")
            await until(pilot, lambda: isinstance(app.screen, HelpScreen) and shows(app, "Keyboard help"))
            captures["help"] = screen_text(app)
        return captures

    captures = run(scenario())
    for name, text in captures.items():
        lines = text.splitlines()
        assert len(lines) == size[1] and all(len(line) <= size[0] for line in lines), name
    assert "n New match" in captures["leaderboard"] and "q Quit" in captures["leaderboard"]
    assert "undefended" in captures["leaderboard"] and "running" in captures["leaderboard"]
    assert "x Cancel match" in captures["live"] and "queries 20/60" in captures["live"]
    assert "clone acc" in captures["live"] and "defender clean" in captures["live"]
    assert "Curves" in captures["detail"] and "Numbers" in captures["detail"] and "clone acc" in captures["detail"]
    for label in (
        "defender",
        "attacker",
        "data set",
        "query pool",
        "label mode",
        "budget",
        "seed",
        "device",
        "Start match",
    ):
        assert label in captures["form"], label
    assert "Keyboard help" in captures["help"] and "cancel the match" in captures["help"]


def test_no_color_plot_uses_marker_shapes(db, catalog, tmp_path, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    path, ids = db

    async def scenario():
        app = ArenaApp(db=path, cache_dir=str(tmp_path / "cache"), catalog=catalog)
        assert app.no_color
        async with app.run_test(size=SIZE) as pilot:
            app.compare(ids[0], ids[1])
            await until(
                pilot,
                lambda: isinstance(app.screen, DetailScreen) and plot_points(app) == 6 and shows(app, *LEGENDS),
            )
            return screen_text(app)

    text = run(scenario())
    for legend in LEGENDS:
        assert legend in text, legend


LEGENDS = ("** A clone acc", "++ A fidelity", "oo B clone acc", "xx B fidelity", "-- A defender clean")


def test_a_worker_that_dies_is_reported(db, catalog, tmp_path):
    """A worker this UI started that exits non-zero while its match is still queued is reported."""
    import subprocess
    import sys

    path, _ = db
    engine = open_database(path)
    queued = queries.create_matches(engine, "b4", [MatchSpec(query_budget=60, device="cpu")], {})[0]
    engine.dispose()
    dead = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    dead.wait()

    async def scenario():
        app = ArenaApp(db=path, cache_dir=str(tmp_path / "cache"), catalog=catalog, log_dir=str(tmp_path / "logs"))
        async with app.run_test(size=SIZE) as pilot:
            app.match_started(queued, dead)
            await until(pilot, lambda: queued in app._reported_exits)
            assert isinstance(app.screen, LiveScreen)

    run(scenario())
