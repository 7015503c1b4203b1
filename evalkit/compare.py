"""Compare methods from result CSVs alone: pivot tables of method × length.

Each task's metrics say how its rows aggregate (e.g. token-weighted perplexity
over documents, accuracy over trials, optionally per depth). Each cell shows its
sample count; cells that ran out of memory or were skipped say so. Inconsistent
inputs (the same cell from several runs, or a table cell mixing checkpoints,
task settings or evalkit versions) are refused, not averaged.
"""

from __future__ import annotations

import math
from pathlib import Path

from evalkit.errors import EvalkitError
from evalkit.method import params_label
from evalkit.registry import METRICS, OPTIONS, TASKS
from evalkit.results import legacy as is_legacy
from evalkit.results import read_table, row_key
from evalkit.schema import COLUMN_TYPES, CORE_COLUMNS, FACTORS, fmt, result_columns

FORMATS = ("table", "markdown", "csv", "latex", "html")


def metric_of(name: str):
    """A metric from the tasks' registry (``compare --metric``), with "did you mean"."""

    return METRICS.get(name)


def find_csvs(paths) -> list[Path]:
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(q for q in p.rglob("*.csv") if q.name != "positions.csv")
        elif p.is_file():
            files.append(p)
        else:
            raise EvalkitError(f"{p} does not exist", "give result CSV files or folders that hold them")
    if not files:
        raise EvalkitError(f"no CSV files in {', '.join(map(str, paths))}", "run evalkit run first, or check --out")
    return files


def load_results(paths):
    """All rows of the given CSVs / folders as a DataFrame (with the file in ``_file``)."""
    rows, files = [], find_csvs(paths)
    for f in files:
        rows += [dict(r, _file=str(f)) for r in read_table(f)[1]]  # one-line error for a non-evalkit CSV
    if not rows:
        raise EvalkitError(
            f"no result rows in {', '.join(map(str, files))}",
            "the files are empty or hold only a header: run evalkit run first, or check the path",
        )
    return frame_of(rows)


def frame_of(rows: list[dict]):
    """Result rows (as read from CSV) as a DataFrame typed by the declared column types, each
    with its identity in ``_key``. A row marked ok with a declared float that is not finite
    (a loss, a score) is marked ``nan``: never pooled."""
    import pandas as pd

    columns = list(dict.fromkeys(result_columns() + [c for r in rows for c in r]))
    df = pd.DataFrame(rows, columns=columns + (["_file"] if "_file" not in columns else []))
    df["_key"] = [row_key(r) for r in rows]
    df["_method"] = [row_method_label(r) for r in _with_legacy_params(rows)]
    measured = [c for c, kind in COLUMN_TYPES.items() if kind is float and c not in CORE_COLUMNS]
    given = df[measured].fillna("").astype(str).apply(lambda c: c.str.strip() != "")
    for col in df.columns:
        if COLUMN_TYPES.get(col) in (int, float):
            df[col] = pd.to_numeric(df[col], errors="coerce")
    if len(df):  # (an empty frame's string columns do not combine with booleans)
        nonfinite = (given & ~df[measured].apply(lambda c: c.map(math.isfinite))).any(axis=1)
        df.loc[nonfinite & (df["status"] == "ok"), "status"] = "nan"
    return df


def check_consistent(df) -> None:
    """Refuse to pool rows that should not be pooled: the same cell (identity) measured twice,
    or one table cell made of different checkpoints or evalkit versions. Trials that differ
    only in sample or seed are pooled; different trained lengths of one model and different
    task settings are shown as separate rows (``L=…``, ``chat-template=1``: see
    :func:`summarise`)."""
    ok = df[df["status"] == "ok"]
    twice = ok[ok["_key"].duplicated(keep=False)]
    if len(twice):
        r = twice.iloc[0]
        files = sorted(twice["_file"].dropna().unique())
        raise EvalkitError(
            f"the same cell ({r['method']} {r['task']} at {r['length']}, sample {r['sample']}) "
            f"is measured more than once ({', '.join(files)})",
            "compare the runs separately",
        )
    cell = ["model", "_method", *FACTORS, "trained_len", "task", "length"]
    keyed = df.copy()
    for c in (*FACTORS, "trained_len"):
        keyed[c] = keyed[c].astype(object).where(keyed[c].notna(), "").astype(str)
    for what, col, hint in (
        ("checkpoints", "source", "give one of them another alias in evalkit.toml"),
        ("evalkit versions", "evalkit_version", "compare one version at a time"),
    ):
        mixed = keyed.groupby(cell, dropna=False)[col].nunique(dropna=False)
        mixed = mixed[mixed > 1]
        if len(mixed):
            m = mixed.index[0]
            values = sorted(map(str, keyed.set_index(cell).loc[m][col].unique()))
            raise EvalkitError(f"cell {m[1]} {m[5]} at {m[6]} of {m[0]} mixes {what} ({', '.join(values)})", hint)


