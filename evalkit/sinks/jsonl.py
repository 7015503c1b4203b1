"""``--sink jsonl``: every row also as one JSON object per line in ``OUT/results.jsonl``.

Values are written as the CSV writes them (:func:`evalkit.schema.fmt`), so a JSONL row and
its CSV row hold the same text; each batch is flushed and fsynced before the sweep goes on.
The file is a log of rows as they were measured: a rerun appends the cells it measures
(a torn last line, from a kill, is cut first); ``results.csv`` stays the record that
resume and ``--force`` read and rewrite.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from evalkit.registry import SINKS
from evalkit.schema import fmt


class JsonlSink:
    """every row also as one JSON object per line in OUT/results.jsonl"""

    name = "jsonl"
    filename = "results.jsonl"

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / self.filename
        if self.path.is_file():
            data = self.path.read_bytes()
            if data and not data.endswith(b"\n"):  # a kill mid-line: keep the complete lines
                with open(self.path, "rb+") as f:
                    f.truncate(data.rfind(b"\n") + 1)
        self.f = open(self.path, "a", encoding="utf-8")

    def write(self, rows: list[dict]) -> None:
        self.f.writelines(json.dumps({k: fmt(v) for k, v in r.items()}, ensure_ascii=False) + "\n" for r in rows)
        self.f.flush()
        os.fsync(self.f.fileno())

    def close(self) -> None:
        self.f.close()


SINKS.add(JsonlSink.name, JsonlSink)
