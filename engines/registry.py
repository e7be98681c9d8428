"""Name -> class registries with automatic discovery of plug-in modules.

A defender, attacker, data set or model registers itself with a decorator in its own module;
`Registry.discover()` imports every module of the owning package once, so adding a new one is
a single new file.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from engines.errors import ArenaError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, package: str, field: str | None = None):
        self.kind = kind  # e.g. "defender", used in error messages
        self.field = field or kind.replace(" ", "")  # the MatchSpec field that names an entry
        self.package = package  # modules of this package are imported on first lookup
        self._entries: dict[str, T] = {}
        self._discovered = False

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj:
                raise RuntimeError(f"{self.kind} {name!r} registered twice")
            self._entries[name] = obj
            try:
                obj.name = name  # type: ignore[attr-defined]
            except (AttributeError, TypeError):
                pass
            return obj

        return decorator

    def discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        pkg = importlib.import_module(self.package)
        for info in pkgutil.iter_modules(pkg.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{self.package}.{info.name}")

    def get(self, name: str) -> T:
        self.discover()
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "none"
            raise ArenaError(
                f"unknown {self.kind} {name!r}; choose one of: {known} (see `arena list`)", field=self.field
            ) from None

    def names(self) -> list[str]:
        self.discover()
        return sorted(self._entries)

    def items(self) -> Iterator[tuple[str, T]]:
        self.discover()
        for name in sorted(self._entries):
            yield name, self._entries[name]

    def __contains__(self, name: str) -> bool:
        self.discover()
        return name in self._entries
