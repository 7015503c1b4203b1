"""Figures from result CSVs alone, the same bytes for the same CSVs.

For each task's primary metric (the tasks declare them, see ``evalkit tasks``):
- ``<model>_<metric>``: the metric vs context length per method, 95% intervals as bands,
  trained length marked (log scale where the metric says so); measured at one length only,
  one bar per method instead (a dot on a log axis) with its value written beside it;
- ``<model>_<metric>_heatmap``: for percentages of tasks with a depth, depth × length,
  one panel per method;
- ``<model>_positions``: mean NLL vs token position at the longest length, for tasks that
  write positions.csv.

Every figure is meant to be pasted as is: the value axis is labelled in plain numbers across
the data's range, legends sit outside the axes, methods beyond ten colours differ by marker
and line style as well, and methods that tie stay visible (each drawn thinner than the one
below). ``draw_all`` makes the figures, ``plot_all`` writes them.
"""

from __future__ import annotations

import math
import re
import textwrap
from pathlib import Path

from evalkit.axes import _length_axis, _position_axis, _value_axis
from evalkit.axes import length_label as _length_label
from evalkit.compare import label_key, load_results, row_method_label, setting_label, summarise
from evalkit.errors import EvalkitError
from evalkit.registry import METRICS, OPTIONS, TASKS
from evalkit.results import profile_fields, profile_key, read_profile
from evalkit.schema import profile_columns, profile_task

FORMATS = ("png", "pdf", "svg")
# no timestamps or software versions inside the files: same CSV, same bytes
METADATA = {
    "png": {"Software": None},
    "pdf": {"CreationDate": None, "Producer": None, "Creator": None},
    "svg": {"Date": None, "Creator": None},
}
MARKERS, LINESTYLES = "osD^v", ("-", "--", ":", "-.", (0, (5, 1, 1, 1)))
# labelled ticks per decade on a log axis, sparsest first: the densest whose labels fit is used
LEGEND_ROWS = 18  # more methods than this: the legend gets more columns
HEATMAP_COLUMNS = 6  # panels per row of a heatmap figure


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-") or "model"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.hashsalt": "evalkit", "font.size": 11, "axes.titlesize": 12})
    return plt


def _figure(width=6.4, height=4.2, **kw):
    # constrained layout makes room for what sits outside the axes (legend, colour bar)
    return _pyplot().subplots(figsize=(width, height), dpi=150, layout="constrained", **kw)


