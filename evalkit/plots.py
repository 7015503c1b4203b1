"""Figures from result CSVs alone, the same bytes for the same CSVs.

For each task's primary metric (the tasks declare them, see ``evalkit tasks``):
- ``<model>_<metric>``: the metric vs context length per method, 95% intervals as bands,
  trained length marked (log scale where the metric says so);
- ``<model>_<metric>_heatmap``: for percentages of tasks with a depth, depth × length,
  one panel per method;
- ``<model>_positions``: mean NLL vs token position at the longest length, for tasks that
  write positions.csv.
"""
from __future__ import annotations

import math

import re
from pathlib import Path

from evalkit.compare import label_key, load_results, row_method_label, setting_label, summarise
from evalkit.results import PROFILE_KEY, profile_key
from evalkit.errors import EvalkitError

FORMATS = ("png", "pdf", "svg")
# no timestamps or software versions inside the files: same CSV, same bytes
METADATA = {"png": {"Software": None}, "pdf": {"CreationDate": None, "Producer": None, "Creator": None},
            "svg": {"Date": None, "Creator": None}}


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-") or "model"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.hashsalt": "evalkit", "font.size": 11, "axes.titlesize": 12})
    return plt


def _figure(width=6.4, height=4.2):
    return _pyplot().subplots(figsize=(width, height), dpi=150)


def _save(fig, out: Path, name: str, fmt: str) -> Path:
    import matplotlib.pyplot as plt

    path = out / f"{name}.{fmt}"
    fig.tight_layout()
    fig.savefig(path, format=fmt, metadata=METADATA[fmt])
    plt.close(fig)
    return path


def _trained_line(ax, trained: float) -> None:
    if not math.isfinite(trained):  # rows that do not say their trained length
        return
    trained = int(trained)
    ax.axvline(trained, color="grey", linestyle="--", linewidth=1)
    ax.text(trained, 0.98, f" trained {trained}", transform=ax.get_xaxis_transform(), va="top", fontsize=9,
            color="grey")


def _length_axis(ax, lengths) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(lengths))
    ax.set_xticklabels([f"{n // 1024}k" if n % 1024 == 0 else str(n) for n in sorted(lengths)])
    ax.minorticks_off()


def plot_versus_length(df, metric, model: str, out, fmt) -> tuple[Path, dict]:
    """One line per method of ``metric`` over context length (95% intervals as bands), the
    trained length marked."""
    from evalkit.tasks import TASKS

    long = summarise(df, metric.name)
    fig, ax = _figure()
    series = {}
    percent = 100 if metric.percent else 1
    for label, g in long.groupby("method", sort=False):
        ok = g[g["status"] == "ok"].sort_values("length")
        series[label] = (ok["length"].tolist(), (percent * ok["value"]).tolist())
        line, = ax.plot(*series[label], marker="o", label=label)
        band = ok[ok["low"].notna()]  # 95% intervals where a cell has more than one sample
        if len(band):
            ax.fill_between(band["length"], percent * band["low"], percent * band["high"], color=line.get_color(),
                            alpha=0.15, linewidth=0)
    if metric.percent:
        ax.set_ylim(-5, 105)
    if metric.log_axis:
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
    _length_axis(ax, long["length"].unique())
    _trained_line(ax, float(df["trained_len"].iloc[0]))
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel(metric.title + (" (%)" if metric.percent else "") + (", log scale" if metric.log_axis else ""))
    title = f"{model}: {metric.title}"
    if "data" in TASKS.get(metric.task).identity:  # say what text it was measured on
        title += " on " + ", ".join(sorted(df.loc[df.task == metric.task, "data"].unique()))
    ax.set_title(title)
    ax.legend(fontsize=9)
    return _save(fig, out, f"{_slug(model)}_{metric.name}", fmt), series


def plot_heatmap(df, metric, model, out, fmt) -> tuple[Path, dict]:
    """A depth × length grid of ``metric`` (a percentage) per method."""
    long = summarise(df, metric.name, per_depth=True)
    labels = list(dict.fromkeys(long["method"]))
    lengths, depths = sorted(long["length"].unique()), sorted(long["depth"].unique())
    import numpy as np

    plt = _pyplot()
    fig, axes = plt.subplots(1, len(labels), figsize=(1.6 + 2.1 * len(labels), 1.6 + 0.4 * len(depths)), dpi=150,
                             squeeze=False, sharey=True)
    series = {}
    for ax, label in zip(axes[0], labels):
        g = long[long["method"] == label]
        grid = np.full((len(depths), len(lengths)), np.nan)
        for _, r in g.iterrows():
            if r["status"] == "ok":
                grid[depths.index(r["depth"]), lengths.index(r["length"])] = 100 * r["value"]
        series[label] = grid
        im = ax.imshow(grid, vmin=0, vmax=100, cmap="RdYlGn", aspect="auto", origin="upper")
        for (i, j), v in np.ndenumerate(grid):
            ax.text(j, i, "n/a" if np.isnan(v) else f"{v:.0f}", ha="center", va="center", fontsize=8)
        ax.set_xticks(range(len(lengths)), [f"{n // 1024}k" if n % 1024 == 0 else str(n) for n in lengths])
        ax.set_yticks(range(len(depths)), [f"{d:.0%}" for d in depths])
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("length")
    axes[0][0].set_ylabel("needle depth")
    fig.colorbar(im, ax=axes[0].tolist(), label="accuracy (%)", shrink=0.9)
    fig.suptitle(f"{model}: {metric.title} by depth and length", fontsize=11, y=1.04)
    path = out / f"{_slug(model)}_{metric.name}_heatmap.{fmt}"
    fig.savefig(path, format=fmt, metadata=METADATA[fmt], bbox_inches="tight")
    plt.close(fig)
    return path, series


