"""The interfaces plugins implement, each a :class:`typing.Protocol`.

The core (config, plan, sweep, results, compare, plots, report) reaches tasks,
methods, families and sinks only through these and the registries of
:mod:`evalkit.registry`; it names none of them. The concrete helpers live beside
the protocol's users: :mod:`evalkit.task` (Cell, Option, Metric, Sharing, Measured),
:mod:`evalkit.method` (Method, Param, MethodCall), :mod:`evalkit.family` (Family).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Task(Protocol):
    """A task: its cells, how cells may share work, how they are measured, its columns and options.

    ``identity`` names the row fields beyond the common ones that identify a cell (cell fields
    such as ``depth``, ``seed``, or option names); ``columns`` the fields its rows add, with
    their types; ``metrics`` how rows become table cells; ``profile`` whether rows carry a
    per-position profile (then ``profile_columns``/``profile_required``/``profile_key`` give
    positions.csv's layout). Registered with :func:`evalkit.task.register`."""

    name: str
    summary: str
    default: bool  # run when --task is not given
    min_length: int
    identity: tuple[str, ...]
    options: tuple  # evalkit.task.Option, read as ctx.cfg.opt(name)
    columns: Mapping[str, type]
    metrics: tuple  # evalkit.task.Metric
    profile: bool

    def cells(self, ctx, lengths: list[int]) -> list:
        """The cells (evalkit.task.Cell) of this task at ``lengths``, in a fixed order; raise
        EvalkitError where a setting cannot work (before anything is measured)."""

    def group(self, ctx, cell, sharing) -> Any:
        """A key: cells with the same key are measured together. ``sharing``
        (evalkit.task.Sharing) says how far this method's cells may share work."""

    def measure(self, ctx, cells: list) -> list | Iterator[tuple[int, Any]]:
        """Rows (dicts or evalkit.task.Measured) for ``cells``: a list in the cells' order, or
        (cell index, row) pairs yielded as each is measured. A row may set ``status``,
        ``error`` and ``shared`` (how its computation was shared: evalkit.schema.SHARED)."""


@runtime_checkable
class Method(Protocol):
    """A scaling method (evalkit.method.Method): its parameters and their validation, whether it
    is static (position i's output does not depend on the sequence length), and what it
    installs: RoPE frequencies (``rope``), ALiBi slopes (``slopes``) or an attention hook
    (``attention``). Registered with :func:`evalkit.method.register`."""

    name: str
    encoding: str  # rope | alibi | any
    summary: str
    source: str  # the paper / code the formula comes from
    params: tuple  # evalkit.method.Param
    static: bool
    rope: Any
    slopes: Any
    attention: Any
    logn: bool
    check: Any  # values -> what is inconsistent among them, or None


@runtime_checkable
class Installer(Protocol):
    """How one family's models are patched (patches/rope_models.py, patches/alibi_models.py):
    find its rotary or ALiBi modules, read its trained length and shipped scaling, install a
    method into an ExitStack (leaving the stack restores the exact originals)."""

    name: str
    encoding: str

    def matches(self, model) -> bool: ...

    def trained_len(self, model, rope_reset: bool = False) -> int: ...

    def shipped_type(self, model) -> str: ...

    def length_independent(self, model, rope_reset: bool = False) -> bool: ...

    def after_load(self, model) -> None: ...

    def ensure_length(self, model, length: int) -> None: ...

    def install(self, model, method, resolved, stack: contextlib.ExitStack, rope_reset: bool = False) -> None: ...


@runtime_checkable
class Family(Protocol):
    """A model family (evalkit.family.Family, one line of evalkit/families.py): the config
    ``model_types`` it claims (and a ``when`` condition on the config), its position encoding,
    the installer that patches it, where its config states the trained length, and the
    upstream code it was checked against."""

    name: str
    model_types: tuple[str, ...]
    encoding: str
    adapter: str  # the Installer's name
    checked: str
    length_fields: tuple[str, ...]


@runtime_checkable
class RowSink(Protocol):
    """Where rows go besides results.csv (``--sink NAME``): made with the run's output folder,
    handed each committed batch of rows (the CSV's columns, values as Python objects), closed
    at the end of the run, also when it stops early."""

    name: str

    def __init__(self, folder: Path): ...

    def write(self, rows: Iterable[dict]) -> None: ...

    def close(self) -> None: ...
