"""Registries: a name -> entry map per kind of thing, and the ones evalkit keeps.

Each registry rejects duplicates, suggests close names for unknown ones and
*discovers its plugins*: on first read it imports the plugin modules named for it
— ``package`` (the package imports its modules) or ``package:pattern`` (every
module of the package whose name matches the shell pattern) — so the core reads a
registry without importing, or naming, any plugin, and a new plugin is one new
file (see docs/contributing.md): ``tasks/<name>.py``, ``patches/methods_<name>.py``,
``patches/<family>_models.py``, ``evalkit/sinks/<name>.py``.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import pkgutil
from collections.abc import Iterator
from typing import Generic, TypeVar

from evalkit.errors import EvalkitError

T = TypeVar("T")


class Registry(Generic[T]):
    """One registry per kind of thing (methods, tasks, families, sinks, ...)."""

    def __init__(self, kind: str, plugins: tuple[str, ...] = ()):
        self.kind = kind
        self.plugins = plugins  # packages whose import registers the entries
        self._entries: dict[str, T] = {}
        self._discovered = not plugins

    def _discover(self) -> None:
        if not self._discovered:
            self._discovered = True  # before importing: a plugin may read the registry while it registers
            for plugin in self.plugins:
                package, _, pattern = plugin.partition(":")
                module = importlib.import_module(package)
                if pattern:
                    for found in sorted(m.name for m in pkgutil.iter_modules(module.__path__)):
                        if fnmatch.fnmatch(found, pattern):
                            importlib.import_module(f"{package}.{found}")

    def add(self, name: str, entry: T) -> T:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> T:
        self._discover()
        if name in self._entries:
            return self._entries[name]
        close = difflib.get_close_matches(name, list(self._entries), n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise EvalkitError(
            f"unknown {self.kind} {name!r}",
            f"{hint}known: {', '.join(self._entries)}",
        )

    def __contains__(self, name: object) -> bool:
        self._discover()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        self._discover()
        return iter(list(self._entries))

    def __len__(self) -> int:
        self._discover()
        return len(self._entries)

    def items(self):
        self._discover()
        return list(self._entries.items())

    def names(self) -> list[str]:
        self._discover()
        return list(self._entries)

    def values(self):
        self._discover()
        return list(self._entries.values())


# the registries evalkit keeps (entries: see evalkit.interfaces)
TASKS: Registry = Registry("task", ("evalkit.tasks",))
METRICS: Registry = Registry("metric", ("evalkit.tasks",))
OPTIONS: Registry = Registry("task option", ("evalkit.tasks",))
METHODS: Registry = Registry("method", ("evalkit.patches:methods*",))  # tables only: listing them needs no torch
INSTALLERS: Registry = Registry("installer", ("evalkit.patches:*_models",))
FAMILIES: Registry = Registry("family", ("evalkit.families",))
SINKS: Registry = Registry("row sink", ("evalkit.sinks",))