def _label_from_results(row: dict, labels: dict) -> str:
    """A positions.csv row's method label: that of its cell's results rows (so a file of evalkit <= 0.2
    is labelled as its table is), else computed from the row itself."""
    return labels.get(label_key(row)) or row_method_label(row)


def plot_positions(profile, df, model, out, fmt) -> tuple[Path, dict]:
    longest = int(profile["length"].max())
    p = profile[profile["length"] == longest]
    fig, ax = _figure()
    series = {}
    several_l = p["trained_len"].nunique(dropna=False) > 1
    keys = [profile_key(r) for r in p.to_dict("records")]  # an empty setting (older rows) reads as its default
    p = p.assign(**{c: [k[PROFILE_KEY.index(c)] for k in keys] for c in _options_in(PROFILE_KEY)})
    varying = [c for c in _options_in(PROFILE_KEY) if p[c].nunique() > 1]  # settings never averaged together
    labels = {label_key(r): r["_method"] for r in df.to_dict("records")}
    p = p.assign(_method=[_label_from_results(r, labels) for r in p.to_dict("records")])
    for (label, trained, *setting), g in p.groupby(["_method", "trained_len"] + varying, sort=False, dropna=False):
        if several_l:  # one line per trained length, as in the tables (never averaged together)
            label += f" L={trained:g}" if trained == trained else " L=?"
        label += "".join(" " + setting_label("_" + c, v) for c, v in zip(varying, setting))
        # token-weighted mean over documents per bucket
        g = g.assign(w=g["position_end"] - g["position_start"])
        per = g.groupby("position_start").apply(lambda b: (b["nll"] * b["w"]).sum() / b["w"].sum(),
                                                include_groups=False)
        mid = (per.index + (g.groupby("position_start")["position_end"].first() - per.index) / 2).tolist()
        series[label] = (mid, per.tolist())
        ax.plot(*series[label], label=label, linewidth=1.2)
    _trained_line(ax, float(df["trained_len"].iloc[0]))
    ax.set_xlabel("token position")
    ax.set_ylabel("mean NLL per bucket (nats)")
    windows = sorted({s for s in p["stride"] if s != "0"}, key=int)
    ax.set_title(f"{model}: loss by position at {longest} tokens" if not windows else
                 f"{model}: loss by document position, windows of {longest} (stride {', '.join(windows)})")
    ax.legend(fontsize=9)
    return _save(fig, out, f"{_slug(model)}_positions", fmt), series


def _options_in(columns) -> list[str]:
    from evalkit.tasks import OPTIONS

    return [c for c in columns if c in OPTIONS]


def profile_tasks() -> list[str]:
    """The tasks that write per-position losses to positions.csv."""
    from evalkit.tasks import TASKS

    return [n for n, t in TASKS.items() if t.profile]


def load_profiles(paths):
    import pandas as pd

    from evalkit.results import PROFILE_COLUMNS, read_profile

    frames = []
    for p in map(Path, paths):
        for f in ([p] if p.is_file() and p.name == "positions.csv" else sorted(p.rglob("positions.csv"))
                  if p.is_dir() else []):
            frames.append(pd.DataFrame(read_profile(f), columns=PROFILE_COLUMNS))
    if not frames:
        return None
    prof = pd.concat(frames, ignore_index=True)
    for c in ("length", "position_start", "position_end", "nll", "trained_len"):
        prof[c] = pd.to_numeric(prof[c], errors="coerce")
    finite = prof[["length", "position_start", "position_end", "nll"]].apply(lambda c: c.map(math.isfinite)).all(axis=1)
    return prof[finite]  # a non-finite or unreadable value is never drawn as a number


def plot_all(paths, out: Path, fmt: str = "png") -> dict[Path, dict]:
    """Every figure the results allow, per model; returns {file: plotted series}."""
    if fmt not in FORMATS:
        raise EvalkitError(f"unknown figure format {fmt!r}", f"use one of {', '.join(FORMATS)}")
    df = load_results(paths)
    profile = load_profiles(paths)
    out.mkdir(parents=True, exist_ok=True)
    made = {}
    from evalkit.tasks import METRICS, TASKS

    for model, g in df.groupby("model", sort=True):
        for metric in (m for _, m in METRICS.items() if m.primary and (g["task"] == m.task).any()):
            made.update([plot_versus_length(g, metric, model, out, fmt)])
            if metric.percent and "depth" in TASKS.get(metric.task).identity:
                made.update([plot_heatmap(g, metric, model, out, fmt)])
        if profile is not None and (profile["model"] == model).any():
            made.update([plot_positions(profile[profile["model"] == model], g, model, out, fmt)])
    return made
