"""Tables of what evalkit knows, built from its registries: methods, model aliases, families, tasks.

Each ``*_table()`` returns ``(header, rows)``, every cell a string. :func:`render` turns one
into the aligned text the ``evalkit methods|models|tasks`` listings print, or into a Markdown
pipe table. :func:`sync_docs` writes the Markdown form into the docs pages, between
``<!-- generated: NAME -->`` and ``<!-- end generated -->``, so no page keeps a copy of a
registry by hand; ``python -m evalkit.catalog [--check] [DOCS_DIR]`` runs it.

The registries are imported inside the functions: the CLI imports this module at start-up,
and a listing must not wait for torch.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from evalkit.models import MODELS
from evalkit.registry import FAMILIES, METHODS, TASKS

Table = tuple[list[str], list[tuple[str, ...]]]

# a block starts and ends on lines of their own (a marker quoted inside a line is prose)
BLOCK = re.compile(
    r"^(?P<open><!-- generated: (?P<name>[a-z-]+) -->\n)(?P<body>.*?)^(?P<close><!-- end generated -->)$", re.S | re.M
)
OPENING = re.compile(r"^<!-- generated:", re.M)


def methods_table() -> Table:
    """One row per scaling method, as ``evalkit methods`` lists them."""

    def independent(m) -> str:
        if not m.static:
            return "no"
        derived = [p.name for p in m.params if p.derive and p.per_length]
        return f"if {','.join(derived)} given" if derived else "yes"

    header = ["method", "encoding", "parameters (default)", "length-independent", "what it does"]
    rows = [
        (
            m.name,
            m.encoding,
            " ".join(f"{p.name}={p.shown_default}" for p in m.params) or "-",
            independent(m),
            m.summary,
        )
        for m in METHODS.values()
    ]
    return header, rows


def models_table() -> Table:
    """The built-in model aliases (not those of a user's ``evalkit.toml``)."""

    header = ["alias", "family", "encoding", "trained", "remote code", "source"]
    rows = [
        (s.name, s.family, s.encoding, str(s.trained_len), "yes" if s.remote_code else "", s.source)
        for s in MODELS.values()
    ]
    return header, rows


def families_table() -> Table:
    """One row per model family: the config ``model_type`` values it claims, and its installer."""

    header = ["family", "model_type", "encoding", "installer", "checked against"]
    rows = [(f.name, ",".join(f.model_types), f.encoding, f.adapter, f.checked) for f in FAMILIES.values()]
    return header, rows


def tasks_table() -> Table:
    """One row per task, as ``evalkit tasks`` lists them."""

    header = ["task", "default", "metrics", "options", "what it measures"]
    rows = [
        (
            name,
            "yes" if t.default else "",
            ",".join(m.name for m in t.metrics),
            " ".join(o.flag_name for o in t.options) or "-",
            t.summary,
        )
        for name, t in TASKS.items()
    ]
    return header, rows


TABLES = {"methods": methods_table, "models": models_table, "families": families_table, "tasks": tasks_table}


def render(header, rows, fmt: str = "table") -> str:
    """``table``: columns padded to their widest cell, two spaces apart, no trailing blanks.
    ``markdown``: a GitHub pipe table (``|`` escaped, ``<`` as an entity so no cell reads as HTML)."""
    if fmt == "table":
        widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
        return "\n".join(
            "  ".join(str(x).ljust(w) for x, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]
        )
    if fmt == "markdown":
        lines = [_md_row(header), "|" + "---|" * len(header)]
        return "\n".join(lines + [_md_row(r) for r in rows])
    raise ValueError(f"unknown table format {fmt!r} (table or markdown)")


def _md_row(cells) -> str:
    def cell(x) -> str:
        text = " ".join(str(x).split())  # a cell is one line
        return text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace("*", "\\*")

    return "| " + " | ".join(cell(x) for x in cells) + " |"


def sync_docs(docs_dir, check: bool = False) -> list[str]:
    """Rewrite every generated block of the ``*.md`` pages under ``docs_dir`` with its table.
    Returns the blocks (``page.md: name``) whose content differed; with ``check`` nothing is written."""
    docs_dir = Path(docs_dir)
    stale = []
    for page in sorted(docs_dir.rglob("*.md")):
        where = page.relative_to(docs_dir).as_posix()
        text = page.read_text(encoding="utf-8")
        new, changed = _refilled(text, where)
        stale += [f"{where}: {name}" for name in changed]
        if changed and not check:
            page.write_text(new, encoding="utf-8")
    return stale


def _refilled(text: str, where: str) -> tuple[str, list[str]]:
    """``text`` with each generated block holding its current table, and the names of those that changed."""
    if len(OPENING.findall(text)) != len(BLOCK.findall(text)):
        raise ValueError(f"{where}: a '<!-- generated: NAME -->' line without its '<!-- end generated -->'")
    changed = []

    def refill(match) -> str:
        name = match["name"]
        if name not in TABLES:
            raise ValueError(f"{where}: unknown generated block {name!r} (known: {', '.join(TABLES)})")
        body = "\n" + render(*TABLES[name](), "markdown") + "\n\n"  # blank lines around: Markdown, not HTML
        if match["body"] != body:
            changed.append(name)
        return match["open"] + body + match["close"]

    return BLOCK.sub(refill, text), changed


def main(argv: list[str]) -> int:
    """``python -m evalkit.catalog [--check] [DOCS_DIR]``: sync the docs (default: ./docs), or
    with ``--check`` list the stale blocks and exit 1 when there are any."""
    check = "--check" in argv
    folders = [a for a in argv if a != "--check"]
    blocks = sync_docs(folders[0] if folders else "docs", check=check)
    for block in blocks:
        print(f"{'stale' if check else 'updated'}: {block}")
    return 1 if check and blocks else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
