"""A name -> entry map that rejects duplicates and suggests close names."""
from __future__ import annotations

import difflib
from typing import Generic, Iterator, TypeVar

from evalkit.errors import EvalkitError

T = TypeVar("T")


class Registry(Generic[T]):
    """One registry per kind of thing (methods, tasks, model aliases)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> T:
        if name in self._entries:
            return self._entries[name]
        close = difflib.get_close_matches(name, list(self._entries), n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise EvalkitError(
            f"unknown {self.kind} {name!r}",
            f"{hint}known: {', '.join(self._entries)}",
        )

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def items(self):
        return self._entries.items()

    def names(self) -> list[str]:
        return list(self._entries)

    def values(self):
        return list(self._entries.values())
