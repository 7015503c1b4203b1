"""evalkit: context-length extrapolation evaluation for LLMs.

    import evalkit
    with evalkit.patched(model, "yarn", scale=4, trained_len=4096):
        ...

The flow: load a model (:mod:`evalkit.loading`) → patch it (:mod:`evalkit.patching`, the
methods in ``patches/``) → plan cells (:mod:`evalkit.plan`, the tasks in ``tasks/``) →
measure (:mod:`evalkit.sweep`) → rows (:mod:`evalkit.results`, :mod:`evalkit.sinks`) →
compare / plot / report.
"""

from __future__ import annotations

from evalkit.errors import EvalkitError
from evalkit.loading import load_model
from evalkit.patching import patched
from evalkit.version import __version__

__all__ = ["__version__", "patched", "load_model", "EvalkitError"]
