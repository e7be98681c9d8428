"""The Ray executor on a real one-node Ray instance: same rows as local play, failures and
cancellation recorded on the match, unreachable clusters refused in one line."""

import json
import sqlite3
import textwrap
import threading
import time

import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[ray]')")

SPEC = textwrap.dedent("""
    seeds = [0, 1]
    label_modes = ["soft", "hard"]
    defenders = ["undefended"]
    attackers = [{ name = "knockoff", budget = 30, params = { epochs = 1, min_steps = 4 } }]
    [match]
    checkpoints = 3
    device = "cpu"
    [match.victim.train]
    epochs = 1
    batch_size = 128
    lr = 0.05
""")
COMPARED = "defender, attacker, label_mode, seed, status, victim_accuracy, defender_accuracy, clone_accuracy, "
COMPARED += "best_clone_accuracy, fidelity_served, fidelity_victim, queries_used"


@pytest.fixture(scope="module")
def ray_instance():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             _node_ip_address="127.0.0.1")  # fmt: skip
    yield
    ray.shutdown()


@pytest.fixture
def spec_file(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text(SPEC)
    return path


def rows(db):
    return sqlite3.connect(db).execute(f"SELECT {COMPARED} FROM matches ORDER BY id").fetchall()


def test_ray_plays_the_same_rows_as_local(cli, tmp_path, spec_file, cache_dir, ray_instance, monkeypatch):
    monkeypatch.setenv("ARENA_THREADS", "1")  # Ray tasks get the driver's thread setting
    local, on_ray = tmp_path / "local.db", tmp_path / "ray.db"
    assert cli("tournament", spec_file, "--db", local, "--cache-dir", cache_dir).exit_code == 0
    result = cli("tournament", spec_file, "--db", on_ray, "--cache-dir", cache_dir, "--executor", "ray")
    assert result.exit_code == 0, result.output
    assert len(rows(on_ray)) == 4 and rows(on_ray) == rows(local)
    hosts = sqlite3.connect(on_ray).execute("SELECT provenance_json FROM matches").fetchall()
    assert all(json.loads(p)["cpu_threads"] == 1 for (p,) in hosts)


def test_a_broken_task_is_a_failed_match(tmp_path, cache_dir, ray_instance):
    from arena.executors import play_on_ray
    from engines.match import MatchEnvironment
    from engines.spec import MatchSpec
    from storage import open_database, queries

    db = str(tmp_path / "broken.db")
    engine = open_database(db)
    (match_id,) = queries.create_matches(engine, "b", [MatchSpec(device="cpu", query_budget=30).resolve()], {})
    queries.update_match(engine, match_id, config_json='{"attacker": "knockoff", "colour": "red"}')
    (status,) = play_on_ray(db, [match_id], MatchEnvironment(cache_root=cache_dir))
    match = queries.get_match(engine, match_id)
    assert status == "failed" and match.status == "failed"
    assert match.error.startswith("Ray task failed") and "colour" in match.error


def test_cancelling_a_running_match_cancels_its_task(tmp_path, cache_dir, ray_instance):
    from arena.executors import play_on_ray
    from engines.match import MatchEnvironment
    from engines.spec import MatchSpec
    from storage import open_database, queries

    db = str(tmp_path / "cancel.db")
    engine = open_database(db)
    long = MatchSpec(device="cpu", attacker="dfme", query_budget=2_000_000,
                     attacker_params={"batch_size": 16, "generator_width": 8, "nz": 16},
                     victim={"train": {"epochs": 1, "batch_size": 128}}).resolve()  # fmt: skip
    (match_id,) = queries.create_matches(engine, "c", [long], {})
    outcome = {}
    driver = threading.Thread(
        target=lambda: outcome.update(status=play_on_ray(db, [match_id], MatchEnvironment(cache_root=cache_dir)))
    )
    driver.start()
    deadline = time.monotonic() + 180
    while queries.get_match(engine, match_id).phase != "attacking" and time.monotonic() < deadline:
        time.sleep(0.2)  # polling a condition, with a deadline
    assert queries.request_cancel(engine, match_id)
    driver.join(timeout=180)
    assert not driver.is_alive()
    assert outcome["status"] == ["cancelled"] and queries.get_match(engine, match_id).status == "cancelled"


def test_unreachable_or_malformed_ray_address_is_one_line(cli, tmp_path, spec_file):
    db = tmp_path / "never.db"
    for address in ("127.0.0.1:1", "no-port-here"):
        result = cli("tournament", spec_file, "--db", db, "--executor", "ray", "--ray-address", address)
        assert result.exit_code == 2, result.output
        assert len(result.stderr.strip().splitlines()) == 1 and "Ray" in result.stderr
    assert not db.exists()
