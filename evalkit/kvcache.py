"""The KV cache under the name each transformers line gives it.

transformers 5.24 renamed the cache argument and output field from ``past_key_values`` to
``cache`` (the old name still works until 5.40, with a warning); 4.x attention layers took
``past_key_value``; remote code keeps its own spelling. Code that hooks a forward must look
under every name: a hook reading only the old one sees no cache and silently computes a
different attention.
"""

from __future__ import annotations

import functools
import inspect

NAMES = ("cache", "past_key_values", "past_key_value")  # newest first


def cache_in(kwargs: dict):
    """The cache passed in a forward's keyword arguments, whatever its name (a transformers
    ``Cache`` under a name not yet known is found by its type); None if none."""
    for name in NAMES:
        if kwargs.get(name) is not None:
            return kwargs[name]
    try:
        from transformers.cache_utils import Cache
    except ImportError:
        return None
    return next((value for value in kwargs.values() if isinstance(value, Cache)), None)


def cache_out(output):
    """The cache a model's forward returned (``output.cache`` from 5.24 on, else
    ``output.past_key_values``); None if it returned none."""
    if hasattr(output, "cache"):  # never touch the old name there: reading it warns on 5.24+
        return output.cache
    return getattr(output, "past_key_values", None)


def cache_arg(model) -> str:
    """The keyword ``model``'s forward takes its cache under: ``cache`` on transformers 5.24+,
    ``past_key_values`` before it and in remote code (read once per model class: decoding asks
    at every token)."""
    return "cache" if _takes_cache(type(model).forward) else "past_key_values"


@functools.cache
def _takes_cache(forward) -> bool:
    return "cache" in inspect.signature(forward).parameters
