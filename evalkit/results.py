"""Tidy result CSVs: the schema, the cell identity, and writing them safely.

``results.csv`` holds one row per measured unit (a passkey trial, a document at
a length); ``positions.csv`` the per-position loss profile of perplexity rows.
evalkit writes only files it has identified as its own (:func:`_inspect`), cuts a
torn last record CSV-aware before appending (:class:`CsvAppender`), makes a folder
exactly-once again before a run (:func:`tidy`) and lets one run write a folder at
a time (:class:`FolderLock`). The README's "Reliability" section states the
guarantees.
"""
from __future__ import annotations

import csv
import io
import os
import re
import socket
import tempfile
from pathlib import Path

from evalkit.errors import EvalkitError

COLUMNS = [
    "model", "method", "scale", "alpha", "trained_len", "task", "length", "depth", "sample",
    "ppl", "nll", "tokens", "correct", "answer", "passkey", "seconds", "peak_mem_mb",
    "device", "dtype", "seed", "status", "evalkit_version", "created_at",
    # beyond the required ones
    "data", "doc", "stride", "prefix_mode", "source", "error", "transformers_version", "torch_version",
]
PROFILE_COLUMNS = ["model", "method", "scale", "alpha", "trained_len", "length", "sample", "doc", "data",
                   "stride", "seed", "position_start", "position_end", "nll", "source"]
# headers earlier evalkit versions wrote, still read (missing columns read as ""); a file with
# one is rewritten with the current header before evalkit appends to it
OLDER_HEADERS = {tuple(PROFILE_COLUMNS): [PROFILE_COLUMNS[:-1]]}  # 0.1: positions.csv had no source
# A cell's identity: everything that changes its result. Resume, --force, compare's pooling
# and the run summary all use this one definition. Each task adds its own fields
# (``identity`` on the task: passkey its depth and seed, perplexity its data and stride).
IDENTITY = ["model", "source", "method", "scale", "alpha", "trained_len", "task", "length", "sample"]
# the perplexity cell a positions.csv row belongs to
PROFILE_KEY = ["model", "source", "method", "scale", "alpha", "trained_len", "length", "sample", "data", "stride"]
RESULTS, PROFILE = "results.csv", "positions.csv"


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


def identity_fields(task: str | None) -> list[str]:
    """The identity of a row of ``task`` (every task field, for a task this evalkit does not know)."""
    from evalkit.tasks import TASKS

    extra = TASKS.get(task).identity if task in TASKS else ("depth", "seed", "data", "stride")
    return IDENTITY + list(extra)


def row_key(row: dict) -> tuple:
    return tuple((k, fmt(row.get(k))) for k in identity_fields(row.get("task")))


def profile_key(row: dict) -> tuple:
    """The cell a positions.csv row belongs to (perplexity cells only have profiles)."""
    return tuple(fmt(row.get(k)) for k in PROFILE_KEY)


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
                if data[p + 1:p + 2] == b'"':
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


def _inspect(path: Path, columns: list[str]) -> tuple[str, bytes, int, list[str]]:
    """("absent" | "torn-header" | "evalkit" | "older", the file's bytes, end of its complete
    records, the file's header).

    A file is evalkit's only when its first line is exactly a header evalkit writes (or an
    earlier version wrote: "older"); a non-empty file that is a prefix of the current header
    line is evalkit's own torn header (a kill while writing it). Anything else is refused
    before any byte is written."""
    if path.is_dir():
        raise EvalkitError(f"{path} is a folder, not a results file", "choose another --out folder")
    if not path.is_file():
        return "absent", b"", 0, columns
    data = path.read_bytes()
    for kind, header in [("evalkit", columns)] + [("older", h) for h in OLDER_HEADERS.get(tuple(columns), [])]:
        line = ",".join(header).encode()
        for ending in (b"\n", b"\r\n"):  # evalkit writes \n; csv's default is \r\n
            if data.startswith(line + ending):
                return kind, data, len(line + ending) + _complete_end(data[len(line + ending):]), header
    line = ",".join(columns).encode()
    if (line + b"\n").startswith(data) or (line + b"\r\n").startswith(data):
        return "torn-header", data, 0, columns
    raise EvalkitError(f"{path} is not an evalkit results file (unexpected header)",
                       "choose another --out folder; evalkit never changes files it did not write")


def read_rows(path: Path, columns=COLUMNS) -> list[dict]:
    """Rows of an evalkit CSV (a torn last record is ignored); one-line error otherwise."""
    kind, data, end, header = _inspect(path, columns)
    if kind not in ("evalkit", "older"):
        return []
    try:
        text = data[:end].decode("utf-8")
    except UnicodeDecodeError:
        raise EvalkitError(f"{path} is not valid UTF-8", "it was not written by evalkit; choose another --out") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows = list(reader)
    bad = next((i for i, r in enumerate(rows) if None in r or None in r.values()), None)
    if bad is not None:
        raise EvalkitError(f"{path}: record {bad + 1} does not have the {len(header)} columns of the header",
                           "the file was edited by hand; restore it or choose another --out")
    return rows if header == columns else [{c: r.get(c, "") for c in columns} for r in rows]


