import pytest

from arena.config import build_specs, load_toml, parse_axis
from engines.errors import ArenaError
from engines.spec import MatchSpec, checkpoint_schedule


def test_checkpoint_schedule_is_log_spaced_and_ends_at_budget():
    points = checkpoint_schedule(1200, 12)
    assert points[-1] == 1200 and len(points) >= 10
    assert points == sorted(set(points))
    ratios = [b / a for a, b in zip(points, points[1:])]
    assert max(ratios) / min(ratios) < 1.5


def test_resolve_fills_defaults():
    spec = MatchSpec().resolve()
    assert spec.query_budget == 1200 and spec.victim.arch == "lenet5"
    assert spec.attacker_params["lr"] == 0.01


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"defender": "nope"}, "unknown defender"),
        ({"attacker": "nope"}, "unknown attacker"),
        ({"dataset": "nope"}, "unknown data set"),
        ({"pool": "nope"}, "unknown pool"),
        ({"attacker_params": {"bogus": 1}}, "bad parameter"),
    ],
)
def test_unknown_names_are_one_line_errors(fields, message):
    with pytest.raises(ArenaError, match=message):
        build_specs(None, {}, fields)


def test_default_lineup_and_grid():
    specs = build_specs(None, {}, {})
    attacks = [("knockoff", "soft"), ("knockoff", "hard"), ("dfme", "soft")]
    assert [(s.defender, s.attacker, s.label_mode) for s in specs] == [
        (defender, *attack) for defender in ("undefended", "misleader") for attack in attacks
    ]
    grid = build_specs(None, {"seed": [0, 1, 2], "label_mode": ["soft", "hard"]}, {})
    assert len(grid) == 6 and {s.seed for s in grid} == {0, 1, 2}


def test_toml_config_grid_and_matches(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text(
        'dataset = "mnist5k"\nquery_budget = 50\n[grid]\nseed = [1, 2]\n'
        '[[matches]]\nattacker = "knockoff"\nlabel_mode = "hard"\n'
        '[[matches]]\nattacker = "knockoff"\nlabel_mode = "soft"\n'
    )
    specs = build_specs(load_toml(str(path)), {}, {})
    assert len(specs) == 4 and {s.query_budget for s in specs} == {50}


@pytest.mark.parametrize(
    "text, message",
    [
        ("dataset = ", "malformed TOML"),
        ("colour = 'red'", "unknown key"),
        ("query_budget = 0", "query_budget"),
        ("query_budget = -5", "query_budget"),
        ("device = 'tpu'", "device"),
    ],
)
def test_bad_config_files(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ArenaError, match=message):
        build_specs(load_toml(str(path)), {}, {})


def test_parse_axis():
    assert parse_axis("seed", "0, 1,2") == [0, 1, 2]
    with pytest.raises(ArenaError):
        parse_axis("query_budget", "ten")
