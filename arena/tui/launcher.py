"""Start matches from the UI without torch in the UI process.

1. `check_form` validates what is cheap (integers, label mode supported by the attacker,
   device syntax) and returns errors per field, for inline display.
2. `enqueue` runs `python -m arena.cli run ... --enqueue` in a child process: the same
   validation and queueing as `arena run`. Exit status 2 means bad input, reported as one line
   on stderr; it comes back as a `FormError` tied to the field it names.
3. `start_worker` starts `python -m arena.cli worker --match ID` in its own session, so closing
   the UI (or its terminal) does not stop the match.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from arena.tui.catalog import Catalog

DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
QUEUED_RE = re.compile(r"queued (\d+) match\(es\) (\d+)\.\.(\d+)")
FIELDS = ("defender", "attacker", "dataset", "pool", "label_mode", "budget", "seed", "device")
# Words in an `arena run` error line -> the form field it is about.
FIELD_HINTS = (
    ("--budget", "budget"),
    ("budget", "budget"),
    ("--label", "label_mode"),
    ("label", "label_mode"),
    ("pool", "pool"),
    ("device", "device"),
    ("data set", "dataset"),
    ("--seed", "seed"),
    ("defender", "defender"),
    ("attacker", "attacker"),
)


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


def field_for(message: str) -> str | None:
    lowered = message.lower()
    for word, name in FIELD_HINTS:
        if word in lowered:
            return name
    return None


def enqueue(form: MatchForm, settings: Settings, timeout: float = 600.0) -> int:
    """Validate fully and queue the match in a child process; returns its id or raises FormError."""
    try:
        done = subprocess.run(
            run_command(form, settings), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        raise FormError(f"`arena run --enqueue` took over {timeout:.0f} s; try again") from None
    lines = done.stderr.strip().splitlines()
    if done.returncode != 0:
        errors = [line.removeprefix("error: ") for line in lines if line.startswith("error: ")]
        message = errors[-1] if errors else (lines[-1] if lines else f"exit status {done.returncode}")
        raise FormError(message, field_for(message) if done.returncode == 2 else None)
    for line in lines:
        found = QUEUED_RE.search(line)
        if found:
            return int(found.group(2))
    raise FormError(f"could not read the match id from `arena run --enqueue`: {' / '.join(lines) or 'no output'}")


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
