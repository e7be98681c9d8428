import pytest
import torch

# One thread: small LeNet batches gain little from two, and OpenMP spin-waiting makes
# multi-threaded torch collapse when anything else shares the cores.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """One artifact cache for the whole session: the default victim trains once."""
    return str(tmp_path_factory.mktemp("arena-cache"))


@pytest.fixture(scope="session")
def mnist5k(cache_dir):
    from engines.data import load_dataset

    return load_dataset("mnist5k", "data", cache_dir)


@pytest.fixture
def cli():
    from typer.testing import CliRunner

    from arena.cli import app

    runner = CliRunner()

    def invoke(*args, **kwargs):
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=False, **kwargs)

    return invoke
