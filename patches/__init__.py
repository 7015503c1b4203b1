"""Scaling methods and their installers (this folder is the package ``evalkit.patches``).

    with evalkit.patched(model, "ntk", alpha=2.0, trained_len=4096):
        logits = model(ids).logits
    with evalkit.patched(model, "self-extend:window=512,group=4"):
        ...

``methods.py`` holds the built-in methods (each beside its source, its formula
referenced by name); ``rope.py``, ``alibi.py`` and ``attention.py`` the maths as
pure functions; ``rope_models.py`` and ``alibi_models.py`` the installers that put
it into each model family and restore the exact originals when the block exits.
The registries import ``methods*.py`` (torch-free) when the methods are first read
and ``*_models.py`` when an installer is first needed, so a new method
(``methods_<name>.py``) or installer (``<family>_models.py``) is one new file.
"""

from __future__ import annotations

from evalkit.method import (
    MAX_FACTOR,
    Method,
    MethodCall,
    Param,
    Resolved,
    check_applicable,
    format_params,
    make_call,
    methods_for,
    normalise_params,
    params_label,
    parse_call,
    split_method_list,
)
from evalkit.patching import find_adapter, patched
from evalkit.registry import INSTALLERS, METHODS

__all__ = [
    "METHODS",
    "INSTALLERS",
    "MAX_FACTOR",
    "Method",
    "MethodCall",
    "Param",
    "Resolved",
    "check_applicable",
    "find_adapter",
    "format_params",
    "make_call",
    "methods_for",
    "normalise_params",
    "params_label",
    "parse_call",
    "patched",
    "split_method_list",
]