class CsvAppender:
    """Appends rows to one CSV, flushing and fsyncing each batch.

    Opening validates the file first (see :func:`_inspect`), then cuts a torn last
    record (CSV-aware) or rewrites a torn header; only then is anything appended."""

    def __init__(self, path: Path, columns: list[str]):
        self.path, self.columns = path, columns
        kind, data, end, _ = _inspect(path, columns)
        if kind in ("evalkit", "older"):
            rows = read_rows(path, columns)  # every complete record well-formed, before changing anything
        if kind == "older":  # bring it to the current header first (atomically), then append
            _rewrite(path, rows, columns)
            kind, data, end, _ = _inspect(path, columns)
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "evalkit" and end < len(data):
            with open(path, "rb+") as f:
                f.truncate(end)
        self.f = open(path, "a" if kind == "evalkit" else "w", newline="", encoding="utf-8")
        self.w = csv.DictWriter(self.f, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
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


def drop_rows(path: Path, keys: set, columns=COLUMNS, key_fn=row_key) -> None:
    """Rewrite ``path`` without the rows whose key is in ``keys`` (for --force), atomically."""
    rows = read_rows(path, columns)
    keep = [r for r in rows if key_fn(r) not in keys]
    if len(keep) != len(rows):
        _rewrite(path, keep, columns)


def _rewrite(path: Path, rows: list[dict], columns) -> None:
    """Replace ``path`` by ``rows`` atomically (a temporary file, fsync, rename)."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".evalkit-tmp")  # a new name
    tmp = Path(name)
    with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def tidy(out: Path, log=print) -> set:
    """Make a results folder exactly-once again before a run writes to it; returns the
    identities of the cells it holds.

    A cell is committed by its results.csv row: its positions.csv rows are written (and
    fsynced) first, so a kill between the two leaves profile rows without a results row.
    Those orphans are removed here, and the cell is measured again. Rows that an older
    evalkit (or two runs at once, before the folder lock) wrote twice keep their first copy."""
    results, profile = out / RESULTS, out / PROFILE
    rows = read_rows(results)
    seen: set = set()
    duplicates = set()
    for r in rows:
        (duplicates if row_key(r) in seen else seen).add(row_key(r))
    if duplicates:
        _rewrite(results, _first_of_each(rows, row_key), COLUMNS)
        log(f"evalkit: {results}: removed the second copies of {len(duplicates)} cell(s) recorded twice")
    committed = {profile_key(r) for r in rows}  # only perplexity rows can match a profile row
    prof = read_rows(profile, PROFILE_COLUMNS)
    unsourced = any(not p["source"] for p in prof)  # rows of evalkit 0.1
    _fill_sources(prof, rows)
    keep = _first_of_each([p for p in prof if profile_key(p) in committed],
                          lambda p: (profile_key(p), p["position_start"]))
    if len(keep) != len(prof) or unsourced:
        _rewrite(profile, keep, PROFILE_COLUMNS)
        log(f"evalkit: {profile}: removed {len(prof) - len(keep)} row(s) of cells whose results row is missing "
            "(a run stopped between the two writes) or written twice")
    return seen


def _fill_sources(profile_rows: list[dict], result_rows: list[dict]) -> None:
    """Profile rows from evalkit 0.1 carry no source: take it from their cell's results row
    (the only one whose other key fields match; left empty if none or several do)."""
    loose = lambda r: tuple(fmt(r.get(k)) for k in PROFILE_KEY if k != "source")  # noqa: E731
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


class FolderLock:
    """An exclusive OS lock (flock) on ``OUT/.evalkit.lock`` for the duration of a run, so two
    runs can never write one folder at once; the second stops with one line naming the first.
    The lock file stays (removing it would let a third run lock a new file meanwhile)."""

    def __init__(self, out: Path):
        import fcntl

        out.mkdir(parents=True, exist_ok=True)
        self.f = open(out / ".evalkit.lock", "a+")
        try:
            fcntl.flock(self.f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.f.seek(0)
            holder = self.f.read().strip() or "another process"
            self.f.close()
            raise EvalkitError(f"{out} is being written by another evalkit run ({holder})",
                               "wait for it to finish, or give another --out") from None
        self.f.seek(0)
        self.f.truncate()
        self.f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        self.f.flush()

    def release(self) -> None:
        if not self.f.closed:
            self.f.close()  # closing releases the flock
