"""Reversible attribute swaps, undone by an ExitStack in reverse order."""

from __future__ import annotations

import contextlib

_MISSING = object()


def swap(stack: contextlib.ExitStack, obj, name: str, value) -> None:
    """Set ``obj.name = value`` now and put back exactly what was there on exit:
    the same object, or no instance attribute at all (so a class method that an
    instance attribute shadowed is visible again)."""
    before = obj.__dict__.get(name, _MISSING)
    if before is _MISSING and hasattr(obj, "_modules") and name in obj._modules:
        before = obj._modules[name]
    setattr(obj, name, value)

    def restore():
        if before is _MISSING:
            delattr(obj, name)
        else:
            setattr(obj, name, before)

    stack.callback(restore)
