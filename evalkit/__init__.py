"""evalkit: context-length extrapolation evaluation for LLMs.

    import evalkit
    with evalkit.patched(model, "yarn", scale=4, trained_len=4096):
        ...
"""
from __future__ import annotations

__version__ = "0.4.0"

__all__ = ["__version__", "patched", "load_model", "EvalkitError"]


def __getattr__(name):  # keep `import evalkit` (and `evalkit --help`) free of torch
    if name == "patched":
        from evalkit.patching import patched
        return patched
    if name == "load_model":
        from evalkit.loading import load_model
        return load_model
    if name == "EvalkitError":
        from evalkit.errors import EvalkitError
        return EvalkitError
    raise AttributeError(name)
