"""Tiny matches whose checkpoints are stored in tests/data/reference_runs.json.

The stored numbers were printed by the code before the training-loop refactor; the test in
test_reference_runs.py replays the same specs and asks for the same checkpoints, so a change
that silently alters training (a different RNG draw, another loss reduction) fails it.
Regenerate only on a deliberate change of numbers: `python -m tests.reference_runs`.

Deliberate changes so far: the KnockoffNets clone recipe chosen on the validation split
(benchmarks/knockoff_recipe.py: 60 epochs, cosine, `augment` on; was 30 epochs, no
augmentation) moved the entries that train with the KnockoffNets defaults (knockoff-soft,
knockoff-hard, knockoff-adaptive, argmax-clone, misleader/knockoff-soft): their specs pin
`epochs` and `min_steps` but not `augment`, so their clones now see the jitter. Only those
five entries were replayed and rewritten; the others are untouched.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

TINY_VICTIM = {"arch": None, "train": {"epochs": 2, "batch_size": 128, "lr": 0.05}}
KO = {"epochs": 1, "min_steps": 4}
DFMS = {"proxy_size": 64, "gan_steps": 3, "gan_width": 4, "batch_size": 8, "warmup_epochs": 1, "nz": 8}
ACTIVE = {"iterations": 3, "epochs": 2, "min_steps": 4, "patience": 2}

# name -> spec fields (the victim is always TINY_VICTIM, CPU, 4 checkpoints)
REFERENCE_SPECS = {
    "undefended/knockoff-soft": dict(
        attacker="knockoff", label_mode="soft", query_budget=60, attacker_params={"epochs": 2, "min_steps": 10}
    ),
    "undefended/knockoff-hard": dict(
        attacker="knockoff", label_mode="hard", query_budget=60, attacker_params={"epochs": 2, "min_steps": 10}
    ),
    "undefended/knockoff-adaptive": dict(attacker="knockoff-adaptive", query_budget=50, attacker_params=KO),
    "undefended/jbda": dict(
        attacker="jbda",
        label_mode="hard",
        query_budget=75,
        attacker_params={"num_seeds": 10, "epochs_per_round": 1, "min_steps_per_round": 2},
    ),
    "undefended/activethief-kcenter": dict(attacker="activethief-kcenter", query_budget=60, attacker_params=ACTIVE),
    "undefended/dfme": dict(
        attacker="dfme",
        query_budget=3 * 16 * 7 + 10,
        attacker_params={"batch_size": 16, "generator_width": 8, "nz": 16},
    ),
    "undefended/maze": dict(
        attacker="maze",
        query_budget=8 * (3 + 4) * 2 + 5,
        attacker_params={"batch_size": 8, "ndirs": 2, "generator_width": 4, "nz": 8, "iter_exp": 2},
    ),
    "undefended/dfms-hl": dict(attacker="dfms-hl", label_mode="hard", query_budget=61, attacker_params=DFMS),
    "undefended/dfms-sl": dict(attacker="dfms-sl", query_budget=61, attacker_params={**DFMS, "proxy": "pool"}),
    "undefended/argmax-clone": dict(attacker="argmax-clone", query_budget=40, attacker_params=KO),
    "misleader/knockoff-soft": dict(
        defender="misleader",
        attacker="knockoff",
        query_budget=40,
        defender_params={"epochs": 2, "batch_size": 32, "train_limit": 96},
        attacker_params={"epochs": 2, "min_steps": 10},
    ),
}
STORED = Path(__file__).parent / "data" / "reference_runs.json"


def play_reference(name: str, cache_root: str) -> list[dict]:
    """Checkpoint rows (plain dicts, wall-clock fields dropped) of one reference spec."""
    import torch

    from engines.match import MatchEnvironment, MatchObserver, play_match
    from engines.spec import MatchSpec

    torch.set_num_threads(1)
    spec = MatchSpec(device="cpu", victim=TINY_VICTIM, checkpoints=4, **REFERENCE_SPECS[name]).resolve()
    rows: list[dict] = []

    class Collect(MatchObserver):
        def checkpoint(self, row) -> None:
            data = row if isinstance(row, dict) else row.as_dict()
            rows.append(
                {
                    k: data[k]
                    for k in (
                        "queries_used",
                        "clone_accuracy",
                        "best_clone_accuracy",
                        "fidelity_served",
                        "fidelity_victim",
                    )
                }
            )

    play_match(spec, Collect(), MatchEnvironment(cache_root=cache_root))
    return rows


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as cache:
        stored = {name: play_reference(name, cache) for name in REFERENCE_SPECS}
    STORED.write_text(json.dumps(stored, indent=1) + "\n")
    print(f"wrote {len(stored)} reference runs to {STORED}", file=sys.stderr)
