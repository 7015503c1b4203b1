"""Tidy result CSVs: the schema, the cell identity, and writing them safely.

``results.csv`` holds one row per measured unit (a passkey trial, a document at
a length); ``positions.csv`` the per-position loss profile of perplexity rows.
evalkit writes only files it has identified as its own (:func:`_inspect`), cuts a
torn last record CSV-aware before appending (:class:`CsvAppender`), makes a folder
exactly-once again before a run (:func:`tidy`) and lets one run write a folder at
a time (:class:`FolderLock`). docs/reliability.md states the guarantees; the
columns and a cell's identity are :mod:`evalkit.schema`'s.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
import tempfile
from pathlib import Path

from evalkit.errors import EvalkitError
from evalkit.locks import FolderLock
from evalkit.method import normalise_params
from evalkit.registry import OPTIONS, TASKS
from evalkit.schema import (
    FACTORS,
    PROFILE,
    REQUIRED,
    RESULTS,
    fmt,
    identity,
    profile_columns,
    profile_required,
    profile_task,
    result_columns,
    upgrade,
)

logger = logging.getLogger(__name__)
# the identity of a row of a task this evalkit does not know (a newer evalkit's, a plugin not
# installed here): the cell fields, and the two settings 0.1 rows already had
FOREIGN_IDENTITY = ("depth", "seed", "data", "stride")


def identity_fields(task: str | None) -> list[tuple[str, str]]:
    """(field, what an empty value reads as) for the identity of a row of ``task``: a row written
    before an option existed has it empty and counts as the option's default. (For a task this
    evalkit does not know: the fields of :data:`FOREIGN_IDENTITY`.)"""
    extra = TASKS.get(task).identity if task in TASKS else FOREIGN_IDENTITY
    return [(k, "") for k in identity()] + [(k, _option_default(k)) for k in extra]


def _option_default(name: str) -> str:
    return fmt(OPTIONS.get(name).default) if name in OPTIONS else ""


def _value(row: dict, k: str, empty: str) -> str:
    if k == "params":
        return normalise_params(str(row.get("method") or ""), fmt(row.get(k)))
    if k == "rope_scaling":  # the shipped type follows from the checkpoint (source); only a reset is a setting
        return "removed" if fmt(row.get(k)).startswith("removed:") else ""
    return fmt(row.get(k)) or empty


def row_key(row: dict) -> tuple:
    return tuple((k, _value(row, k, empty)) for k, empty in identity_fields(row.get("task")))


def legacy(row: dict) -> bool:
    """Written by evalkit <= 0.2, which did not record whether the factors were given."""
    try:
        return tuple(int(x) for x in str(row.get("evalkit_version") or "").split(".")[:2]) < (0, 3)
    except ValueError:
        return False


def legacy_given(row: dict) -> str:
    """The ``params`` a legacy row has if its factors were given (``scale=2,alpha=2``)."""
    return ",".join(f"{c}={fmt(row.get(c))}" for c in FACTORS if fmt(row.get(c)))


def row_keys(row: dict) -> list[tuple]:
    """Every identity a row stands for: its own, and for a row of evalkit <= 0.2 with a factor also
    the reading "that factor was given" (``--scale 2``), so both kinds of rerun resume it."""
    keys = [row_key(row)]
    if legacy(row) and not fmt(row.get("params")) and legacy_given(row):
        keys.append(row_key(dict(row, params=legacy_given(row))))
    return keys


def profile_key(row: dict) -> tuple:
    """The cell a positions.csv row belongs to (only the profile task's cells have profiles); an
    empty option (a row written before it existed) reads as its default, as in :func:`row_key`."""
    return tuple(_value(row, k, _option_default(k)) for k in profile_fields())


def profile_fields() -> list[str]:
    """The fields of a positions.csv row that name its cell."""
    task = profile_task()
    return list(task.profile_key) if task else []


def __getattr__(name):  # the profile's columns are the profile task's (read when asked for)
    if name == "PROFILE_COLUMNS":
        return profile_columns()
    if name == "PROFILE_REQUIRED":
        return profile_required()
    if name == "PROFILE_KEY":
        return profile_fields()
    raise AttributeError(name)


def _complete_end(data: bytes) -> int:
    """Offset just past the last complete CSV record, read as Python's csv module reads it:
    a quote opens a quoted field only at the start of a field, ``""`` inside one is a quote,
    and a newline inside one (a passkey answer) does not end the record."""
    in_quotes, field_start, skip, end = False, 0, -1, 0
    for m in re.finditer(rb'[",\n]', data):
        p, ch = m.start(), m.group()
        if p == skip:
            continue
        if in_quotes:
            if ch == b'"':
                if data[p + 1 : p + 2] == b'"':
                    skip = p + 1  # an escaped quote
                else:
                    in_quotes = False
        elif ch == b'"':
            in_quotes = p == field_start  # elsewhere a quote is an ordinary character
        else:  # a comma or a newline ends a field
            field_start = p + 1
            if ch == b"\n":
                end = p + 1
    return end


def _inspect(path: Path, columns: list[str], required: list[str]) -> tuple[str, bytes, int, list[str]]:
    """("absent" | "torn-header" | "evalkit", the file's bytes, end of its complete records, the
    file's header).

    A file is evalkit's only when its first line is a header of distinct names that includes
    ``required``; a non-empty file without a complete first line that is a prefix of the
    current header is evalkit's own torn header (a kill while writing it). Anything else is
    refused before any byte is written."""
    if path.is_dir():
        raise EvalkitError(f"{path} is a folder, not a results file", "choose another --out folder")
    if not path.is_file():
        return "absent", b"", 0, columns
    data = path.read_bytes()
    line = ",".join(columns).encode()
    if b"\n" not in data and ((line + b"\n").startswith(data) or (line + b"\r\n").startswith(data)):
        return "torn-header", data, 0, columns
    first = data.split(b"\n", 1)[0]
    try:
        header = next(csv.reader([first.decode("utf-8").rstrip("\r")]), [])
    except UnicodeDecodeError:
        header = []
    if (
        b"\n" not in data
        or len(set(header)) != len(header)
        or not set(required) <= set(header)
        or any(not re.fullmatch(r"[a-z_][a-z0-9_]*", h) for h in header)
    ):
        raise EvalkitError(
            f"{path} is not an evalkit results file (unexpected header)",
            "give evalkit's own CSV files; a run needs another --out folder, evalkit never changes "
            "files it did not write",
        )
    start = len(first) + 1
    return "evalkit", data, start + _complete_end(data[start:]), header


def read_table(path: Path, columns=None, required=None) -> tuple[list[str], list[dict]]:
    """(the file's header, its rows) for an evalkit CSV (a torn last record is ignored); each row
    has the file's columns and ``columns`` ("" where the file has none). One-line error otherwise."""
    columns = columns or result_columns()
    kind, data, end, header = _inspect(path, columns, required or REQUIRED)
    if kind != "evalkit":
        return header, []
    try:
        text = data[:end].decode("utf-8")
    except UnicodeDecodeError:
        raise EvalkitError(
            f"{path} is not valid UTF-8", "it was not written by evalkit; choose another --out"
        ) from None
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    bad = next((i for i, r in enumerate(rows) if None in r or None in r.values()), None)
    if bad is not None:
        raise EvalkitError(
            f"{path}: record {bad + 1} does not have the {len(header)} columns of the header",
            "the file was edited by hand; restore it or choose another --out",
        )
    missing = [c for c in columns if c not in header]
    if missing:
        rows = [dict(r, **dict.fromkeys(missing, "")) for r in rows]
    return header, [upgrade(r) for r in rows] if "prefix_mode" in header else rows


def read_rows(path: Path, columns=None, required=None) -> list[dict]:
    """The rows of an evalkit CSV (see :func:`read_table`)."""
    return read_table(path, columns, required)[1]


def read_profile(path: Path) -> list[dict]:
    return read_rows(path, profile_columns(), profile_required())


class CsvAppender:
    """Appends rows to one CSV, flushing and fsyncing each batch.

    Opening validates the file first (see :func:`_inspect`), then adds the columns it lacks
    (rewriting it atomically), cuts a torn last record (CSV-aware) or rewrites a torn header;
    only then is anything appended. A row with a column no one declared is a programming
    error (ValueError), never a silently dropped value."""

    def __init__(self, path: Path, columns: list[str], required=None):
        self.path = path
        kind, data, end, header = _inspect(path, columns, required or REQUIRED)
        if kind == "evalkit":
            header, rows = read_table(path, columns, required)  # every complete record well-formed first
            if set(columns) - set(header):  # bring it to the current columns first (atomically)
                header = header + [c for c in columns if c not in header]
                _rewrite(path, rows, header)
                kind, data, end, _ = _inspect(path, header, required or REQUIRED)
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "evalkit" and end < len(data):
            with open(path, "rb+") as f:
                f.truncate(end)
        self.columns = header
        self.f = open(path, "a" if kind == "evalkit" else "w", newline="", encoding="utf-8")
        self.w = csv.DictWriter(self.f, fieldnames=header, lineterminator="\n")
        if kind != "evalkit":
            self.w.writeheader()
            self._sync()

    def write(self, rows: list[dict]) -> None:
        self.w.writerows({k: fmt(v) for k, v in r.items()} for r in rows)
        self._sync()

    def _sync(self):
        self.f.flush()
        os.fsync(self.f.fileno())

    def close(self):
        self.f.close()


def drop_rows(path: Path, keys: set, columns=None, key_fn=row_key, required=None) -> None:
    """Rewrite ``path`` without the rows whose key is in ``keys`` (for --force), atomically."""
    header, rows = read_table(path, columns, required)
    keys_of = row_keys if key_fn is row_key else (lambda r: [key_fn(r)])
    keep = [r for r in rows if not any(k in keys for k in keys_of(r))]
    if len(keep) != len(rows):
        _rewrite(path, keep, header)


def _rewrite(path: Path, rows: list[dict], columns) -> None:
    """Replace ``path`` by ``rows`` with header ``columns`` atomically (a temporary file, fsync,
    rename); a row's fields outside ``columns`` are left out."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".evalkit-tmp")  # a new name
    tmp = Path(name)
    if path.exists():  # mkstemp makes it private (0600): keep the mode the file had
        os.chmod(tmp, path.stat().st_mode & 0o7777)
    with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def tidy(out: Path) -> set:
    """Make a results folder exactly-once again before a run writes to it; returns the
    identities of the cells it holds.

    A cell is committed by its results.csv row: its positions.csv rows are written (and
    fsynced) first, so a kill between the two leaves profile rows without a results row.
    Those orphans are removed here, and the cell is measured again. Rows that an older
    evalkit (or two runs at once, before the folder lock) wrote twice keep their first copy."""
    results, profile = out / RESULTS, out / PROFILE
    header, rows = read_table(results)
    seen: set = set()
    duplicates = set()
    for r in rows:
        if row_key(r) in seen:
            duplicates.add(row_key(r))
        seen.update(row_keys(r))
    if duplicates:
        _rewrite(results, _first_of_each(rows, row_key), header)
        logger.info(f"evalkit: {results}: removed the second copies of {len(duplicates)} cell(s) recorded twice")
    committed = {profile_key(r) for r in rows}  # only perplexity rows can match a profile row
    prof_header, prof = read_table(profile, profile_columns(), profile_required())
    unsourced = any(not p["source"] for p in prof)  # rows of evalkit 0.1
    _fill_sources(prof, rows)
    keep = _first_of_each(
        [p for p in prof if profile_key(p) in committed], lambda p: (profile_key(p), p["position_start"])
    )
    if len(keep) != len(prof) or unsourced:
        _rewrite(profile, keep, prof_header + [c for c in profile_columns() if c not in prof_header])
        logger.info(
            f"evalkit: {profile}: removed {len(prof) - len(keep)} row(s) of cells whose results row is missing "
            "(a run stopped between the two writes) or written twice"
        )
    return seen


def _fill_sources(profile_rows: list[dict], result_rows: list[dict]) -> None:
    """Profile rows from evalkit 0.1 carry no source: take it from their cell's results row
    (the only one whose other key fields match; left empty if none or several do)."""
    loose = lambda r: tuple(v for k, v in zip(profile_fields(), profile_key(r)) if k != "source")  # noqa: E731
    sources: dict = {}
    for r in result_rows:
        sources.setdefault(loose(r), set()).add(r.get("source", ""))
    for p in profile_rows:
        if not p["source"] and len(sources.get(loose(p), ())) == 1:
            p["source"] = next(iter(sources[loose(p)]))


def _first_of_each(rows, key_fn) -> list[dict]:
    seen, out = set(), []
    for r in rows:
        k = key_fn(r)
        if k not in seen:
            seen.add(k)
            out.append(r)
    return out


def recorded(folder: Path) -> set:
    """The identities of the cells ``folder``'s results.csv holds (read only; see :func:`tidy`)."""
    return {k for r in read_rows(folder / RESULTS) for k in row_keys(r)}


def drop_everywhere(folders: list[Path], own: Path, planned: list[dict]) -> None:
    """``--force``: remove the rows of the ``planned`` cells from every folder of a result set:
    ``own`` (this run holds its lock) and each other one no run is writing (locked meanwhile).
    A folder another run is writing must not hold any of them."""
    keys = {row_key(k) for k in planned}
    for folder in folders:
        lock = None
        if folder != own:
            try:
                lock = FolderLock(folder)
            except EvalkitError:
                if recorded(folder) & keys:
                    raise EvalkitError(
                        f"--force: {folder} records cells of this run and is being written by another run",
                        "run --force again when that run has finished",
                    ) from None
                continue
        try:
            drop_rows(folder / RESULTS, keys)
            drop_rows(
                folder / PROFILE, {profile_key(k) for k in planned}, profile_columns(), profile_key, profile_required()
            )
        finally:
            if lock is not None:
                lock.release()
