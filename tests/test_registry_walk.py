"""Every registered defender and attacker plays a tiny match at its declared smoke settings.

The walk reads DEFENDERS and ATTACKERS, so an entry is exercised the moment it is registered.
The base classes give no default smoke settings: an entry that does not declare them fails
here, by name (`smoke_params`, and for attackers `smoke_budget` and `smoke_label_mode`).
"""

import pytest

from engines.attackers import ATTACKERS, Attacker
from engines.defenders import DEFENDERS
from engines.match import MatchEnvironment, MatchObserver, play_match
from engines.spec import MatchSpec

TINY_VICTIM = {"arch": None, "train": {"epochs": 2, "batch_size": 128, "lr": 0.05}}
DEFENDER_TEST_ATTACKER = "knockoff"
DEFENDER_TEST_BUDGET = 20
ATTACKER_SETTINGS = ("smoke_params", "smoke_budget", "smoke_label_mode")


def smoke_settings(kind: str, name: str, cls: type, settings: tuple[str, ...]) -> dict:
    """The class's smoke settings, or a test failure naming the entry and what it lacks."""
    missing = [s for s in settings if not hasattr(cls, s)]
    if missing:
        pytest.fail(f"{kind} {name!r} declares no {', '.join(missing)}: set them on its class (see its base class)")
    return {s: getattr(cls, s) for s in settings}


class Rows(MatchObserver):
    def __init__(self):
        self.rows = []

    def checkpoint(self, row) -> None:
        self.rows.append(row)


def play(cache_dir: str, **fields):
    spec = MatchSpec(device="cpu", victim=TINY_VICTIM, checkpoints=3, **fields).resolve()
    observer = Rows()
    summary = play_match(spec, observer, MatchEnvironment(cache_root=cache_dir))
    return summary, observer.rows


def assert_sound_match(summary, rows, budget: int) -> None:
    assert summary.queries_used == budget
    assert rows and rows[-1].queries_used == budget
    for row in rows:
        for value in (row.clone_accuracy, row.fidelity_served, row.fidelity_victim):
            assert 0.0 <= value <= 1.0, row
    served = summary.defender.clean_accuracy
    assert isinstance(served, float) and 0.0 <= served <= 1.0


def test_an_entry_without_smoke_settings_fails_by_name():
    class Unprepared(Attacker):
        def run(self, oracle, ctx):
            return None

    with pytest.raises(pytest.fail.Exception, match="attacker 'unprepared' declares no smoke_params"):
        smoke_settings("attacker", "unprepared", Unprepared, ATTACKER_SETTINGS)


@pytest.mark.parametrize("name", ATTACKERS.names())
def test_every_attacker_plays_a_tiny_match(name, cache_dir):
    cls = ATTACKERS.get(name)
    smoke = smoke_settings("attacker", name, cls, ATTACKER_SETTINGS)
    assert smoke["smoke_label_mode"] in cls.label_modes, f"{name}: smoke_label_mode is not one of its label_modes"
    summary, rows = play(
        cache_dir,
        attacker=name,
        label_mode=smoke["smoke_label_mode"],
        query_budget=smoke["smoke_budget"],
        attacker_params=smoke["smoke_params"],
    )
    assert_sound_match(summary, rows, smoke["smoke_budget"])


@pytest.mark.parametrize("name", DEFENDERS.names())
def test_every_defender_plays_a_tiny_match(name, cache_dir):
    smoke = smoke_settings("defender", name, DEFENDERS.get(name), ("smoke_params",))
    attacker = ATTACKERS.get(DEFENDER_TEST_ATTACKER)
    summary, rows = play(
        cache_dir,
        defender=name,
        defender_params=smoke["smoke_params"],
        attacker=DEFENDER_TEST_ATTACKER,
        query_budget=DEFENDER_TEST_BUDGET,
        attacker_params=attacker.smoke_params,
    )
    assert_sound_match(summary, rows, DEFENDER_TEST_BUDGET)
