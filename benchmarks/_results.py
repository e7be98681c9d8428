"""Shared helper: each benchmark owns one marked section of docs/results.md and rewrites
only that section, so several benchmarks can report into one file."""

from __future__ import annotations

import re
from pathlib import Path

RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results.md"
HEADER = "# Measured results\n\nEvery table here was printed by the benchmark command named above it.\n"


def write_section(name: str, markdown: str) -> Path:
    text = RESULTS.read_text() if RESULTS.exists() else HEADER
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    block = f"{begin}\n{markdown.rstrip()}\n{end}"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)
    return RESULTS