def with_settings(sub):
    """``sub`` (one task's rows) with a column per task option in its identity whose value
    differs between the rows (``--chat-template`` on and off, two haystacks, ...), read as the
    identity reads it (an old row's empty value is the default); and those columns' names."""

    task = sub["task"].iloc[0]
    names = [f for f in (TASKS.get(task).identity if task in TASKS else ()) if f in OPTIONS]
    sub, varying = sub.copy(), []
    for name in names:
        values = [dict(k).get(name, "") for k in sub["_key"]]
        if len(set(values)) > 1:
            sub["_" + name] = values
            varying.append("_" + name)
    return sub, varying


def setting_label(column: str, value: str) -> str:

    shown = Path(value).name if "/" in value else value  # a file's name, not its whole path
    return f"{OPTIONS.get(column[1:]).flag_name[2:]}={shown}"


SUMMARY = ["model", "method", "setting", "trained_len", "depth", "length", "value", "low", "high", "n", "status"]


def summarise(df, metric: str, per_depth: bool = False):
    """Long table: one row per (model, method label, [depth], length) with value, its 95% interval
    (``low``, ``high``: as the metric's aggregation gives it; NaN for one sample), n and status."""
    import pandas as pd

    m = metric_of(metric)
    sub = df[df["task"] == m.task]
    if sub.empty:
        return pd.DataFrame(columns=SUMMARY)
    check_consistent(sub)
    sub, varying = with_settings(sub)
    out = []
    several_l = sub.groupby("model")["trained_len"].nunique(dropna=False)
    for (model, label, trained, *setting), g in sub.groupby(
        ["model", "_method", "trained_len"] + varying, sort=False, dropna=False
    ):
        if several_l[model] > 1:  # the same model with different trained lengths: one row each
            label += f" L={trained:g}" if trained == trained else " L=?"
        setting = "".join(" " + setting_label(c, v) for c, v in zip(varying, setting))  # different settings too
        label += setting
        keys = ["depth", "length"] if per_depth else ["length"]
        for k, cell in g.groupby(keys, sort=True):
            k = k if isinstance(k, tuple) else (k,)
            where = dict(model=model, method=label, setting=setting, trained_len=trained,
                         depth=k[0] if per_depth else None, length=int(k[-1]))  # fmt: skip
            out.append({**where, **_cell_summary(m, cell)})
    return pd.DataFrame(out)


def _cell_summary(m, cell) -> dict:
    """One table cell: the metric over the ok rows with its interval, or why there is no number."""
    ok = cell[cell["status"] == "ok"]
    value, status, interval = math.nan, "ok", None
    if len(ok):
        value, interval = m.aggregate(ok)
    elif (cell["status"] == "nan").any():
        status = "nan"  # a non-finite loss: shown, never pooled into a number
    elif (cell["status"] == "oom").any():
        status = "oom"
    else:
        status = "skipped"
    low, high = interval or (math.nan, math.nan)
    return dict(value=value, low=low, high=high, n=len(ok), status=status, n_nan=int((cell["status"] == "nan").sum()))


