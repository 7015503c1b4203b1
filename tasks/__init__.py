"""Tasks: one module each (this folder is the package ``evalkit.tasks``).

A task module declares a task (see :class:`evalkit.interfaces.Task`) and calls
:func:`evalkit.task.register`. Every module here is imported when the task
registry is first read, so a new task is one new file; the order below is only
the order ``evalkit tasks`` lists them in (modules not named follow by name).
"""

from __future__ import annotations

import importlib
import pkgutil

from evalkit.registry import METRICS, OPTIONS, TASKS
from evalkit.schema import COLUMN_TYPES, CORE_COLUMNS
from evalkit.task import Cell, Measured, Metric, Option, Sharing, columns_of, default_tasks, options_of, register

__all__ = [
    "TASKS",
    "METRICS",
    "OPTIONS",
    "COLUMN_TYPES",
    "CORE_COLUMNS",
    "Cell",
    "Measured",
    "Metric",
    "Option",
    "Sharing",
    "columns_of",
    "default_tasks",
    "options_of",
    "register",
]

LISTED = ("perplexity", "passkey", "niah", "niah_multikey", "niah_multivalue", "niah_multiquery", "lines")

for _name in (*LISTED, *sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name not in LISTED)):
    importlib.import_module(f"{__name__}.{_name}")
