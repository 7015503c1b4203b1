"""What a task declares: its cells, options, metrics and columns, and :func:`register`.

A task (the :class:`evalkit.interfaces.Task` protocol) owns everything about itself:
its command-line options, its cells (the units the sweep orders, resumes and
reports), the fields that identify a cell, the columns of its rows, how a group of
cells is measured, and its metrics (an aggregation with a 95% interval, and how the
value is shown and drawn). The core (sweep, results, compare, plots, CLI) reads
these declarations and names no task. A new task is one module in ``tasks/`` that
calls :func:`register` (see docs/contributing.md).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from evalkit.errors import EvalkitError
from evalkit.registry import METRICS, OPTIONS, TASKS
from evalkit.schema import COLUMN_TYPES


@dataclass(frozen=True)
class Cell:
    task: str
    length: int
    sample: int
    depth: float | None = None
    doc: str = ""


@dataclass(frozen=True)
class Sharing:
    """How far the cells of one method may share work, decided by the sweep and passed to
    :meth:`Task.group`: ``prefix`` — one forward over the longest length may serve every
    length (the method and the checkpoint are length-independent); ``kv`` — retrieval trials
    may start from another trial's KV cache: "lengths" (across lengths), "length" (within one
    length) or "" (never)."""

    prefix: bool = False
    kv: str = ""


@dataclass
class Measured:
    """A measured row and what it carries beside it: ``profile``, (start, end, mean NLL) per
    bucket of positions, written to positions.csv before the row itself (which commits the cell)."""

    row: dict
    profile: list = field(default_factory=list)


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


@dataclass(frozen=True)
class Option:
    """A setting of one or more tasks, given on the command line as ``--name-with-dashes``.

    ``parse`` turns one command-line text into a value (a list option takes comma lists
    and repeats); ``check`` raises :class:`EvalkitError` for a value that makes no sense.
    An option in a task's ``identity`` is recorded in its rows; rows written before the
    option existed read as its ``default``."""

    name: str
    help: str
    default: object = None
    parse: Callable = str
    many: bool = False  # a tuple of values (comma lists, repeated)
    flag: bool = False  # a switch: --name turns it on
    check: Callable | None = None  # value -> None, or raises EvalkitError
    metavar: str = ""

    @property
    def flag_name(self) -> str:
        return "--" + self.name.replace("_", "-")

    def validate(self, value):
        if self.many:
            value = tuple(dict.fromkeys(value))  # each value once, in the order given
            if not value:
                raise EvalkitError(f"{self.flag_name} was given an empty list", "give at least one value")
        if self.check is not None:
            self.check(value)
        return value


def register(task):
    """Add a task, its options, columns and metrics. A task declares:

    - ``name``, ``summary`` (one line for ``evalkit tasks``), ``default`` (run when --task
      is not given), ``min_length``;
    - ``options``: the :class:`Option` s it reads (``ctx.cfg.opt(name)``);
    - ``identity``: the row fields beyond the common ones that identify its cells: cell
      fields (``depth``), ``seed``, or option names;
    - ``columns``: {name: type} of the fields its rows add (float columns that are not
      finite mark an ok row as ``nan``); options in ``identity`` are columns by themselves;
    - ``metrics``; ``profile`` (True: it yields :class:`Measured` rows with a positions.csv profile);
    - ``cells(ctx, lengths)``, ``group(ctx, cell, sharing)``, ``measure(ctx, cells)`` (see
      :class:`evalkit.interfaces.Task`).
    """
    for option in task.options:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", option.name):  # it becomes a Python parameter and a column
            raise ValueError(f"task {task.name}: option {option.name!r} must be lower-case letters, digits and _")
        if option.name in OPTIONS and OPTIONS.get(option.name) is not option:
            raise ValueError(f"task option {option.name!r} is declared twice with different meanings")
        if option.name not in OPTIONS:
            OPTIONS.add(option.name, option)
    known = {o.name for o in task.options} | {"depth", "seed"}
    stray = [f for f in task.identity if f not in known]
    if stray:
        raise ValueError(f"task {task.name}: identity fields {stray} are neither options nor cell fields")
    for column, kind in columns_of(task).items():
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", column):  # what results files accept as a column name
            raise ValueError(f"task {task.name}: column {column!r} must be lower-case letters, digits and _")
        if COLUMN_TYPES.setdefault(column, kind) is not kind:
            raise ValueError(f"task {task.name}: column {column!r} has another type in another task")
    TASKS.add(task.name, task)
    for metric in task.metrics:
        METRICS.add(metric.name, metric)
    return task


def columns_of(task) -> dict[str, type]:
    """The columns a task's rows add to the common ones (its identity options included)."""
    options = {o.name: o for o in task.options}
    out = dict(task.columns)
    for f in task.identity:
        if f in options:
            out.setdefault(f, type(options[f].default) if options[f].default is not None else str)
    return out


def default_tasks() -> tuple[str, ...]:
    return tuple(n for n, t in TASKS.items() if t.default)


def options_of(names) -> dict[str, Option]:
    """The options the given tasks read, by name."""
    return {o.name: o for n in names for o in TASKS.get(n).options}
