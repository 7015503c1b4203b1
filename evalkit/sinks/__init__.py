"""Row sinks: where measured rows go besides ``results.csv`` (``evalkit run --sink NAME``).

``results.csv`` (:class:`evalkit.results.CsvAppender`) is the record every run writes and
resume reads; a sink receives a copy of each committed batch of rows (see
:class:`evalkit.interfaces.RowSink`). Every module here is imported when the sink
registry is first read, so a new sink is one new file (``jsonl.py`` is the example).
"""

from __future__ import annotations

import importlib
import pkgutil

for _name in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_name}")
