"""Content-addressed cache of trained models and prepared data.

An artifact is stored under a key derived from everything that determines it (the caller
passes that as a JSON-able spec). Weights are safetensors files, never pickles, and each one
is checked against the SHA-256 recorded beside it: a corrupt or truncated artifact is
deleted and rebuilt, never trusted.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

log = logging.getLogger(__name__)


def artifact_key(kind: str, spec: dict) -> str:
    canonical = json.dumps({"kind": kind, "spec": spec}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class ArtifactStore:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def _paths(self, kind: str, key: str) -> tuple[Path, Path]:
        folder = self.root / kind
        return folder / f"{key}.safetensors", folder / f"{key}.json"

    @contextlib.contextmanager
    def lock(self, kind: str, key: str) -> Iterator[None]:
        """Process-wide lock so parallel workers build one artifact once."""
        folder = self.root / kind
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f"{key}.lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def load(self, kind: str, key: str) -> tuple[dict[str, torch.Tensor], dict] | None:
        """Return (tensors, metadata), or None when absent or corrupt (then it is removed)."""
        weights, meta_path = self._paths(kind, key)
        if not weights.exists() and not meta_path.exists():
            return None
        try:
            record = json.loads(meta_path.read_text())
            if record.get("sha256") != _sha256(weights):
                raise ValueError("checksum mismatch")
            tensors = load_file(str(weights))
            return tensors, record.get("meta", {})
        except Exception as exc:  # any damage means: rebuild
            log.warning("artifact %s/%s is corrupt (%s); rebuilding it", kind, key, exc)
            self.remove(kind, key)
            return None

    def save(self, kind: str, key: str, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        weights, meta_path = self._paths(kind, key)
        weights.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=weights.parent, prefix=".tmp-", suffix=".safetensors")
        os.close(fd)
        try:
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp)
            digest = _sha256(Path(tmp))
            os.replace(tmp, weights)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        record = {"sha256": digest, "created": time.time(), "meta": meta}
        _atomic_write_bytes(meta_path, json.dumps(record, indent=1, sort_keys=True).encode())

    def remove(self, kind: str, key: str) -> None:
        for path in self._paths(kind, key):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def get_or_build(
        self,
        kind: str,
        spec: dict,
        build: Callable[[], tuple[dict[str, torch.Tensor], dict]],
    ) -> tuple[dict[str, torch.Tensor], dict, bool]:
        """Load the artifact for `spec`, building and storing it first if needed.

        Returns (tensors, metadata, reused) where `reused` tells whether it came from cache.
        """
        key = artifact_key(kind, spec)
        with self.lock(kind, key):
            found = self.load(kind, key)
            if found is not None:
                return found[0], found[1], True
            tensors, meta = build()
            self.save(kind, key, tensors, meta)
            return tensors, meta, False
