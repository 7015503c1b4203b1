"""Tasks: one module each, one registry.

A task turns the run's settings into :class:`Cell` s (the units the sweep
orders, resumes and reports) and measures groups of cells into result rows.
"""
from __future__ import annotations

from dataclasses import dataclass

from evalkit.registry import Registry


@dataclass(frozen=True)
class Cell:
    task: str
    length: int
    sample: int
    depth: float | None = None
    doc: str = ""


TASKS: Registry = Registry("task")


def register(task):
    TASKS.add(task.name, task)
    return task


from evalkit.tasks import passkey, perplexity  # noqa: E402,F401  (register themselves)
