"""The TUI's defence ranking (`d` on the leaderboard) and a defence's trade-off curve (`t` on
the ranking), on a database of done matches written directly (no match is played)."""

from __future__ import annotations

import pytest
from textual.widgets import DataTable, Select

from arena.tui import catalog as catalog_module
from arena.tui.app import ArenaApp
from arena.tui.catalog import Catalog
from arena.tui.leaderboard import LeaderboardScreen
from arena.tui.ranking import DefenceRankingScreen, TradeoffScreen
from arena.tui.widgets import TradeoffPlot
from storage import open_database
from tests.test_ranking import add
from tests.test_tui import SIZE, board_ids, run, screen_text, shows, until

# randp at three settings of its knob against one attack, three seeds each: (eps, served, clones)
RANDP = ((0.1, 0.97, [0.80, 0.82, 0.81]), (0.5, 0.90, [0.60, 0.62, 0.61]), (2.0, 0.40, [0.30, 0.31, 0.29]))


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.from_dict(catalog_module.collect())


@pytest.fixture
def db(tmp_path):
    path = str(tmp_path / "ranking.db")
    engine = open_database(path)
    for eps, served, clones in RANDP:
        add(engine, "randp", "knockoff", clones, served=served, params={"eps": eps, "preserve_argmax": False})
    add(engine, "undefended", "knockoff", [0.90, 0.91, 0.89])
    add(engine, "rounding", "knockoff", [0.85])  # one seed: flagged, unranked-by-interval
    add(engine, "undefended", "knockoff", [0.50, 0.52, 0.51], dataset="cifar10")
    engine.dispose()
    return path


def ranking_names(app) -> list[str]:
    table = app.screen.query_one("#ranking", DataTable)
    return [str(table.get_row_at(i)[1]) for i in range(table.row_count)]


def open_ranking(app):
    return isinstance(app.screen, DefenceRankingScreen) and len(app.screen.rows) > 0


def test_ranking_screen_opens_with_d_shows_rows_and_flags_and_fits(db, catalog, tmp_path):
    async def scenario():
        app = ArenaApp(db=db, cache_dir=str(tmp_path / "cache"), catalog=catalog)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: len(board_ids(app)) == 16 and shows(app, "d Defences", "q Quit"))
            await pilot.press("d")
            await until(pilot, lambda: open_ranking(app) and len(ranking_names(app)) == 6)
            names = ranking_names(app)
            # per data set: cifar10 first; on mnist5k the strongest randp setting ranks first
            assert names[0] == "undefended" and names[1] == "randp[eps=2.0]"
            assert set(names[2:]) == {"randp[eps=0.5]", "randp[eps=0.1]", "undefended", "rounding"}
            await until(pilot, lambda: shows(app, "randp[eps=2.0]", "30.0 ±", "t Trade-off", "· rank 1 ·"))
            # the single-seed row carries a flag, spelled out under the table when selected
            await pilot.press(*["down"] * names.index("rounding"))
            await until(pilot, lambda: shows(app, "! single seed: no interval, cannot rank"))
            text = screen_text(app)
            assert "!1" in text  # the flags column
            lines = text.splitlines()
            assert len(lines) == SIZE[1] and all(len(line) <= SIZE[0] for line in lines)
            await pilot.press("escape")
            assert isinstance(app.screen, LeaderboardScreen)
            await pilot.press("question_mark")  # the key is in the help
            await until(pilot, lambda: shows(app, "Keyboard help", "defence ranking (worst cases"))

    run(scenario())


def test_ranking_follows_the_data_set_filter_and_the_database(db, catalog, tmp_path):
    async def scenario():
        app = ArenaApp(db=db, cache_dir=str(tmp_path / "cache"), catalog=catalog)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: len(board_ids(app)) == 16)
            app.screen.query_one("#filter-dataset", Select).value = "cifar10"
            await until(pilot, lambda: len(board_ids(app)) == 3)
            await pilot.press("d")  # opens on the leaderboard's data set
            await until(pilot, lambda: open_ranking(app) and ranking_names(app) == ["undefended"])
            screen = app.screen
            assert screen.query_one("#ranking-dataset", Select).value == "cifar10"
            screen.query_one("#ranking-dataset", Select).value = "mnist5k"
            await until(pilot, lambda: len(ranking_names(app)) == 5)
            # a defence finished by a worker appears without a keypress
            engine = open_database(db)
            add(engine, "top1", "knockoff", [0.70, 0.71, 0.69])
            engine.dispose()
            await until(pilot, lambda: "top1" in ranking_names(app), timeout=5)

    run(scenario())


@pytest.mark.parametrize("no_color", [False, True])
def test_tradeoff_view_draws_every_setting_of_the_defence(db, catalog, tmp_path, monkeypatch, no_color):
    if no_color:
        monkeypatch.setenv("NO_COLOR", "1")

    async def scenario():
        app = ArenaApp(db=db, cache_dir=str(tmp_path / "cache"), catalog=catalog)
        async with app.run_test(size=SIZE) as pilot:
            app.show_defences("mnist5k")
            await until(pilot, lambda: open_ranking(app) and len(ranking_names(app)) == 5)
            assert ranking_names(app)[0] == "randp[eps=2.0]"
            await pilot.press("t")
            assert isinstance(app.screen, TradeoffScreen)
            plot = app.screen.query_one(TradeoffPlot)
            await until(pilot, lambda: len(plot.points) == 3 and plot.redraws > 0 and shows(app, "ranked setting"))
            assert [(p.setting, p.ranked) for p in plot.points] == [
                ("eps=0.1", False),
                ("eps=0.5", False),
                ("eps=2.0", True),
            ]
            assert plot.points[2].served == pytest.approx(0.40) and plot.points[2].clone == pytest.approx(0.30)
            table = app.screen.query_one("#tradeoff-points", DataTable)
            assert [[str(c) for c in table.get_row_at(i)[:4]] for i in range(table.row_count)] == [
                [" ", "eps=0.1", "3", "97.0%"],
                [" ", "eps=0.5", "3", "90.0%"],
                ["*", "eps=2.0", "3", "40.0%"],
            ]
            text = screen_text(app)
            assert "randp vs knockoff (soft, budget 100) on mnist5k" in text and "served clean acc" in text
            lines = text.splitlines()
            assert len(lines) == SIZE[1] and all(len(line) <= SIZE[0] for line in lines)
            if no_color:
                assert "** settings" in text  # a marker shape, not a colour, tells the series apart
            await pilot.press("escape")
            assert isinstance(app.screen, DefenceRankingScreen)

    run(scenario())
