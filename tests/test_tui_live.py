"""`arena tui` with real matches: the form starts a tiny match in a worker process, the live
view plots it, closing the UI leaves it running, a queued match gets a worker with `w` and
cancelling marks it cancelled; the UI process never imports torch; the tmux smoke script
passes in a real terminal."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input, Static

from arena.tui import catalog as catalog_module
from arena.tui.app import ArenaApp
from arena.tui.detail import DetailScreen
from arena.tui.launcher import MatchForm, Settings, enqueue
from arena.tui.live import LiveScreen
from arena.tui.new_match import NewMatchScreen
from arena.tui.widgets import CurvePlot
from storage import open_database, queries
from tests.test_tui import screen_text, until

ROOT = Path(__file__).resolve().parent.parent
TINY = """\
checkpoints = 3
attacker_params = { epochs = 1, min_steps = 40 }
[victim]
train = { epochs = 3, batch_size = 64, lr = 0.05 }
"""
# Same victim (cached), but slow checkpoints: time to cancel after the first one.
SLOW_ATTACK = TINY.replace("checkpoints = 3", "checkpoints = 8").replace("min_steps = 40", "min_steps = 400")
MATCH_TIMEOUT = 300  # seconds; the machine may be shared


def wait_for(condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


@pytest.fixture
def workers():
    """Worker processes a test starts; any still alive at the end are cancelled (SIGTERM)."""
    started: list[subprocess.Popen] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture
def arena(tmp_path, cache_dir):
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    return {
        "db": str(tmp_path / "arena.db"),
        "cache_dir": cache_dir,
        "run_config": str(config),
        "log_dir": str(tmp_path / "logs"),
    }


@pytest.mark.slow
def test_form_starts_a_tiny_match_that_survives_the_ui_and_plots_live(arena, workers):
    async def start_from_form():
        app = ArenaApp(**arena)
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.press("n")
            form = app.screen
            assert isinstance(form, NewMatchScreen)
            await until(pilot, lambda: form.ready, timeout=120)  # registries read in a child process
            await pilot.press("tab", "tab", "tab", "tab", "tab", "6", "0")  # focus: defender ... budget
            assert isinstance(app.focused, Input) and app.focused.id == "in-budget"
            form.query_one("#in-device", expect_type=None).value = "cpu"
            await pilot.press("enter")  # Enter in a field starts the match
            await until(pilot, lambda: isinstance(app.screen, LiveScreen), timeout=120)
            live = app.screen
            workers.extend(app.spawned.values())
            if workers[0].poll() is None:  # workers run at a lower priority than the UI
                assert os.getpriority(os.PRIO_PROCESS, workers[0].pid) == 10
            # wait until the worker is playing, then close the UI under it
            await until(pilot, lambda: live.match is not None and live.match.status == "running", timeout=120)
            return live.match_id

    match_id = asyncio.run(start_from_form())
    worker = workers[0]
    assert worker.poll() in (None, 0), "closing the UI must not stop the worker"

    async def reopen():
        app = ArenaApp(**arena)
        async with app.run_test(size=(100, 30)) as pilot:
            table = app.screen.query_one("#board", DataTable)
            await until(pilot, lambda: str(match_id) in table.rows)
            await pilot.press("enter")  # live view while it runs, details once done
            await until(pilot, lambda: isinstance(app.screen, (LiveScreen, DetailScreen)))
            if isinstance(app.screen, LiveScreen):
                screen = app.screen
                await until(pilot, lambda: screen.match is not None and not screen.match.active, timeout=MATCH_TIMEOUT)
                # the poll after the final status carries the last points: waited for below
            plot = app.screen.query_one(CurvePlot)
            await until(pilot, lambda: plot.point_count == 3)
            assert plot.redraws > 0 and plot.curves[0].reference is not None
            await pilot.press("escape")
            await until(pilot, lambda: any(r.id == match_id and r.status == "done" for r in app.screen.rows))
            return screen_text(app)

    board = asyncio.run(reopen())
    assert "knockoff" in board and "done" in board
    assert worker.wait(timeout=60) == 0
    engine = open_database(arena["db"], write=False, create=False)
    match = queries.get_match(engine, match_id)
    assert match.status == "done" and match.queries_used == 60 and match.device == "cpu"
    assert len(queries.checkpoints(engine, match_id)) == 3


@pytest.mark.slow
def test_cancel_key_marks_a_running_match_cancelled_and_keeps_its_checkpoints(arena, workers, tmp_path):
    slow = tmp_path / "slow.toml"
    slow.write_text(SLOW_ATTACK)
    settings = Settings(
        db_url=f"sqlite:///{arena['db']}",
        data_root=str(ROOT / "data"),
        cache_dir=arena["cache_dir"],
        run_config=str(slow),
        log_dir=arena["log_dir"],
    )
    form = MatchForm("undefended", "knockoff", "mnist5k", "in-distribution", "soft", "60", "0", "cpu")
    open_database(arena["db"]).dispose()
    match_id = enqueue(form, settings)  # queued as `arena run --enqueue` does; no worker yet

    async def watch_and_cancel():
        app = ArenaApp(**arena)
        async with app.run_test(size=(100, 30)) as pilot:
            app.show_live(match_id)
            await until(pilot, lambda: isinstance(app.screen, LiveScreen) and app.screen.match is not None)
            live = app.screen
            assert live.match.status == "queued"
            await pilot.press("w")  # start a worker for the queued match
            workers.extend(app.spawned.values())
            await until(pilot, lambda: len(live.points) >= 1, timeout=MATCH_TIMEOUT)
            await pilot.press("x")
            await until(pilot, lambda: live.match.status == "cancelled", timeout=120)
            return screen_text(app), len(live.points)

    text, drawn = asyncio.run(watch_and_cancel())
    assert "cancelled" in text
    assert workers[0].wait(timeout=60) == 0
    engine = open_database(arena["db"], write=False, create=False)
    match = queries.get_match(engine, match_id)
    kept = queries.checkpoints(engine, match_id)
    assert match.status == "cancelled" and match.cancel_requested
    assert len(kept) >= drawn >= 1 and len(kept) < 8  # stopped early, the checkpoints are kept


def test_arena_run_refusal_is_shown_under_its_field(arena):
    async def scenario():
        app = ArenaApp(**arena)
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.press("n")
            form = app.screen
            await until(pilot, lambda: form.ready, timeout=120)
            form.query_one("#in-budget", Input).value = "5000"  # more than knockoff's pool of 1,200
            await pilot.press("ctrl+s")
            error = form.query_one("#err-budget", Static)
            await until(pilot, lambda: error.display, timeout=120)
            assert not form.starting and isinstance(app.screen, NewMatchScreen)
            return str(error.render())

    message = asyncio.run(scenario())
    assert "exceeds the query pool" in message


def test_the_ui_process_never_imports_torch(tmp_path, cache_dir):
    """Start the app for real (catalog from its child process), open every screen, check modules."""
    script = tmp_path / "probe.py"
    script.write_text(
        textwrap.dedent(f"""
        import asyncio, sys
        from arena.tui.app import ArenaApp

        async def main():
            app = ArenaApp(db={str(tmp_path / "probe.db")!r}, cache_dir={cache_dir!r})
            async with app.run_test(size=(80, 24)) as pilot:
                await pilot.press("n")
                for _ in range(600):
                    if getattr(app.screen, "ready", False):
                        break
                    await pilot.pause(0.2)
                assert app.screen.ready, "the form never got the registries"
                await pilot.press("escape", "question_mark", "escape")
                await pilot.pause(0.2)
        asyncio.run(main())
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "numpy"))
        print("HEAVY", heavy)
    """)
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "HEAVY []" in done.stdout, done.stdout
    assert (Path(cache_dir) / catalog_module.CACHE_NAME).is_file()


def test_catalog_is_cached_and_refreshed_when_the_engines_change(cache_dir, monkeypatch):
    first = catalog_module.load(cache_dir)
    assert "knockoff" in first.attackers and "undefended" in first.defenders
    assert "soft" in first.attackers["knockoff"].label_modes

    def no_child(*args, **kwargs):
        raise AssertionError("the cached catalog should have been used")

    monkeypatch.setattr(catalog_module.subprocess, "run", no_child)
    assert catalog_module.load(cache_dir) == first
    monkeypatch.setattr(catalog_module, "fingerprint", lambda: "engines-changed")
    with pytest.raises(AssertionError, match="cached catalog"):
        catalog_module.load(cache_dir)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_tmux_smoke_script(cache_dir, tmp_path):
    out = tmp_path / "panes.txt"
    env = {**os.environ, "PYTHON": sys.executable, "ARENA_SMOKE_CACHE": cache_dir, "SMOKE_OUT": str(out)}
    env.pop("NO_COLOR", None)
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "tui_smoke.sh")], capture_output=True, text=True, timeout=600, env=env, cwd=ROOT
    )
    assert done.returncode == 0, (done.stdout[-4000:], done.stderr[-4000:])
    assert "smoke: ok" in done.stdout
    panes = out.read_text()
    assert "queries 60/60 · checkpoints 3" in panes and "clone acc" in panes
