"""The same seed gives the same checkpoints as the stored run (tests/data/reference_runs.json).

Refactors of training, attacks or scoring must keep numbers bit-identical on CPU; a change
that is meant to move them regenerates the file (`python -m tests.reference_runs`) and says
why in its commit.
"""

import json

import pytest

from tests.reference_runs import REFERENCE_SPECS, STORED, play_reference

STORED_RUNS = json.loads(STORED.read_text())


def test_every_reference_spec_is_stored():
    assert sorted(STORED_RUNS) == sorted(REFERENCE_SPECS)


@pytest.mark.parametrize("name", sorted(REFERENCE_SPECS))
def test_replay_matches_the_stored_checkpoints(name, cache_dir):
    assert play_reference(name, cache_dir) == STORED_RUNS[name]
