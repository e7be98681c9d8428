"""Start matches from the UI without torch in the UI process.

1. `check_form` validates what is cheap (integers, label mode supported by the attacker,
   device syntax) and returns errors per field, for inline display.
2. `enqueue` runs `python -m arena.cli run ... --enqueue --format json` in a child process:
   the same validation and queueing as `arena run`. Its stdout is one JSON object: the queued
   `{"batch_id", "match_ids"}`, or (exit status 2, bad input) `{"error": {"field", "message"}}`,
   which comes back as a `FormError` under the form field for that MatchSpec field.
3. `start_worker` starts `python -m arena.cli worker --match ID` in its own session, so closing
   the UI (or its terminal) does not stop the match.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from arena.tui.catalog import Catalog

DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
FIELDS = ("defender", "attacker", "dataset", "pool", "label_mode", "budget", "seed", "device")
# The form field that shows an error about a MatchSpec field (its first dotted part); the
# parameters come from the run config and are shown under the entry they configure.
FORM_FIELD = {
    **{name: name for name in FIELDS},
    "query_budget": "budget",
    "defender_params": "defender",
    "attacker_params": "attacker",
}


@dataclass(frozen=True)
class Settings:
    """Where children read and write: passed explicitly so they match the UI's view."""

    db_url: str
    data_root: str
    cache_dir: str
    run_config: str | None = None  # optional TOML of MatchSpec fields under the form's choices
    log_dir: str | None = None  # worker stdout/stderr (default: <cache_dir>/tui-logs)
    worker_nice: int = 10  # workers yield the CPU to the UI (and to you) when both want it

    def worker_log(self, match_id: int) -> Path:
        folder = Path(self.log_dir or Path(self.cache_dir) / "tui-logs")
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"match-{match_id}.log"


@dataclass(frozen=True)
class MatchForm:
    defender: str
    attacker: str
    dataset: str
    pool: str
    label_mode: str
    budget: str  # as typed; empty means the attacker's default
    seed: str
    device: str


class FormError(Exception):
    """A refused form: `field` is the form field to show it under (None: the whole form)."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


def check_form(form: MatchForm, catalog: Catalog) -> dict[str, str]:
    """Cheap checks, field -> message. Names come from menus, but a stale catalog could differ."""
    errors: dict[str, str] = {}
    for name, known in (
        ("defender", catalog.defenders),
        ("attacker", catalog.attackers),
        ("dataset", catalog.datasets),
    ):
        if getattr(form, name) not in known:
            errors[name] = f"choose a {name} from the list"
    if form.pool not in catalog.pools():
        errors["pool"] = "choose in-distribution or a data set"
    attacker = catalog.attackers.get(form.attacker)
    if attacker is not None and form.label_mode not in attacker.label_modes:
        errors["label_mode"] = f"{form.attacker} supports {', '.join(attacker.label_modes)}"
    if form.budget.strip():
        budget = _int(form.budget)
        if budget is None or budget <= 0:
            errors["budget"] = "a whole number of queries above 0 (empty: the attacker's default)"
    seed = _int(form.seed) if form.seed.strip() else 0
    if seed is None or seed < 0:
        errors["seed"] = "a whole number, 0 or more"
    if not DEVICE_RE.match(form.device):
        errors["device"] = "auto, cpu, cuda or cuda:N"
    return errors


def _int(text: str) -> int | None:
    try:
        return int(text.strip())
    except ValueError:
        return None


def run_command(form: MatchForm, settings: Settings) -> list[str]:
    """The `arena run --enqueue` command line for a checked form."""
    seed = _int(form.seed) if form.seed.strip() else 0
    args = [
        sys.executable,
        "-m",
        "arena.cli",
        "run",
        "--enqueue",
        "--format",
        "json",
        "--defender",
        form.defender,
        "--attacker",
        form.attacker,
        "--dataset",
        form.dataset,
        "--pool",
        form.pool,
        "--label",
        form.label_mode,
        "--seed",
        str(seed),
        "--device",
        form.device,
        "--db",
        settings.db_url,
        "--data-root",
        settings.data_root,
        "--cache-dir",
        settings.cache_dir,
    ]
    if form.budget.strip():
        args += ["--budget", str(_int(form.budget))]
    if settings.run_config:
        args += ["--config", settings.run_config]
    return args


def form_field(spec_field: str | None) -> str | None:
    """The form field for an error's MatchSpec field or option (None: the whole form)."""
    return FORM_FIELD.get(spec_field.split(".")[0]) if spec_field else None


def read_reply(returncode: int, stdout: str, stderr: str) -> int:
    """The match id from `arena run --enqueue --format json`'s stdout, or a FormError."""
    try:
        reply = json.loads(stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        reply = None
    if isinstance(reply, dict) and "error" in reply:
        error = reply["error"]
        raise FormError(error["message"], form_field(error.get("field")))
    if returncode == 0 and isinstance(reply, dict) and reply.get("match_ids"):
        return int(reply["match_ids"][0])
    last = (stderr.strip().splitlines() or [f"exit status {returncode}, no reply"])[-1]
    raise FormError(f"`arena run --enqueue` failed: {last.removeprefix('error: ')}")


def enqueue(form: MatchForm, settings: Settings, timeout: float = 600.0) -> int:
    """Validate fully and queue the match in a child process; returns its id or raises FormError."""
    try:
        done = subprocess.run(
            run_command(form, settings), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        raise FormError(f"`arena run --enqueue` took over {timeout:.0f} s; try again") from None
    return read_reply(done.returncode, done.stdout, done.stderr)


def start_worker(match_id: int, settings: Settings) -> subprocess.Popen:
    """A detached `arena worker --match ID`: survives the UI and its terminal.

    It runs at a lower CPU priority (nice +10): on a machine where it trains on every core,
    the screen still redraws within a frame or two of a keypress. Its speed is unchanged
    when nothing else wants the CPU."""
    log = open(settings.worker_log(match_id), "ab")
    try:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "arena.cli",
                "worker",
                "--match",
                str(match_id),
                "--db",
                settings.db_url,
                "--data-root",
                settings.data_root,
                "--cache-dir",
                settings.cache_dir,
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            close_fds=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    finally:
        log.close()
    if settings.worker_nice and hasattr(os, "setpriority"):
        try:  # set before torch starts its threads, which inherit it
            os.setpriority(os.PRIO_PROCESS, process.pid, settings.worker_nice)
        except OSError:
            pass  # not permitted here: the match runs at normal priority
    return process