def _with_legacy_params(rows: list[dict]) -> list[dict]:
    """Rows written before the ``params`` column (evalkit <= 0.2) do not say whether scale / alpha
    were given or derived per length; as those versions did, a factor is named when every row of
    the method (per model and trained length) has the same one."""

    def old(r):
        return is_legacy(r) and not r.get("params")

    legacy: dict = {}
    for r in rows:
        if old(r):
            legacy.setdefault((r.get("model"), r.get("method"), r.get("trained_len")), []).append(r)
    if not legacy:
        return rows
    named: dict = {}
    for key, group in legacy.items():
        parts = []
        for col in FACTORS:
            values = {str(r.get(col) or "") for r in group}
            if len(values) == 1 and "" not in values:
                parts.append(f"{col}={values.pop()}")
        named[key] = ",".join(parts)
    return [
        dict(r, params=named[(r.get("model"), r.get("method"), r.get("trained_len"))]) if old(r) else r for r in rows
    ]


def row_method_label(row: dict) -> str:
    """How a row's method is named in tables and figures: the method, the parameters that differ
    from its defaults (``ntk alpha=2``), ``rope-reset`` when the checkpoint's own scaling was
    removed, ``+ADAPTER`` and ``4bit`` / ``8bit``: every identity setting a model row can differ
    in, so that no table cell pools two of them. Derived factors (scale = length / trained) are not
    named: they differ per column."""

    method = str(row.get("method") or "")
    parts = [method, params_label(method, fmt(row.get("params")))]
    if str(row.get("rope_scaling") or "").startswith("removed:"):
        parts.append("rope-reset")
    if fmt(row.get("adapter")):
        parts.append("+" + Path(fmt(row.get("adapter"))).name)
    parts.append(fmt(row.get("quantize")))
    return " ".join(p for p in parts if p)


def label_key(row: dict) -> tuple:
    """What a method label stands for, to give a positions.csv row its results rows' label."""

    key = dict(row_key(row))
    return tuple(
        key.get(k, "") for k in ("model", "source", "adapter", "quantize", "method", "params", "rope_scaling")
    ) + (fmt(row.get("trained_len")),)


def apply_baseline(long, baseline: str, metric: str):
    """ppl: ratio to the baseline method of the same model, trained length and task settings;
    accuracies: difference."""
    base = long[long["method"] == baseline]
    if base.empty:
        base = long[long["method"].str.split().str[0] == baseline]
    if base.empty:
        raise EvalkitError(
            f"baseline method {baseline!r} is not in the results",
            f"methods: {', '.join(sorted(long['method'].unique()))}",
        )
    keys = ["model", "trained_len", "setting", "length"] + (["depth"] if long["depth"].notna().any() else [])
    merged = long.merge(base[keys + ["value"]].rename(columns={"value": "base"}), on=keys, how="left")
    if metric_of(metric).relative == "ratio":
        merged["value"] = merged["value"] / merged["base"]
    else:
        merged["value"] = merged["value"] - merged["base"]
    return merged.drop(columns="base")


def _number(v: float, metric: str) -> str:
    if metric_of(metric).percent:
        return f"{v:.0%}"
    return f"{v:.3f}" if abs(v) < 1000 else f"{v:.3g}"


def format_value(row, metric: str, relative: bool, ci: bool = False) -> str:
    if row["status"] != "ok":
        return {"oom": "OOM", "nan": "NaN"}.get(row["status"], "skipped")
    v = row["value"]
    if math.isnan(v):
        return "-"
    if relative:
        m = metric_of(metric)
        if m.relative == "ratio":
            text = f"×{v:.3f}"
        else:
            text = f"{100 * v:+.0f} pp" if m.percent else f"{v:+.3f}"
    else:
        text = _number(v, metric)
    if ci and not relative:
        low, high = row.get("low", math.nan), row.get("high", math.nan)
        text += " [one sample]" if math.isnan(low) else f" [{_number(low, metric)}, {_number(high, metric)}]"
    nan = int(row.get("n_nan", 0) or 0)
    return f"{text} ({int(row['n'])}" + (f"; {nan} NaN left out)" if nan else ")")


