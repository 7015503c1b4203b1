"""``evalkit report``: one self-contained file (HTML or Markdown) from result CSVs alone.

The report says what was run (models, methods with their parameters, tasks with their
settings, lengths, samples, software, devices, time span, the files read), shows the compare
tables with 95% intervals and a cost table, embeds every figure of ``evalkit plot`` as a PNG
data URI (drawn into a temporary folder that is removed), and ends with notes: cells that
gave no number, with their error text, and the sweep's own notes (``notes.txt`` beside each
results file). Viewing it needs no network and no other file.

The sections are built once as format-free blocks; :func:`to_html` and :func:`to_markdown`
lay them out.
"""

from __future__ import annotations

import base64
import html
import math
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from evalkit.compare import find_csvs, html_table, load_results, render_tables
from evalkit.errors import EvalkitError
from evalkit.plots import plot_all
from evalkit.registry import OPTIONS, TASKS
from evalkit.schema import FACTORS, SHARED, fmt
from evalkit.version import __version__

SUFFIXES = {".html": "html", ".htm": "html", ".md": "markdown"}
NOTES = "notes.txt"  # written by the sweep beside results.csv: "<ISO-8601 time>\t<message>" per line


@dataclass(frozen=True)
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]
    numeric: list[bool]  # per column: numbers, right-aligned


def report_format(out: Path) -> str:
    """ "html" or "markdown", from the suffix of ``out``."""
    fmt = SUFFIXES.get(Path(out).suffix.lower())
    if fmt is None:
        raise EvalkitError(
            f"cannot tell the report format from {Path(out).name!r}",
            "give --out a file name ending in .html, .htm or .md",
        )
    return fmt


def write_report(paths, out: Path, title: str | None = None) -> Path:
    """Write the report on the results in ``paths`` to ``out`` (its suffix chooses the format)."""

    fmt = report_format(out)
    df = load_results(paths)  # one-line error for a missing path or a foreign CSV
    files = find_csvs(paths)
    if df.empty:
        raise EvalkitError(
            f"no result rows in {', '.join(map(str, paths))}", "run evalkit run first, or check the path"
        )
    title = title or "evalkit report: " + ", ".join(_distinct(df["model"]))
    generated = f"{datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC by evalkit {__version__}"
    blocks = sections(df, paths, files)
    text = (to_html if fmt == "html" else to_markdown)(blocks, title, generated)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return out


def sections(df, paths, files) -> list[tuple]:
    """The report as blocks: ("h2", text), ("facts", [(what, value)]), ("table", Table),
    ("results", df: the compare tables), ("figure", (name, png bytes))."""
    blocks = [
        ("h2", "What was run"),
        ("facts", run_facts(df, paths, files)),
        ("table", model_table(df)),
        ("table", method_table(df)),
        ("table", task_table(df)),
        ("h2", "Results"),
        ("results", df),
    ]
    costs = cost_tables(df)
    if costs:
        blocks += [("h2", "Cost")] + [("table", t) for t in costs]
    figures = draw_figures(paths)
    if figures:
        blocks += [("h2", "Figures")] + [("figure", f) for f in figures]
    notes = [t for t in (failed_table(df), notes_table(files)) if t is not None]
    if notes:
        blocks += [("h2", "Notes")] + [("table", t) for t in notes]
    return blocks


# --- values as text -------------------------------------------------------------------------


def _text(value) -> str:
    """A cell value as written in the CSV ("" for a missing one; 8192.0 -> "8192")."""

    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return fmt(float(value)) if isinstance(value, float) else str(value)


def _distinct(values, sort: bool = False) -> list[str]:
    """The non-empty values as text, each once (in order of first appearance, or sorted)."""
    out = list(dict.fromkeys(t for t in map(_text, values) if t))
    return sorted(out, key=_sortable) if sort else out


def _sortable(text: str):
    try:
        return 0, float(text), text
    except ValueError:
        return 1, 0.0, text


def _listing(values, limit: int = 8) -> str:
    values = list(values)
    shown = ", ".join(values[:limit])
    return shown + (f" … (+{len(values) - limit} more)" if len(values) > limit else "")


def _percent(depth: str) -> str:
    return f"{100 * float(depth):g}%"


# --- what was run ---------------------------------------------------------------------------


def run_facts(df, paths, files) -> list[tuple[str, str]]:
    """Run-wide facts: inputs, row counts, software, devices, time span."""
    rows_in = df["_file"].value_counts()
    status = df["status"].value_counts()
    created = _distinct(df["created_at"], sort=True)
    facts = [
        ("inputs", ", ".join(map(str, paths))),
        ("files read", "; ".join(f"{f} ({rows_in.get(str(f), 0)} rows)" for f in files)),
        ("rows by status", ", ".join(f"{s}: {n}" for s, n in status.items())),
        ("models", ", ".join(_distinct(df["model"]))),
        ("methods", ", ".join(_distinct(df["_method"]))),
        ("tasks", ", ".join(_distinct(df["task"]))),
        ("lengths (tokens)", ", ".join(_distinct(df["length"], sort=True))),
    ]
    for what, col in (
        ("evalkit", "evalkit_version"),
        ("evalkit commit", "evalkit_commit"),
        ("transformers", "transformers_version"),
        ("torch", "torch_version"),
        ("devices", "device"),
        ("dtypes", "dtype"),
    ):
        facts.append((what, ", ".join(_distinct(df[col], sort=True)) or "not recorded"))
    facts.append(("created (UTC)", f"{created[0]} – {created[-1]}" if created else "not recorded"))
    return facts


