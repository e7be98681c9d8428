"""A real PostgreSQL server for tests, started from the Debian package's binaries.

The server runs as the `postgres` user (initdb refuses root) on a Unix socket in a temporary
folder, with no TCP port. Tests that need it skip, with the reason, where the binaries are
not installed (.ci/run installs them) or the tests do not run as root.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest


def _binary(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


class PostgresServer:
    def __init__(self):
        initdb, self.pg_ctl = _binary("initdb"), _binary("pg_ctl")
        if initdb is None or self.pg_ctl is None:
            pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
        if os.geteuid() != 0 or shutil.which("runuser") is None:
            pytest.skip("starting PostgreSQL as the postgres user needs root and runuser")
        pytest.importorskip("psycopg", reason="psycopg is not installed (pip install -e '.[postgres]')")
        self.base = Path(tempfile.mkdtemp(prefix="arena-pg-", dir="/tmp"))
        self.data, self.socket = self.base / "data", self.base / "sock"
        self.socket.mkdir()
        shutil.chown(self.base, "postgres")
        shutil.chown(self.socket, "postgres")
        self._as_postgres(initdb, "-D", str(self.data), "-A", "trust", "-U", "arena", "--no-sync")
        options = f"-k {self.socket} -c listen_addresses='' -c fsync=off"
        self._as_postgres(self.pg_ctl, "-D", str(self.data), "-o", options, "-l", str(self.base / "log"), "-w", "start")

    def _as_postgres(self, *command: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *command], check=True, capture_output=True, timeout=120)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://arena@/{database}?host={self.socket}"

    def new_database(self) -> str:
        """A fresh, empty database on this server; returns its SQLAlchemy URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(f"host={self.socket} user=arena dbname=postgres", autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", self.pg_ctl, "-D", str(self.data), "-m", "immediate",
                        "stop"], capture_output=True, timeout=60)  # fmt: skip
        shutil.rmtree(self.base, ignore_errors=True)
