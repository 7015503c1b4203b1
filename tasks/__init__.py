"""Tasks: one module each, one registry.

A task turns the run's settings into :class:`Cell` s (the units the sweep
orders, resumes and reports) and measures groups of cells into result rows.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from evalkit.registry import Registry


@dataclass(frozen=True)
class Cell:
    task: str
    length: int
    sample: int
    depth: float | None = None
    doc: str = ""


@dataclass(frozen=True)
class Metric:
    """How a task's rows become one table cell: its value and 95% interval, and how it is shown.
    ``compare --metric NAME`` and ``evalkit plot`` find it here; the core names no metric."""

    name: str
    task: str  # the task whose rows it reads
    title: str  # table title; figure axis
    aggregate: Callable  # ok rows (DataFrame) -> (value, (low, high) or None)
    percent: bool = False  # shown as a percentage (accuracy)
    relative: str = "ratio"  # against --baseline: "ratio" or "difference" (percentage points)
    log_axis: bool = False  # figures on a log scale
    primary: bool = True  # shown by default by compare and drawn by plot


TASKS: Registry = Registry("task")
METRICS: Registry[Metric] = Registry("metric")


def register(task):
    """Add a task and its metrics. A task declares: ``name``, ``summary``, ``identity`` (the
    row fields beyond the common ones that identify its cells), ``min_length``, ``default``
    (run when --task is not given), ``metrics``, ``profile`` (writes positions.csv rows),
    and ``cells`` / ``group`` / ``measure`` (see the sweep)."""
    TASKS.add(task.name, task)
    for metric in task.metrics:
        METRICS.add(metric.name, metric)
    return task


def default_tasks() -> tuple[str, ...]:
    return tuple(n for n, t in TASKS.items() if t.default)


from evalkit.tasks import perplexity, passkey  # noqa: E402,F401,I001  (register themselves, in this order)
