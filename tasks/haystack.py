"""Haystacks of real prose for the needle tasks, as sentences in a fixed order.

``--haystack`` takes:
- ``stdlib-prose`` (default, recorded as ``stdlib-prose-3.X``): English prose that ships with
  every CPython, no download (built once per Python, then read from evalkit's cache): the prose paragraphs of the language reference that
  ``help()`` shows (``pydoc_data.topics``), then the prose paragraphs of the standard
  library's docstrings, file by file in path order. A paragraph counts as prose when it
  has no indented (code) lines, no digits, no ``=``/``_``/``>>>``, at most two brackets,
  is at least 150 characters long, ends with a full stop, and is at least 93% letters,
  spaces and ``,.;'``. About 470 kB of text (~100k tokens for a LLaMA-style tokenizer);
  longer haystacks continue from the start again.
- a ``.txt`` file or a folder of ``.txt`` files (sorted by name), e.g. the Paul Graham
  essays other tools use.

Text is split into sentences after ``.``, ``!`` or ``?`` followed by white space, with
white space runs made single spaces (as RULER does).
"""

from __future__ import annotations

import ast
import functools
import re
import sys
import sysconfig
from pathlib import Path

from evalkit.errors import EvalkitError
from evalkit.paths import cache_dir

BUILTIN = f"stdlib-prose-{sys.version_info.major}.{sys.version_info.minor}"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _is_prose(paragraph: str) -> bool:
    lines = paragraph.splitlines()
    if not lines or any(line.startswith((" ", "\t", ">>>")) for line in lines[1:]):
        return False
    text = " ".join(line.strip() for line in lines)
    if len(text) < 150 or not text.endswith(".") or re.search(r"[\d=_]|>>>", text):
        return False
    if text.count("(") + text.count("[") > 2:
        return False
    return sum(c.isalpha() or c in " ,.;'" for c in text) / len(text) >= 0.93


def _paragraphs(text: str) -> list[str]:
    return [" ".join(p.split()) for p in re.split(r"\n\s*\n", text) if _is_prose(p)]


@functools.lru_cache(maxsize=1)
def builtin_text() -> str:
    """The built-in prose corpus, the same for every run on the same Python. Building it parses
    the standard library (seconds), so it is kept in evalkit's cache, one file per exact Python
    version and standard-library path."""
    import hashlib
    import os

    tag = hashlib.sha256(f"{sys.version}|{sysconfig.get_paths()['stdlib']}".encode()).hexdigest()[:16]
    cached = cache_dir() / "haystack" / f"{BUILTIN}-{tag}.txt"
    if cached.is_file():
        return cached.read_text(encoding="utf-8")
    text = _build_builtin_text()
    try:  # written whole or not at all
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(cached)
    except OSError:
        pass  # an unwritable cache only costs the seconds again
    return text


def _build_builtin_text() -> str:
    import pydoc_data.topics

    paragraphs = []
    for name in sorted(pydoc_data.topics.topics):
        paragraphs += _paragraphs(pydoc_data.topics.topics[name])
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "test", "tests", "idlelib"}
    for path in sorted(p for p in root.rglob("*.py") if not skip & set(p.relative_to(root).parts)):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
        except (SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc:
                    paragraphs += _paragraphs(doc)
    return " ".join(dict.fromkeys(paragraphs))  # a paragraph repeated in several docstrings once


def sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE_END.split(" ".join(text.split())) if s]


def parse_haystack(value: str) -> str:
    """``--haystack``: the built-in corpus's name, or a path made absolute (it is recorded)."""
    if value in ("stdlib-prose", BUILTIN):
        return BUILTIN
    path = Path(value).expanduser()
    hint = "give a .txt file, a folder of .txt files, or stdlib-prose (the built-in corpus)"
    if not path.exists():
        raise EvalkitError(f"--haystack {value!r} does not exist", hint)
    if path.is_file() and path.suffix != ".txt":
        raise EvalkitError(f"--haystack {value!r} is not a .txt file", hint)
    return str(path.resolve())


def haystack_text(value: str) -> str:
    if value == BUILTIN:
        return builtin_text()
    path = Path(value)
    files = sorted(path.glob("*.txt")) if path.is_dir() else [path]
    if not files:
        raise EvalkitError(f"--haystack {value} holds no .txt files", "give a .txt file or a folder of them")
    texts = []
    for f in files:
        try:
            texts.append(f.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise EvalkitError(f"--haystack {f} is not UTF-8 text", "convert it to UTF-8") from None
    text = " ".join(texts)
    if len(sentences(text)) < 2:
        raise EvalkitError(f"--haystack {value} has fewer than two sentences", "give real prose, e.g. essays")
    return text


def key_words(text: str) -> list[str]:
    """Distinct lower-case words of 4 to 10 letters of ``text``, sorted: the parts of word keys
    (``adjective-noun`` in RULER; here two words of the haystack's own language)."""
    return sorted(set(re.findall(r"\b[a-z]{4,10}\b", text)))