def model_table(df) -> Table:
    cols = ["model", "source", "trained_len", "rope_scaling", "adapter", "quantize"]
    df = df.fillna({c: "" for c in cols})
    df["rope_scaling"] = df["rope_scaling"].replace("", "default")  # rows written before the column existed
    groups = df.groupby(cols, sort=False, dropna=False).size()
    rows = [[_text(v) for v in key] + [str(n)] for key, n in groups.items()]
    return Table("models", cols + ["rows"], rows, [False, False, True, False, False, False, True])


def method_table(df) -> Table:
    """One row per method label, with the parameters the rows record."""
    rows = []
    for label, g in df.groupby("_method", sort=False):
        rows.append(
            [
                label,
                ", ".join(_distinct(g["method"])),
                " | ".join(_distinct(g["params"])),
                *(", ".join(_distinct(g[f], sort=True)) for f in FACTORS),
                ", ".join(_distinct(g["task"])),
                str(len(g)),
            ]
        )
    return Table(
        f"methods (label as in the tables; {' / '.join(FACTORS)}: the values used)",
        ["label", "method", "params", *FACTORS, "tasks", "rows"],
        rows,
        [False, False, False, *(True for _ in FACTORS), False, True],
    )


def task_settings(g) -> str:
    """A task's identity settings (data, stride, chat_template, haystack, ...) as ``k=v``, read as
    the identity reads them (an empty value of an older row is the option's default)."""

    task = g["task"].iloc[0]
    names = [f for f in (TASKS.get(task).identity if task in TASKS else ()) if f in OPTIONS]
    keys = [dict(k) for k in g["_key"]]
    return ", ".join(f"{n}={' | '.join(dict.fromkeys(k.get(n, '') for k in keys))}" for n in names)


def task_table(df) -> Table:
    rows = []
    for task, g in df.groupby("task", sort=False):
        rows.append(
            [
                task,
                ", ".join(_distinct(g["length"], sort=True)),
                ", ".join(map(_percent, _distinct(g["depth"], sort=True))),
                str(len(_distinct(g["sample"]))),
                ", ".join(_distinct(g["seed"], sort=True)),
                str(len(g)),
                task_settings(g),
                _listing(_distinct(g["doc"])),
            ]
        )
    return Table(
        "tasks (samples: trials per depth, or documents, per cell)",
        ["task", "lengths", "depths", "samples", "seeds", "rows", "settings", "documents"],
        rows,
        [False, True, True, True, True, True, False, False],
    )


# --- cost, failures, notes ------------------------------------------------------------------


def cost_tables(df) -> list[Table]:
    """Per task: mean seconds per row and peak memory by method × length (ok rows)."""
    ok = df[(df["status"] == "ok") & df["seconds"].notna()]
    tables = []
    for task, g in ok.groupby("task", sort=False):
        lengths = sorted(int(n) for n in g["length"].unique())
        rows = []
        for (model, label), m in g.groupby(["model", "_method"], sort=False):
            cells = []
            for n in lengths:
                c = m[m["length"] == n]
                mem = c["peak_mem_mb"].max()
                cells.append(
                    "" if c.empty else f"{c['seconds'].mean():.1f} s" + ("" if math.isnan(mem) else f" / {mem:.0f} MB")
                )
            rows.append([model, label] + cells)
        tables.append(
            Table(
                f"{task}: mean seconds per row{_sharing_note(g)} / peak memory; columns: tokens",
                ["model", "method"] + [str(n) for n in lengths],
                rows,
                [False, False] + [True] * len(lengths),
            )
        )
    return tables


def _sharing_note(rows) -> str:
    """What a cost table's times mean where rows shared their computation (the ``shared`` column)."""
    kinds = [k for k in SHARED if k != "none" and (rows["shared"] == k).any()]
    return "".join(f" ({k} rows: {SHARED[k].replace('``', '')})" for k in kinds)


def failed_table(df) -> Table | None:
    """Rows that gave no number (oom, skipped, nan), one line per cell kind and error text."""
    bad = df[df["status"] != "ok"].fillna({"error": ""})
    if bad.empty:
        return None
    cols = ["model", "_method", "task", "length", "status", "error"]
    rows = []
    for (model, label, task, length, status, error), g in bad.groupby(cols, sort=False, dropna=False):
        if not error and status == "nan":
            error = "a non-finite loss or score"
        rows.append([model, label, task, _text(length), status, str(len(g)), error])
    return Table(
        "cells without a number",
        ["model", "method", "task", "length", "status", "rows", "error"],
        rows,
        [False, False, False, True, False, True, False],
    )