def pivot(long, metric: str, relative: bool = False, ci: bool = False):
    """Wide table: methods (and depth) as rows, lengths as columns, formatted cells."""
    long = long.copy()
    long["cell"] = [format_value(r, metric, relative, ci) for _, r in long.iterrows()]
    index = ["model", "method"] + (["depth"] if long["depth"].notna().any() else [])
    order = {m: i for i, m in enumerate(dict.fromkeys(long["method"]))}
    wide = long.pivot_table(index=index, columns="length", values="cell", aggfunc="first", sort=False)
    wide = wide.reset_index()
    wide = wide.sort_values(["model", "method"] + index[2:], key=lambda s: s.map(order) if s.name == "method" else s)
    wide.columns = [str(c) for c in wide.columns]
    return wide.fillna("")


def html_table(header, rows, numeric, title: str = "") -> str:
    """An HTML ``<table>`` with every value escaped; ``numeric[i]``: column i holds numbers
    (class ``num``, for right alignment)."""
    import html

    cls = lambda i: ' class="num"' if numeric[i] else ""  # noqa: E731
    lines = ["<table>"] + ([f"<caption>{html.escape(title)}</caption>"] if title else [])
    lines.append(
        "<thead><tr>"
        + "".join(f"<th{cls(i)}>{html.escape(str(c))}</th>" for i, c in enumerate(header))
        + "</tr></thead>"
    )
    lines.append("<tbody>")
    lines += [
        "<tr>" + "".join(f"<td{cls(i)}>{html.escape(str(v))}</td>" for i, v in enumerate(r)) + "</tr>" for r in rows
    ]
    return "\n".join(lines + ["</tbody>", "</table>"])


def render(wide, fmt: str, title: str = "") -> str:
    cols = list(wide.columns)
    n_index = sum(c in ("model", "method", "depth") for c in cols)
    rows = [[str(v) for v in r] for r in wide.itertuples(index=False)]
    if fmt == "html":
        return html_table(cols, rows, [i >= n_index for i in range(len(cols))], title)
    if fmt == "csv":
        return wide.to_csv(index=False)
    if fmt == "markdown":
        lines = [
            "| " + " | ".join(cols) + " |",
            "|" + "|".join(["---"] * n_index + ["---:"] * (len(cols) - n_index)) + "|",
        ]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return (f"**{title}**\n\n" if title else "") + "\n".join(lines)
    if fmt == "latex":
        esc = lambda s: s.replace("%", r"\%").replace("_", r"\_").replace("×", r"$\times$").replace("α", r"$\alpha$")
        lines = [
            r"\begin{tabular}{" + "l" * n_index + "r" * (len(cols) - n_index) + "}",
            r"\toprule",
            " & ".join(esc(c) for c in cols) + r" \\",
            r"\midrule",
        ]
        lines += [" & ".join(esc(v) for v in r) + r" \\" for r in rows]
        lines += [r"\bottomrule", r"\end{tabular}"]
        return (f"% {title}\n" if title else "") + "\n".join(lines)
    widths = [max(len(x) for x in col) for col in zip(cols, *rows)]
    fmt_row = lambda r: "  ".join(x.rjust(w) if i >= n_index else x.ljust(w) for i, (x, w) in enumerate(zip(r, widths)))
    body = [fmt_row(cols), "  ".join("-" * w for w in widths)] + [fmt_row(r) for r in rows]
    return (f"{title}\n" if title else "") + "\n".join(body)


def render_tables(
    df, fmt: str = "table", metrics=None, baseline: str | None = None, per_depth: bool = False, ci: bool = False
) -> str:
    """Every requested metric present in ``df`` as a titled table."""
    if fmt not in FORMATS:
        raise EvalkitError(f"unknown format {fmt!r}", f"use one of {', '.join(FORMATS)}")
    out = []

    for metric in metrics or [n for n, m in METRICS.items() if m.primary]:
        m = metric_of(metric)
        long = summarise(df, metric, per_depth and "depth" in TASKS.get(m.task).identity)
        if long.empty:
            continue
        if baseline:
            long = apply_baseline(long, baseline, metric)
        title = (
            m.title
            + (f" vs {baseline}" if baseline else "")
            + ("; [95% interval]" if ci and not baseline else "")
            + "; (n) = samples; columns: tokens"
        )
        out.append(render(pivot(long, metric, relative=bool(baseline), ci=ci), fmt, title))
    return "\n\n".join(out) if out else "no results to show"
