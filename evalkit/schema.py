"""The results schema: the columns every row has, a cell's identity, and how values are written.

``results.csv`` holds one row per measured unit; each row carries the configuration
that produced it. The common columns are below; each task adds its own (its
``columns`` and identity options), and each method parameter marked ``column``
(the factors) has a column of its own. Schema versions (the ``schema_version``
column; rows without one are version 1, evalkit <= 0.3):

- 2: ``prefix_mode`` (0.3 wrote 1 for every group of several cells, which said
  nothing true) is replaced by ``shared``: how the row's computation was shared
  (:data:`SHARED`). Version-1 rows are read as version 2 by :func:`upgrade`.
"""

from __future__ import annotations

from evalkit.registry import METHODS, TASKS

SCHEMA_VERSION = 2
# how a row's computation was shared with other rows (the ``shared`` column)
SHARED = {
    "none": "its own computation",
    "prefix-forward": "one forward at the longest length served every length of the document, its time split "
    "evenly over those rows",
    "shared-kv": "the trial started from another trial's KV cache, reused counting the prompt tokens it took",
}
# the factor columns (method parameters recorded in columns of their own): filled in by the methods' registry
FACTORS: list[str] = []
# columns every row has, written by the sweep (the factors go after ``method``); a task adds its own
_COMMON = {
    "model": str,
    "method": str,
    "params": str,
    "rope_scaling": str,
    "adapter": str,
    "quantize": str,
    "trained_len": int,
    "task": str,
    "length": int,
    "depth": float,
    "sample": int,
    "seconds": float,
    "peak_mem_mb": float,
    "device": str,
    "dtype": str,
    "seed": int,
    "status": str,
    "evalkit_version": str,
    "evalkit_commit": str,
    "created_at": str,
    "shared": str,
    "schema_version": int,
    "source": str,
    "error": str,
    "transformers_version": str,
    "torch_version": str,
}
CORE_COLUMNS: dict[str, type] = {}  # _COMMON with the factors, once the methods are registered
COLUMN_TYPES: dict[str, type] = {}  # the core columns, then every task's (evalkit.task.register adds them)
# A results file is evalkit's when its header names these (every version wrote them); its
# other columns may be any the tasks declare, in any order: a file read back gives every
# column of its header and every column known now ("" where it has none), and appending a
# row with a column the file lacks first rewrites the file with that column added.
REQUIRED = ["model", "method", "task", "length", "sample", "status", "evalkit_version", "created_at"]
RESULTS, PROFILE = "results.csv", "positions.csv"


def add_factor(name: str) -> None:
    """Record method parameter ``name`` in a column of its own (called by the methods' registry)."""
    if name not in FACTORS:
        FACTORS.append(name)
        _rebuild()


def _rebuild() -> None:
    common = list(_COMMON.items())
    at = [k for k, _ in common].index("method") + 1
    core = dict(common[:at] + [(f, float) for f in FACTORS] + common[at:])
    tasks = {k: v for k, v in COLUMN_TYPES.items() if k not in CORE_COLUMNS}
    CORE_COLUMNS.clear()
    CORE_COLUMNS.update(core)
    COLUMN_TYPES.clear()
    COLUMN_TYPES.update(core)
    COLUMN_TYPES.update(tasks)


_rebuild()


def identity() -> list[str]:
    """A cell's common identity: everything that changes its result. Resume, --force, compare's
    pooling and the run summary all use this one definition; each task adds its own fields
    (``identity``: passkey its depth, seed and chat template, perplexity its data, ...).
    ``params``: the method's parameters fixed for the sweep; a row written before a parameter
    existed reads as its default. ``rope_scaling``: the checkpoint's own RoPE."""
    METHODS.names()  # the factors are declared by the methods
    return [
        "model",
        "source",
        "adapter",
        "quantize",
        "method",
        *FACTORS,
        "params",
        "rope_scaling",
        "trained_len",
        "task",
        "length",
        "sample",
    ]


def fmt(value) -> str:
    """How a value is written, so that keys read back compare equal."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.8g}"
    # a lone carriage return would end an unquoted CSV field: keep it visible instead
    return str(value).replace("\r", "\\r")


def result_columns() -> list[str]:
    """The columns evalkit writes now: the common ones, then each registered task's."""
    TASKS.names()
    METHODS.names()
    return list(COLUMN_TYPES)


def profile_task():
    """The task whose rows carry a per-position profile (positions.csv), or None."""
    return next((t for t in TASKS.values() if getattr(t, "profile", False)), None)


def profile_columns() -> list[str]:
    task = profile_task()
    return list(task.profile_columns) if task else []


def profile_required() -> list[str]:
    task = profile_task()
    return list(task.profile_required) if task else []


def upgrade(row: dict) -> dict:
    """A row as the current schema reads it: a version-1 row's ``prefix_mode`` becomes ``shared``
    (1 with ``reused`` > 0: shared-kv; 1 without a ``reused`` value: a prefix forward; else none)."""
    if row.get("shared") or not row.get("prefix_mode"):
        return row
    reused = str(row.get("reused") or "")
    if row["prefix_mode"] != "1" or reused == "0":
        shared = "none"
    else:
        shared = "shared-kv" if reused else "prefix-forward"
    return {**row, "shared": shared}
