"""Tidy result CSVs: the schema, appending with flush+fsync, reading back for resume.

``results.csv`` holds one row per measured unit (a passkey trial, a document at
a length); ``positions.csv`` the per-position loss profile of perplexity rows.
A torn last line (a kill mid-write) is cut off before appending.
"""
from __future__ import annotations

import csv
import io
import os
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
                   "stride", "seed", "position_start", "position_end", "nll"]
# what makes two rows the same cell (resume and --force)
KEY = ["model", "method", "scale", "alpha", "trained_len", "task", "length", "depth", "sample", "seed",
       "data", "stride"]
PROFILE_KEY = ["model", "method", "scale", "alpha", "trained_len", "length", "sample", "seed", "data", "stride"]
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


def row_key(row: dict) -> tuple:
    return tuple(fmt(row.get(k)) for k in KEY)


def profile_key(row: dict) -> tuple:
    """The cell a positions.csv row belongs to (perplexity cells only have profiles)."""
    return tuple(fmt(row.get(k)) for k in PROFILE_KEY)


def _repair_torn_tail(path: Path) -> None:
    """Cut a last line that a kill left without its newline."""
    with open(path, "rb+") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        data = f.read()
        f.seek(0)
        f.truncate(data.rfind(b"\n") + 1)


def read_rows(path: Path, columns=COLUMNS) -> list[dict]:
    """Rows of an evalkit CSV (a torn last line is ignored); one-line error otherwise."""
    if not path.is_file():
        return []
    text = path.read_bytes().decode("utf-8", errors="replace")
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if reader.fieldnames is None and not text:
        return []
    if reader.fieldnames != columns:
        raise EvalkitError(f"{path} is not an evalkit results file (unexpected header)",
                           "choose another --out folder; evalkit never overwrites foreign files")
    return list(reader)


class CsvAppender:
    """Appends rows to one CSV, flushing and fsyncing each batch."""

    def __init__(self, path: Path, columns: list[str]):
        self.path, self.columns = path, columns
        read_rows(path, columns)  # validates the header before anything is written
        new = not path.is_file() or path.stat().st_size == 0
        if not new:
            _repair_torn_tail(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.f = open(path, "a", newline="", encoding="utf-8")
        self.w = csv.DictWriter(self.f, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        if new:
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
    if len(keep) == len(rows):
        return
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
        w.writeheader()
        w.writerows(keep)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