def _style(i: int) -> dict:
    """The i-th method's look: ten colours, then the colours again with other markers and dashes."""
    return dict(
        color=f"C{i % 10}", marker=MARKERS[i // 10 % len(MARKERS)], linestyle=LINESTYLES[i // 10 % len(LINESTYLES)]
    )


def _under(i: int, n: int) -> float:
    """1 for the first of ``n`` methods drawn, 0 for the last. Where methods tie, each later one is
    drawn thinner on top of the earlier ones, which show round it."""
    return 1 - i / (n - 1) if n > 1 else 0.5


def _legend_width(labels) -> float:
    """Inches a one-column legend of ``labels`` takes at font size 9 (estimate, to widen the figure)."""
    return 0.9 + 0.075 * max((len(str(s)) for s in labels), default=0)


def _legend_outside(ax) -> None:
    """The legend to the right of the axes, where it can never cover a curve."""
    n = len(ax.get_legend_handles_labels()[1])
    if n:
        ax.legend(
            loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0, fontsize=9, ncol=math.ceil(n / LEGEND_ROWS)
        )


def _trained_line(ax, trained: float) -> None:
    """A dashed line at the trained length, named above the axes where no data point can hide it."""
    if not math.isfinite(trained):  # rows that do not say their trained length
        return
    trained = int(trained)
    ax.axvline(trained, color="grey", linestyle="--", linewidth=1)
    top = ax.secondary_xaxis("top")
    top.set_xticks([trained], [f"trained {trained}"], fontsize=9, color="grey")
    top.tick_params(length=3, color="grey")
    top.minorticks_off()


# --- figures -------------------------------------------------------------------------------------


def _title(df, metric, model: str) -> str:

    title = f"{model}: {metric.title}"
    for name in getattr(TASKS.get(metric.task), "title_fields", ()):  # say what text it was measured on
        title += " on " + ", ".join(sorted(df.loc[df.task == metric.task, name].unique()))
    return title


def _wrap(title: str, inches: float, size: float = 12) -> str:
    """``title`` in lines that fit ``inches`` at font size ``size`` (an average glyph is ~0.53 em)."""
    return "\n".join(textwrap.fill(line, max(20, int(inches * 72 / (0.53 * size)))) for line in title.split("\n"))


def _heading(fig, title: str) -> None:
    """The figure's title, centred on the figure (not on the axes, which wide tick labels or a
    legend push off centre) and wrapped to its width: it can never run off an edge."""
    fig.suptitle(_wrap(title, fig.get_figwidth() - 0.4))


def _axis_label(metric) -> str:
    return metric.title + (" (%)" if metric.percent else "") + (", log scale" if metric.log_axis else "")


def draw_versus_length(df, metric, model: str):
    """One line per method of ``metric`` over context length (95% intervals as bands), the trained
    length marked; measured at one length only, a bar per method instead. Returns (figure, series)."""
    long = summarise(df, metric.name)
    if long["length"].nunique() == 1:
        return _draw_one_length(df, long, metric, model)
    labels = list(dict.fromkeys(long["method"]))
    fig, ax = _figure(4.8 + _legend_width(labels))
    series = {}
    percent = 100 if metric.percent else 1
    for i, (label, g) in enumerate(long.groupby("method", sort=False)):
        ok = g[g["status"] == "ok"].sort_values("length")
        series[label] = (ok["length"].tolist(), (percent * ok["value"]).tolist())
        style = _style(i)
        under = _under(i, len(labels))
        ax.plot(*series[label], label=label, markersize=4 + 4 * under, linewidth=1.2 + 1.6 * under, **style)
        band = ok[ok["low"].notna()]  # 95% intervals where a cell has more than one sample
        if len(band):
            ax.fill_between(
                band["length"],
                percent * band["low"],
                percent * band["high"],
                color=style["color"],
                alpha=0.15,
                linewidth=0,
            )
    if metric.percent:
        ax.set_ylim(-5, 105)
    _value_axis(ax.yaxis, metric.log_axis)
    _length_axis(ax, long["length"].unique())
    _trained_line(ax, float(df["trained_len"].iloc[0]))
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel(_axis_label(metric))
    _heading(fig, _title(df, metric, model))
    _legend_outside(ax)
    return fig, series


def _draw_one_length(df, long, metric, model: str):
    """Every method at the one length measured: a bar each (on a log axis a dot), its 95% interval as
    a whisker, its value written in a column right of the axes; a cell without a value says why."""
    length, trained = int(long["length"].iloc[0]), float(df["trained_len"].iloc[0])
    fig, ax = _figure(6.4, 1.5 + 0.32 * len(long))
    percent = 100 if metric.percent else 1
    beside = ax.get_yaxis_transform()  # x in axes fractions, y in rows
    series = {}
    for i, r in enumerate(long.itertuples()):
        series[r.method] = ([], [])
        if r.status != "ok":
            ax.text(
                1.03,
                i,
                {"oom": "OOM", "nan": "NaN"}.get(r.status, r.status),
                transform=beside,
                va="center",
                fontsize=9,
                color="grey",
            )
            continue
        v, style = percent * r.value, _style(i)
        series[r.method] = ([length], [v])
        # an interval's end can sit a rounding error past its value (Wilson's at 0 of 3): never below 0
        whisker = None if math.isnan(r.low) else [[max(v - percent * r.low, 0)], [max(percent * r.high - v, 0)]]
        error_kw = dict(ecolor="0.35", elinewidth=1, capsize=3)
        if metric.log_axis:  # a bar's length means nothing on a log axis
            ax.errorbar(v, i, xerr=whisker, fmt=style["marker"], color=style["color"], markersize=7, **error_kw)
        else:
            ax.barh(i, v, height=0.6, color=style["color"], xerr=whisker, error_kw=error_kw)
        ax.text(1.03, i, f"{v:.0f}%" if metric.percent else f"{v:.3f}", transform=beside, va="center", fontsize=9)
    ax.set_yticks(range(len(long)), long["method"].tolist())
    ax.set_ylim(len(long) - 0.5, -0.5)  # the first method on top
    ax.grid(axis="y", color="0.85", linestyle=":")
    ax.set_axisbelow(True)
    _value_axis(ax.xaxis, metric.log_axis)
    if metric.percent:
        ax.set_xlim(0, 102)
    elif not metric.log_axis:
        ax.set_xlim(left=min(0, ax.get_xlim()[0]))  # bars start at zero
    ax.set_xlabel(_axis_label(metric))
    where = f"at {length} tokens" + (f" (trained length {int(trained)})" if math.isfinite(trained) else "")
    _heading(fig, f"{_title(df, metric, model)}\n{where}")
    return fig, series


def draw_heatmap(df, metric, model):
    """A depth × length grid of ``metric`` (a percentage) per method, in rows of at most six panels.
    Returns (figure, {method: grid})."""
    import numpy as np

    long = summarise(df, metric.name, per_depth=True)
    labels = list(dict.fromkeys(long["method"]))
    lengths, depths = sorted(long["length"].unique()), sorted(long["depth"].unique())
    cols = min(len(labels), HEATMAP_COLUMNS)
    rows = math.ceil(len(labels) / cols)
    panel = max(1.5, 0.5 + 0.45 * len(lengths))  # wide enough for every length's label
    fig, axes = _figure(
        1.2 + panel * cols, 0.6 + rows * (1.2 + 0.4 * len(depths)), nrows=rows, ncols=cols, squeeze=False, sharey=True
    )
    series = {}
    for k, (ax, label) in enumerate(zip(axes.flat, labels)):
        g = long[long["method"] == label]
        grid = np.full((len(depths), len(lengths)), np.nan)
        for _, r in g.iterrows():
            if r["status"] == "ok":
                grid[depths.index(r["depth"]), lengths.index(r["length"])] = 100 * r["value"]
        series[label] = grid
        im = ax.imshow(grid, vmin=0, vmax=100, cmap="RdYlGn", aspect="auto", origin="upper")
        for (i, j), v in np.ndenumerate(grid):
            ax.text(j, i, "n/a" if np.isnan(v) else f"{v:.0f}", ha="center", va="center", fontsize=8)
        ax.set_xticks(range(len(lengths)), [_length_label(n) for n in lengths])
        ax.set_yticks(range(len(depths)), [f"{d:.0%}" for d in depths])
        ax.set_title(textwrap.fill(label, 18, break_long_words=False), fontsize=10)
        if k + cols >= len(labels):  # no panel below this one
            ax.set_xlabel("length")
    for ax in axes.flat[len(labels) :]:
        ax.set_visible(False)
    for row in axes:
        row[0].set_ylabel("needle depth")
    fig.colorbar(im, ax=axes, label="accuracy (%)", shrink=0.9)
    fig.suptitle(_wrap(f"{model}: {metric.title} by depth and length", fig.get_figwidth() - 0.4, 11), fontsize=11)
    return fig, series


def _results_labels(df) -> dict:
    """{label_key: method label} of the results rows, so that a positions.csv row is labelled as its
    table row is (a file of evalkit <= 0.2 included). A positions.csv of evalkit 0.1 has no source
    column: its rows also find their label under the key with no source, where only one label has it."""
    labels = {label_key(r): r["_method"] for r in df.to_dict("records")}
    sourceless = {}
    for key, label in labels.items():
        sourceless.setdefault(key[:1] + ("",) + key[2:], set()).add(label)
    return {**{k: v.pop() for k, v in sourceless.items() if len(v) == 1}, **labels}


def _label_from_results(row: dict, labels: dict) -> str:
    """A positions.csv row's method label: that of its cell's results rows, else computed from the row."""
    return labels.get(label_key(row)) or row_method_label(row)


def draw_positions(profile, df, model):
    """Mean NLL by token position at the longest length, one line per method. Returns (figure, series)."""
    longest = int(profile["length"].max())
    p = profile[profile["length"] == longest]
    several_l = p["trained_len"].nunique(dropna=False) > 1
    keys = [profile_key(r) for r in p.to_dict("records")]  # an empty setting (older rows) reads as its default
    fields = profile_fields()
    p = p.assign(**{c: [k[fields.index(c)] for k in keys] for c in _options_in(fields)})
    varying = [c for c in _options_in(fields) if p[c].nunique() > 1]  # settings never averaged together
    labels = _results_labels(df)
    p = p.assign(_method=[_label_from_results(r, labels) for r in p.to_dict("records")])
    series = {}
    for (label, trained, *setting), g in p.groupby(["_method", "trained_len"] + varying, sort=False, dropna=False):
        if several_l:  # one line per trained length, as in the tables (never averaged together)
            label += f" L={trained:g}" if trained == trained else " L=?"
        label += "".join(" " + setting_label("_" + c, v) for c, v in zip(varying, setting))
        # token-weighted mean over documents per bucket
        g = g.assign(w=g["position_end"] - g["position_start"])
        per = g.groupby("position_start").apply(
            lambda b: (b["nll"] * b["w"]).sum() / b["w"].sum(), include_groups=False
        )
        mid = (per.index + (g.groupby("position_start")["position_end"].first() - per.index) / 2).tolist()
        series[label] = (mid, per.tolist())
    fig, ax = _figure(4.8 + _legend_width(series))
    for i, (label, xy) in enumerate(series.items()):
        style = _style(i)
        ax.plot(
            *xy,
            label=label,
            linewidth=0.9 + 1.5 * _under(i, len(series)),
            color=style["color"],
            linestyle=style["linestyle"],
        )
    _value_axis(ax.yaxis, log=False)
    _position_axis(ax, longest)
    _trained_line(ax, float(df["trained_len"].iloc[0]))
    ax.set_xlabel("token position")
    ax.set_ylabel("mean NLL per bucket (nats)")
    _heading(fig, profile_task().profile_title(model, longest, p))
    _legend_outside(ax)
    return fig, series


def _options_in(columns) -> list[str]:

    return [c for c in columns if c in OPTIONS]


def load_profiles(paths):
    import pandas as pd

    frames = []
    for p in map(Path, paths):
        for f in (
            [p] if p.is_file() and p.name == "positions.csv" else sorted(p.rglob("positions.csv")) if p.is_dir() else []
        ):
            frames.append(pd.DataFrame(read_profile(f), columns=profile_columns()))
    if not frames:
        return None
    prof = pd.concat(frames, ignore_index=True)
    for c in ("length", "position_start", "position_end", "nll", "trained_len"):
        prof[c] = pd.to_numeric(prof[c], errors="coerce")
    finite = prof[["length", "position_start", "position_end", "nll"]].apply(lambda c: c.map(math.isfinite)).all(axis=1)
    return prof[finite]  # a non-finite or unreadable value is never drawn as a number


def draw_all(paths):
    """Every figure the results allow, per model, drawn but not written: (name, figure, series) one at a
    time. The files are read at once; the caller closes each figure."""
    df, profile = load_results(paths), load_profiles(paths)
    return _figures(df, profile)


def _figures(df, profile):

    for model, g in df.groupby("model", sort=True):
        for metric in (m for _, m in METRICS.items() if m.primary and (g["task"] == m.task).any()):
            yield (f"{_slug(model)}_{metric.name}", *draw_versus_length(g, metric, model))
            if metric.percent and "depth" in TASKS.get(metric.task).identity:
                yield (f"{_slug(model)}_{metric.name}_heatmap", *draw_heatmap(g, metric, model))
        if profile is not None and (profile["model"] == model).any():
            yield (f"{_slug(model)}_positions", *draw_positions(profile[profile["model"] == model], g, model))


def plot_all(paths, out: Path, fmt: str = "png") -> dict[Path, dict]:
    """Every figure the results allow, per model, written to ``out``; returns {file: plotted series}."""
    if fmt not in FORMATS:
        raise EvalkitError(f"unknown figure format {fmt!r}", f"use one of {', '.join(FORMATS)}")
    figures = draw_all(paths)
    out.mkdir(parents=True, exist_ok=True)
    plt = _pyplot()
    before, made = set(plt.get_fignums()), {}
    try:
        for name, fig, series in figures:
            path = out / f"{name}.{fmt}"
            fig.savefig(path, format=fmt, metadata=METADATA[fmt])
            plt.close(fig)
            made[path] = series
    finally:  # a figure that failed half-drawn is closed too
        for number in set(plt.get_fignums()) - before:
            plt.close(number)
    return made
