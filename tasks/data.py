"""Long documents for perplexity: the built-in corpus, local files, HF datasets.

``--data`` takes:
- ``stdlib`` (default): the largest source files of this Python's standard
  library, largest first (ties by path): real long documents every Python
  install carries, identified as ``stdlib-3.11/<path>``.
- a ``.txt`` file (one document) or a directory of ``.txt`` files (sorted);
- a ``.jsonl`` or ``.parquet`` file with a ``text`` field (``--text-field``);
- ``hf:NAME[:CONFIG]:SPLIT`` (the ``data`` extra): a Hugging Face dataset
  already cached or reachable, e.g. ``hf:emozilla/pg19-test:test``.
"""

from __future__ import annotations

import json
import sys
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from evalkit.errors import EvalkitError

STDLIB_DOCS = 64  # how many of the largest files the built-in corpus offers


@dataclass(frozen=True)
class Document:
    doc_id: str
    text: str


def stdlib_documents() -> Iterator[Document]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = [p for p in root.rglob("*.py") if "site-packages" not in p.parts and "test" not in p.parts]
    files.sort(key=lambda p: (-p.stat().st_size, p.relative_to(root).as_posix()))
    tag = f"stdlib-{sys.version_info.major}.{sys.version_info.minor}"
    for p in files[:STDLIB_DOCS]:
        yield Document(f"{tag}/{p.relative_to(root).as_posix()}", p.read_text(encoding="utf-8", errors="replace"))


def _records(path: Path, field: str) -> Iterator[dict]:
    if path.suffix == ".jsonl":
        with open(path, encoding="utf-8") as f:
            try:
                for i, line in enumerate(f):
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError:
                        raise EvalkitError(f"{path}:{i + 1} is not valid JSON", "one JSON object per line") from None
                    if not isinstance(record, dict):
                        raise EvalkitError(
                            f"{path}:{i + 1} is a JSON {type(record).__name__}, not an object",
                            'one JSON object per line, e.g. {"text": "..."}',
                        )
                    yield record
            except UnicodeDecodeError:
                raise EvalkitError(f"{path} is not UTF-8 text", "convert it to UTF-8") from None
    else:
        import pandas as pd

        try:
            frame = pd.read_parquet(path)
        except ImportError:
            raise EvalkitError("reading parquet needs pyarrow", "pip install 'evalkit[data]'") from None
        except Exception as e:  # noqa: BLE001 (pyarrow raises several kinds for a file that is not parquet)
            raise EvalkitError(
                f"{path} is not a readable parquet file ({type(e).__name__})",
                "give a real .parquet file, or .jsonl / .txt",
            ) from None
        yield from frame.to_dict("records")


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise EvalkitError(f"{path} is not UTF-8 text", "convert it to UTF-8") from None


def file_documents(path: Path, field: str) -> Iterator[Document]:
    if path.is_dir():
        files = sorted(path.glob("*.txt"))
        if not files:
            raise EvalkitError(
                f"{path} holds no .txt files", "give a .txt, .jsonl or .parquet file or a folder of .txt"
            )
        for p in files:
            yield Document(p.name, _read_text(p))
    elif path.suffix == ".txt":
        yield Document(path.name, _read_text(path))
    elif path.suffix in (".jsonl", ".parquet"):
        for i, rec in enumerate(_records(path, field)):
            if rec.get(field) is None:
                raise EvalkitError(
                    f"{path}: record {i} has no {field!r} field (or it is null)",
                    f"fields: {', '.join(map(str, rec))}; pass --text-field",
                )
            yield Document(f"{path.name}#{i}", str(rec[field]))
    else:
        raise EvalkitError(f"{path}: unsupported data file type {path.suffix!r}", "use .txt, .jsonl or .parquet")


def hf_documents(spec: str, field: str) -> Iterator[Document]:
    parts = spec.split(":")[1:]
    if len(parts) not in (2, 3):
        raise EvalkitError(f"bad dataset spec {spec!r}", "use hf:NAME:SPLIT or hf:NAME:CONFIG:SPLIT")
    name, config, split = (parts[0], None, parts[1]) if len(parts) == 2 else parts
    try:
        import datasets
    except ImportError:
        raise EvalkitError("Hugging Face datasets are not installed", "pip install 'evalkit[data]'") from None
    try:
        ds = datasets.load_dataset(name, config, split=split, streaming=True)
    except Exception as e:
        raise EvalkitError(
            f"cannot load dataset {name!r}: {type(e).__name__}", "it must be cached locally or the hub reachable"
        ) from None
    for i, rec in enumerate(ds):
        yield Document(f"{name}/{split}#{i}", str(rec[field]))


def documents(data: str = "stdlib", field: str = "text") -> Iterator[Document]:
    """Documents in a fixed order for ``--data``."""
    if data == "stdlib":
        return stdlib_documents()
    if data.startswith("hf:"):
        return hf_documents(data, field)
    path = Path(data).expanduser()
    if not path.exists():
        raise EvalkitError(
            f"data file {data!r} does not exist", "use stdlib, a .txt/.jsonl/.parquet path or hf:NAME:SPLIT"
        )
    return file_documents(path, field)