def read_notes(files) -> dict[str, dict]:
    """{message: {"folders": [...], "time": first time}} from the notes.txt beside each results file."""
    notes: dict[str, dict] = {}
    for folder in dict.fromkeys(Path(f).parent for f in files):
        path = folder / NOTES
        if not path.is_file():
            continue
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            time, tab, message = line.partition("\t")
            time, message = (time, message) if tab else ("", time)
            if not message.strip():
                continue
            note = notes.setdefault(message.strip(), {"folders": [], "time": time.strip()})
            if str(folder) not in note["folders"]:
                note["folders"].append(str(folder))
    return notes


def notes_table(files) -> Table | None:
    notes = read_notes(files)
    if not notes:
        return None
    rows = [[message, ", ".join(n["folders"]), n["time"]] for message, n in notes.items()]
    return Table("run notes (each message once)", ["message", "folder", "first noted"], rows, [False, False, False])


def draw_figures(paths) -> list[tuple[str, bytes]]:
    """Every figure ``evalkit plot`` draws, as (name, PNG bytes); no file is left behind."""

    with tempfile.TemporaryDirectory(prefix="evalkit-report-") as tmp:
        return [(path.stem, path.read_bytes()) for path in plot_all(paths, Path(tmp), "png")]


# --- layout ---------------------------------------------------------------------------------

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       font-size: 15px; line-height: 1.45; color: #1d2330; max-width: 1400px; margin: 2rem auto; padding: 0 1.25rem; }
h1 { font-size: 1.7rem; margin-bottom: .2rem; }
h2 { font-size: 1.3rem; margin-top: 2.2rem; border-bottom: 1px solid #d5dae3; padding-bottom: .2rem; }
.meta { color: #5b6473; margin-top: 0; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: .6rem 0 1.6rem; font-size: .86rem; }
caption { caption-side: top; text-align: left; font-weight: 600; padding: .3rem 0; white-space: nowrap; }
th, td { border: 1px solid #c3cad6; padding: .26rem .5rem; text-align: left; vertical-align: top; }
table:not(.facts) td:nth-child(-n+2) { white-space: nowrap; }  /* model, method */
thead th, table.facts th { background: #e6ebf3; }
tbody tr:nth-child(even) { background: #f2f5fa; }
.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.facts th { white-space: nowrap; }
figure { margin: 1rem 0 2rem; }
img { max-width: 100%; height: auto; }
figcaption { color: #5b6473; font-size: .9rem; }
"""


def to_html(blocks, title: str, generated: str) -> str:

    e = html.escape
    body = [f"<h1>{e(title)}</h1>", f'<p class="meta">Generated {e(generated)}</p>']
    for kind, value in blocks:
        if kind == "h2":
            body.append(f"<h2>{e(value)}</h2>")
        elif kind == "facts":
            body.append(
                '<table class="facts"><tbody>'
                + "".join(f'<tr><th scope="row">{e(k)}</th><td>{e(v)}</td></tr>' for k, v in value)
                + "</tbody></table>"
            )
        elif kind == "table":
            body.append(f'<div class="scroll">{html_table(value.header, value.rows, value.numeric, value.title)}</div>')
        elif kind == "results":
            tables = render_tables(value, "html", ci=True)
            body.append(f'<div class="scroll">{tables}</div>' if tables.startswith("<") else f"<p>{e(tables)}</p>")
        elif kind == "figure":
            name, png = value
            body.append(
                f'<figure><img src="data:image/png;base64,{base64.b64encode(png).decode()}" alt="{e(name)}">'
                f"<figcaption>{e(name)}</figcaption></figure>"
            )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{e(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n" + "\n".join(body) + "\n</body>\n</html>\n"
    )


def _md(text) -> str:
    """Text for a Markdown table cell or line: no HTML, no cell breaks, on one line."""
    return html.escape(str(text), quote=False).replace("|", "\\|").replace("\n", " ")


def markdown_table(t: Table) -> str:
    lines = [
        f"**{_md(t.title)}**",
        "",
        "| " + " | ".join(map(_md, t.header)) + " |",
        "|" + "|".join("---:" if n else "---" for n in t.numeric) + "|",
    ]
    return "\n".join(lines + ["| " + " | ".join(map(_md, r)) + " |" for r in t.rows])


def to_markdown(blocks, title: str, generated: str) -> str:

    out = [f"# {_md(title)}", f"_Generated {_md(generated)}_"]
    for kind, value in blocks:
        if kind == "h2":
            out.append(f"## {_md(value)}")
        elif kind == "facts":
            out.append("\n".join(f"- **{_md(k)}**: {_md(v)}" for k, v in value))
        elif kind == "table":
            out.append(markdown_table(value))
        elif kind == "results":
            out.append(render_tables(value, "markdown", ci=True))
        elif kind == "figure":
            name, png = value
            out.append(f"![{_md(name)}](data:image/png;base64,{base64.b64encode(png).decode()})")
    return "\n\n".join(out) + "\n"
