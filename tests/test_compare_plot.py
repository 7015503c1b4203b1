"""compare and plot on small hand-made CSVs, expected values computed by hand."""

import csv
import math
from itertools import combinations
from pathlib import Path

import pytest
from evalkit01 import POSITIONS_HEADER
from evalkit01 import RESULTS_HEADER as COLUMNS  # rows as evalkit 0.1 wrote them
from typer.testing import CliRunner

from evalkit.cli import app
from evalkit.compare import load_results, pivot, summarise
from evalkit.errors import EvalkitError
from evalkit.plots import draw_all, plot_all
from evalkit.results import PROFILE_COLUMNS

runner = CliRunner()
BASE = dict(
    model="m",
    trained_len="4096",
    seed="0",
    evalkit_version="0.1.0",
    status="ok",
    data="stdlib",
    stride="0",
    device="cpu",
    dtype="float32",
    created_at="2026-01-01T00:00:00+00:00",
)


def ppl_row(method, length, sample, nll, tokens, scale="", **kw):
    return dict(
        BASE,
        method=method,
        task="ppl",
        length=length,
        sample=sample,
        nll=nll,
        tokens=tokens,
        ppl=math.exp(nll) if nll != "" else "",
        scale=scale,
        doc=f"d{sample}",
        **kw,
    )


def pk_row(method, length, depth, sample, correct, **kw):
    return dict(
        BASE,
        method=method,
        task="passkey",
        length=length,
        depth=depth,
        sample=sample,
        correct=correct,
        data="",
        stride="",
        tokens=length,
        **kw,
    )


def write(path, rows, columns=COLUMNS):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.fixture
def results(tmp_path):
    rows = [
        ppl_row("none", 4096, 0, 2.0, 4095),
        ppl_row("none", 4096, 1, 3.0, 1000),
        ppl_row("none", 8192, 0, 4.0, 8191),
        ppl_row("pi", 4096, 0, 2.5, 4095, scale="2"),
        ppl_row("pi", 8192, 0, 2.2, 8191, scale="2"),
        dict(ppl_row("ntk", 8192, 0, "", ""), status="oom", ppl=""),
        pk_row("none", 4096, 0.0, 0, 1),
        pk_row("none", 4096, 0.0, 1, 0),
        pk_row("none", 4096, 1.0, 0, 1),
        pk_row("none", 8192, 0.0, 0, 0),
        pk_row("none", 8192, 1.0, 0, 0),
        pk_row("pi", 4096, 0.0, 0, 1, scale="2"),
        pk_row("pi", 8192, 0.0, 0, 1, scale="2"),
    ]
    return write(tmp_path / "run" / "results.csv", rows)


def test_token_weighted_perplexity_and_counts(results):
    long = summarise(load_results([results]), "ppl").set_index(["method", "length"])
    expected = math.exp((2.0 * 4095 + 3.0 * 1000) / 5095)  # not the mean of per-document ppl
    assert long.loc[("none", 4096), "value"] == pytest.approx(expected)
    assert long.loc[("none", 4096), "n"] == 2
    assert long.loc[("pi scale=2", 8192), "value"] == pytest.approx(math.exp(2.2))
    assert long.loc[("ntk", 8192), "status"] == "oom" and long.loc[("ntk", 8192), "n"] == 0


def test_passkey_accuracy_overall_and_per_depth(results):
    df = load_results([results])
    overall = summarise(df, "passkey").set_index(["method", "length"])
    assert overall.loc[("none", 4096), "value"] == pytest.approx(2 / 3) and overall.loc[("none", 4096), "n"] == 3
    depth = summarise(df, "passkey", per_depth=True).set_index(["method", "depth", "length"])
    assert depth.loc[("none", 0.0, 4096), "value"] == 0.5 and depth.loc[("none", 1.0, 4096), "value"] == 1.0


def test_pivot_shows_failed_cells_as_such(results):
    wide = pivot(summarise(load_results([results]), "ppl"), "ppl")
    row = wide[wide["method"] == "ntk"].iloc[0]
    assert row["8192"] == "OOM" and list(wide.columns) == ["model", "method", "4096", "8192"]


def test_cli_formats_and_baseline(results):
    md = runner.invoke(app, ["compare", str(results), "--metric", "ppl", "--format", "markdown"]).output
    assert "| m | none | 8.991 (2) | 54.598 (1) |" in md  # exp((2·4095 + 3·1000) / 5095), exp(4)
    rel = runner.invoke(app, ["compare", str(results.parent), "--metric", "ppl", "--baseline", "none"]).output
    assert "×1.000 (2)" in rel and f"×{math.exp(2.2) / math.exp(4.0):.3f} (1)" in rel
    pk = runner.invoke(app, ["compare", str(results), "--metric", "passkey", "--baseline", "none"]).output
    assert "+100 pp (1)" in pk
    tex = runner.invoke(app, ["compare", str(results), "--format", "latex", "--metric", "passkey"]).output
    assert r"\begin{tabular}{llrr}" in tex and r"67\% (3)" in tex
    flat = runner.invoke(app, ["compare", str(results), "--format", "csv", "--method", "pi"]).output
    assert flat.splitlines()[0] == "model,method,4096,8192" and "none" not in flat


def test_seeds_pool_passkey_trials_but_a_perplexity_cell_measured_again_is_refused(results, tmp_path):
    # perplexity does not use the seed: the same document at another seed is the same measurement
    other = write(tmp_path / "other" / "results.csv", [dict(ppl_row("none", 4096, 0, 9.0, 4095), seed="1")])
    with pytest.raises(EvalkitError, match="measured more than once"):
        summarise(load_results([results, other]), "ppl")
    ok = runner.invoke(app, ["compare", str(results), str(other), "--seed", "0", "--metric", "ppl"])
    assert ok.exit_code == 0, ok.output
    # passkey: seed 1 draws other keys, so its trials add to seed 0's (n counts both)
    more = write(tmp_path / "more" / "results.csv", [dict(pk_row("none", 4096, 0.5, 0, 0), seed="1")])
    long = summarise(load_results([results, more]), "passkey")
    before = summarise(load_results([results]), "passkey")
    cell = lambda t: t[(t["method"] == "none") & (t["length"] == 4096)].iloc[0]
    assert cell(long)["n"] == cell(before)["n"] + 1


def test_a_table_cell_from_two_checkpoints_is_refused_and_trained_lengths_are_kept_apart(results, tmp_path):
    moved = write(tmp_path / "moved" / "results.csv", [dict(ppl_row("none", 4096, 7, 2.0, 4095), source="/other")])
    with pytest.raises(EvalkitError, match="mixes checkpoints"):
        summarise(load_results([results, moved]), "ppl")
    longer = write(tmp_path / "l" / "results.csv", [dict(ppl_row("none", 4096, 7, 2.0, 4095), trained_len="2048")])
    labels = set(summarise(load_results([results, longer]), "ppl")["method"])
    assert {"none L=2048", "none L=4096"} <= labels  # one row per trained length, never pooled


def test_a_non_finite_loss_is_shown_as_nan_and_never_pooled(results, tmp_path):
    bad = write(tmp_path / "nan" / "results.csv", [ppl_row("none", 16384, 0, float("nan"), 16383)])
    long = summarise(load_results([bad]), "ppl")
    assert long.iloc[0]["status"] == "nan" and long.iloc[0]["n"] == 0
    table = runner.invoke(app, ["compare", str(bad)]).output
    assert "NaN" in table and "1.000" not in table


def test_mixed_versions_and_duplicates_are_refused(results, tmp_path):
    newer = write(tmp_path / "v2" / "results.csv", [dict(ppl_row("none", 4096, 5, 9.0, 4095), evalkit_version="0.2.0")])
    result = runner.invoke(app, ["compare", str(results), str(newer)])
    assert result.exit_code == 2 and "mixes evalkit versions" in result.output
    again = write(tmp_path / "again" / "results.csv", [ppl_row("none", 8192, 0, 4.1, 8191)])
    result = runner.invoke(app, ["compare", str(results), str(again)])
    assert result.exit_code == 2 and "measured more than once" in result.output


def test_non_evalkit_csv_is_refused(tmp_path):
    bad = tmp_path / "x.csv"
    bad.write_text("a,b\n1,2\n")
    result = runner.invoke(app, ["compare", str(bad)])
    assert result.exit_code == 2 and "not an evalkit results file" in result.output


def test_figures_hold_the_expected_series_and_are_reproducible(results, tmp_path):
    write(
        results.parent / "positions.csv",
        [
            dict(
                model="m",
                method=m,
                scale=s,
                alpha="",
                trained_len="4096",
                length="8192",
                sample="0",
                doc="d0",
                data="stdlib",
                stride="0",
                seed="0",
                position_start=a,
                position_end=a + 4096,
                nll=v,
            )
            for m, s, a, v in [
                ("none", "", 0, 2.0),
                ("none", "", 4096, 5.0),
                ("pi", "2", 0, 2.1),
                ("pi", "2", 4096, 2.3),
            ]
        ],
        PROFILE_COLUMNS,
    )
    made = plot_all([results.parent], tmp_path / "a")
    names = sorted(p.name for p in made)
    assert names == ["m_passkey.png", "m_passkey_heatmap.png", "m_positions.png", "m_ppl.png"]
    series = {p.name: s for p, s in made.items()}
    assert series["m_ppl.png"]["pi scale=2"] == (
        [4096, 8192],
        [pytest.approx(math.exp(2.5)), pytest.approx(math.exp(2.2))],
    )
    assert series["m_ppl.png"]["none"][0] == [4096, 8192]
    assert "ntk" in series["m_ppl.png"] and series["m_ppl.png"]["ntk"] == ([], [])  # OOM: no point drawn
    assert series["m_passkey.png"]["none"][1] == [pytest.approx(200 / 3), 0.0]
    assert series["m_passkey_heatmap.png"]["none"].tolist() == [[50.0, 0.0], [100.0, 0.0]]
    assert series["m_positions.png"]["none"] == ([2048.0, 6144.0], [2.0, 5.0])
    for p in made:
        assert p.stat().st_size > 5000
    plot_all([results.parent], tmp_path / "b")
    for p in made:
        assert (tmp_path / "b" / p.name).read_bytes() == p.read_bytes()


@pytest.mark.parametrize("fmt", ["pdf", "svg"])
def test_vector_formats_are_reproducible(results, tmp_path, fmt):
    a = plot_all([results], tmp_path / "a", fmt)
    plot_all([results], tmp_path / "b", fmt)
    assert sorted(p.suffix for p in a) == [f".{fmt}"] * 3
    for p in a:
        assert (tmp_path / "b" / p.name).read_bytes() == p.read_bytes()


def test_intervals_on_request_wilson_for_accuracy_and_one_sample_said_so(tmp_path):
    rows = [pk_row("none", 4096, 0.5, i, int(i < 8)) for i in range(10)] + [pk_row("ntk", 4096, 0.5, 0, 1)]
    path = write(tmp_path / "ci" / "results.csv", rows)
    table = runner.invoke(app, ["compare", str(path), "--ci", "--format", "csv"]).output
    assert "80% [49%, 94%] (10)" in table  # Wilson 95% for 8/10: 0.490 .. 0.943
    assert "100% [one sample] (1)" in table
    plain = runner.invoke(app, ["compare", str(path)]).output
    assert "[" not in plain  # only on request


def test_baseline_and_position_lines_stay_within_one_trained_length(results, tmp_path):
    rows = [
        dict(ppl_row(m, 4096, 0, nll, 4095), trained_len=L)
        for m, L, nll in (("none", "4096", 2.0), ("pi", "4096", 3.0), ("none", "2048", 4.0), ("pi", "2048", 4.4))
    ]
    path = write(tmp_path / "mixed" / "results.csv", rows)
    long = summarise(load_results([path]), "ppl")
    from evalkit.compare import apply_baseline

    ratio = apply_baseline(long, "none", "ppl").set_index("method")["value"]
    assert ratio["pi L=4096"] == pytest.approx(math.exp(3.0 - 2.0))  # against its own none
    assert ratio["pi L=2048"] == pytest.approx(math.exp(4.4 - 4.0))
    assert ratio["none L=2048"] == pytest.approx(1.0)
    profile = [
        dict(
            model="m",
            method=m,
            trained_len=L,
            length=4096,
            sample=0,
            doc="d0",
            data="stdlib",
            stride="0",
            seed="0",
            position_start=0,
            position_end=256,
            nll=v,
            source="",
        )
        for m, L, v in (("pi", "4096", 3.0), ("pi", "2048", 4.4))
    ]
    write(tmp_path / "mixed" / "positions.csv", profile, PROFILE_COLUMNS)
    made = plot_all([tmp_path / "mixed"], tmp_path / "figs")
    lines = next(series for f, series in made.items() if f.name.endswith("_positions.png"))
    assert {label: ys for label, (xs, ys) in lines.items()} == {"pi L=4096": [3.0], "pi L=2048": [4.4]}


def test_a_baseline_is_taken_within_the_same_task_settings(tmp_path):
    """With and without chat template in one folder: each row is compared with the baseline of
    its own setting (none 100%/0%, ntk 100%/100% -> ntk +0 pp without, +100 pp with)."""
    rows = []
    for s in range(4):
        rows += [
            pk_row("none", 4096, 0.5, s, 1, chat_template=0),
            pk_row("none", 4096, 0.5, s, 0, chat_template=1),
            pk_row("ntk", 4096, 0.5, s, 1, chat_template=0),
            pk_row("ntk", 4096, 0.5, s, 1, chat_template=1),
        ]
    path = write(tmp_path / "r" / "results.csv", rows, COLUMNS + ["chat_template"])
    table = runner.invoke(app, ["compare", str(path), "--baseline", "none", "--format", "csv"]).output
    cells = {line.split(",")[1]: line.split(",")[2] for line in table.splitlines()[1:] if line.startswith("m,")}
    assert cells == {
        "none chat-template=0": "+0 pp (4)",
        "none chat-template=1": "+0 pp (4)",
        "ntk chat-template=0": "+0 pp (4)",
        "ntk chat-template=1": "+100 pp (4)",
    }, table


def test_rewriting_a_results_file_keeps_its_permissions(tmp_path):
    import os
    import stat

    from evalkit.results import CsvAppender, result_columns

    path = write(tmp_path / "results.csv", [ppl_row("none", 4096, 0, 2.0, 4095)])  # the 0.1 layout
    os.chmod(path, 0o644)
    CsvAppender(path, result_columns()).close()  # adds the newer columns: a rewrite
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert "min_doc_tokens" in path.read_text().splitlines()[0]


# --- figures a researcher can paste: every shape of result --------------------------------------
# The figures are drawn (laid out as when saved) and read back from matplotlib; each dataset below
# is made by hand, and what a figure must show is computed from that data, not from the plot code.

PARAMS = COLUMNS + ["params"]  # rows that name their parameters (ntk alpha=2)


@pytest.fixture
def draw():
    """draw(folder) -> {figure name: (figure, series)}, each figure laid out; all closed afterwards."""
    import matplotlib.pyplot as plt

    made = []

    def draw(folder):
        figures = {name: (fig, series) for name, fig, series in draw_all([folder])}
        for fig, _ in figures.values():
            fig.canvas.draw()
            made.append(fig)
        return figures

    yield draw
    for fig in made:
        plt.close(fig)


def in_view(axis):
    """The major tick labels ``axis`` draws: (value, Text) inside its view, with text."""
    lo, hi = sorted(axis.get_view_interval())
    slack = 1e-9 * max(abs(lo), abs(hi), 1)
    return [
        (loc, t)
        for loc, t in zip(axis.get_majorticklocs(), axis.get_majorticklabels())
        if lo - slack <= loc <= hi + slack and t.get_visible() and t.get_text()
    ]


def texts_drawn(fig):
    """Every text the figure shows: titles, axis and tick labels, legends, texts, the colour bar's."""
    axes = [a for a in fig.axes if a.get_visible()]
    axes += [child for a in axes for child in a.child_axes]
    texts = [t for t in (getattr(fig, "_suptitle", None),) if t is not None]
    for ax in axes:
        texts += [ax.title, ax.xaxis.label, ax.yaxis.label, *ax.texts]
        texts += [t for axis in (ax.xaxis, ax.yaxis) for _, t in in_view(axis)]
        texts += ax.get_legend().get_texts() if ax.get_legend() else []
    return [t for t in texts if t.get_visible() and t.get_text()]


def number(text: str) -> float | None:
    try:
        return float(text.strip().rstrip("%"))
    except ValueError:
        return None


def ppl_rows(values: dict, lengths, **kw):
    """One ppl row per (method, length); ``values[method](length)`` is the perplexity."""
    return [
        dict(
            ppl_row(method.split()[0], n, 0, math.log(f(n)), n - 1, **kw),
            params=method.split()[1] if " " in method else "",
        )
        for method, f in values.items()
        for n in lengths
    ]


def pk_rows(accuracy: dict, lengths, depths=(0.25, 0.75), trials=2):
    """Passkey trials per (method, length, depth): the first ``round(accuracy · trials)`` correct."""
    return [
        dict(
            pk_row(method.split()[0], n, d, s, int(s < round(acc * trials))),
            params=method.split()[1] if " " in method else "",
        )
        for method, acc in accuracy.items()
        for n in lengths
        for d in depths
        for s in range(trials)
    ]


def positions_rows(methods, length, trained="4096"):
    return [
        dict(
            model="m",
            method=m.split()[0],
            params=m.split()[1] if " " in m else "",
            scale="",
            alpha="",
            trained_len=trained,
            length=length,
            sample=0,
            doc="d0",
            data="stdlib",
            stride="0",
            seed="0",
            position_start=a,
            position_end=a + 256,
            nll=2.0 + 0.01 * i + (a / length if i == 0 else 0),
            source="",
        )
        for i, m in enumerate(methods)
        for a in range(0, length, 256)
    ]


def dataset(kind, tmp_path):
    """A results folder of one shape, and the method labels its figures must name."""
    folder = tmp_path / kind
    if kind == "many methods":  # 17 ntk factors over 16 close lengths, one breaking down to ppl 640
        methods = [f"ntk alpha={a}" for a in range(2, 19)]
        lengths = [1024 * k for k in range(1, 17)]
        rows = ppl_rows(
            {
                m: (lambda n, i=i: 6.0 + 0.2 * i + n / 4096 if i or n <= 8192 else 40 * (n / 8192) ** 4)
                for i, m in enumerate(methods)
            },
            lengths,
        )
        rows += pk_rows({m: (i % 3) / 2 for i, m in enumerate(methods)}, lengths[3::4])
        write(folder / "positions.csv", positions_rows(methods, 16384), PROFILE_COLUMNS)
    elif kind == "one length":  # the reported passkey figure: every run at 12288 tokens only
        methods = ["none", "pi scale=2", "ntk alpha=2", "yarn scale=2", "logn"]
        rows = ppl_rows(
            dict(zip(methods, [lambda n: 20.8, lambda n: 25.4, lambda n: 6.74, lambda n: 6.64, lambda n: 22.1])),
            [12288],
        )
        rows += pk_rows(dict(zip(methods, [0, 0, 1, 0.5, 0])), [12288])
    elif kind == "long labels":  # one length, labels that widen the left margin (a title once ran off the right)
        methods = ["string attention_factor=1.2345678", "self-extend window=512"]
        rows = ppl_rows(dict(zip(methods, [lambda n: 8.46, lambda n: 8.35])), [2048])
        rows += pk_rows(dict(zip(methods, [1, 0])), [2048])
    elif kind == "narrow range":  # perplexities 6.00–6.30, accuracies 40–50%
        methods = ["none", "ntk alpha=2", "yarn scale=2"]
        rows = ppl_rows(
            {m: (lambda n, i=i: 6.0 + 0.1 * i * n / 16384) for i, m in enumerate(methods)}, [4096, 8192, 16384]
        )
        rows += pk_rows(dict(zip(methods, [0.4, 0.45, 0.5])), [4096, 8192], depths=(0.5,), trials=20)
    else:  # one method
        methods = ["yarn scale=2"]
        rows = ppl_rows({"yarn scale=2": lambda n: 8.2 - n / 4096}, [4096, 8192, 16384])
        rows += pk_rows({"yarn scale=2": 1}, [4096, 8192, 16384])
        write(folder / "positions.csv", positions_rows(methods, 16384), PROFILE_COLUMNS)
    write(folder / "results.csv", rows, PARAMS)
    return folder, methods


@pytest.mark.parametrize("kind", ["many methods", "one length", "long labels", "narrow range", "one method"])
def test_every_figure_is_legible_in_every_shape_of_result(kind, tmp_path, draw):
    """No two tick labels of an axis overlap, no text falls off the figure, the legend covers no
    axes, every method is named, and a figure over lengths still marks the trained length."""
    folder, methods = dataset(kind, tmp_path)
    figures = draw(folder)
    assert len(figures) >= 3, figures.keys()
    for name, (fig, series) in figures.items():
        renderer = fig.canvas.get_renderer()
        box = lambda artist: artist.get_window_extent(renderer)
        for ax in [a for a in fig.axes if a.get_visible()]:
            for axis in (ax.xaxis, ax.yaxis):
                labels = [box(t).padded(2) for _, t in in_view(axis)]  # and a gap between them
                assert not any(a.overlaps(b) for a, b in combinations(labels, 2)), (name, axis.axis_name)
        for t in texts_drawn(fig):
            b = box(t)
            assert b.x0 >= -1 and b.y0 >= -1 and b.x1 <= fig.bbox.x1 + 1 and b.y1 <= fig.bbox.y1 + 1, (name, t)
        legends = [a.get_legend() for a in fig.axes if a.get_legend()]
        for legend in legends:
            assert not any(box(legend).overlaps(a.get_window_extent(renderer)) for a in fig.axes), name
        shown = " | ".join(t.get_text().replace("\n", " ") for t in texts_drawn(fig))
        assert all(f"{m} " in shown + " " or f"{m} |" in shown for m in methods), (name, shown)
        if not name.endswith("_heatmap") and kind not in ("one length", "long labels"):
            assert "trained 4096" in shown, name


def test_the_perplexity_axis_is_labelled_where_the_curves_are(tmp_path, draw):
    """The reported figure: curves between 6 and 8 and one at 21 on a log axis labelled only 10 and
    20. At least three labelled ticks inside [6, 21], two inside [6, 8], each reading as its value."""
    values = {
        "none": lambda n: {4096: 7.96, 8192: 6.84, 16384: 21.0}[n],
        "ntk alpha=2": lambda n: {4096: 8.0, 8192: 7.13, 16384: 6.15}[n],
        "yarn scale=2": lambda n: {4096: 7.9, 8192: 7.03, 16384: 6.01}[n],
    }
    write(tmp_path / "r" / "results.csv", ppl_rows(values, [4096, 8192, 16384]), PARAMS)
    fig, _ = draw(tmp_path / "r")["m_ppl"]
    ticks = in_view(fig.axes[0].yaxis)
    assert all(number(t.get_text()) == pytest.approx(v) for v, t in ticks), [t.get_text() for _, t in ticks]
    assert len([v for v, _ in ticks if 6.01 <= v <= 21.0]) >= 3, ticks
    assert len([v for v, _ in ticks if 6.01 <= v <= 8.0]) >= 2, ticks


def test_a_narrow_range_gets_enough_distinct_labels(tmp_path, draw):
    """Perplexities from 6.00 to 6.30: at least three labelled ticks inside that range, no two
    labels alike (too few decimals would print 6, 6, 6)."""
    values = {"none": lambda n: 6.0, "ntk alpha=2": lambda n: 6.0 + 0.3 * n / 16384}
    write(tmp_path / "r" / "results.csv", ppl_rows(values, [4096, 8192, 16384]), PARAMS)
    fig, _ = draw(tmp_path / "r")["m_ppl"]
    ticks = in_view(fig.axes[0].yaxis)
    texts = [t.get_text() for _, t in ticks]
    assert len([v for v, _ in ticks if 6.0 <= v <= 6.3]) >= 3 and len(set(texts)) == len(texts), texts
    assert all(number(t.get_text()) == pytest.approx(v) for v, t in ticks), texts


def test_one_length_keeps_every_method_apart_and_writes_its_value(tmp_path, draw):
    """The reported passkey figure at a single length was two dots with five methods under them.
    Each method's mark (bar or dot) must sit apart from every other, with its value written."""
    folder, methods = dataset("one length", tmp_path)
    expected = {"m_passkey": [0, 0, 100, 50, 0], "m_ppl": [20.8, 25.4, 6.74, 6.64, 22.1]}
    for name, (fig, _) in draw(folder).items():
        if name not in expected:
            continue
        ax = fig.axes[0]
        marks = [(p.get_x() + p.get_width(), p.get_y() + p.get_height() / 2) for p in ax.patches]
        marks += [
            tuple(xy)
            for line in ax.lines
            if line.get_marker() not in (None, "None", "", "|", "_")
            for xy in line.get_xydata()
        ]
        points = ax.transData.transform(marks)
        assert len(points) == len(methods), (name, marks)
        assert all(math.dist(a, b) > 5 for a, b in combinations(points, 2)), (name, marks)
        written = [number(t.get_text()) for t in texts_drawn(fig)]
        for v in expected[name]:
            assert any(w is not None and w == pytest.approx(v, abs=0.5) for w in written), (name, v)


def test_many_methods_are_told_apart_by_their_style(tmp_path, draw):
    """Seventeen methods: no two lines share colour, marker and dash (ten colours repeat)."""
    folder, methods = dataset("many methods", tmp_path)
    for name in ("m_ppl", "m_positions"):
        fig, _ = draw(folder)[name]
        lines = [line for line in fig.axes[0].lines if line.get_label() in methods]
        styles = {(line.get_color(), line.get_marker(), str(line.get_linestyle())) for line in lines}
        assert len(lines) == len(methods) == len(styles), name


def test_a_positions_file_of_evalkit_0_1_names_methods_as_the_tables_do(tmp_path):
    """Results that record their checkpoint (source) beside a positions.csv of evalkit 0.1, which
    has no source column: the loss-by-position lines carry the table's labels (pi scale=2)."""
    rows = [dict(ppl_row(m, 8192, 0, 2.0, 8191, scale=s), source="embedded:m") for m, s in (("none", ""), ("pi", "2"))]
    write(tmp_path / "r" / "results.csv", rows)
    write(
        tmp_path / "r" / "positions.csv",
        [
            dict(
                model="m",
                method=m,
                scale=s,
                alpha="",
                trained_len="4096",
                length="8192",
                sample="0",
                doc="d0",
                data="stdlib",
                stride="0",
                seed="0",
                position_start=0,
                position_end=8192,
                nll=2.0,
            )
            for m, s in (("none", ""), ("pi", "2"))
        ],
        POSITIONS_HEADER,
    )
    made = plot_all([tmp_path / "r"], tmp_path / "figs")
    tables = set(summarise(load_results([tmp_path / "r"]), "ppl")["method"])
    assert tables == {"none", "pi scale=2"}
    assert set(next(s for p, s in made.items() if p.name == "m_positions.png")) == tables


def test_methods_that_tie_all_stay_visible(tmp_path, draw):
    """dynamic-ntk is exactly none inside the trained window, and here ntk too: three methods with
    the same values at every length. Each one's colour must still show inside the axes."""
    import numpy as np
    from matplotlib.colors import to_rgb

    same = {
        m: (lambda n: {4096: 8.0, 8192: 7.0, 16384: 6.5}[n]) for m in ("none", "dynamic-ntk alpha=2", "ntk alpha=2")
    }
    write(tmp_path / "r" / "results.csv", ppl_rows(same, [4096, 8192, 16384]), PARAMS)
    fig, _ = draw(tmp_path / "r")["m_ppl"]
    ax = fig.axes[0]
    pixels = np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(int)
    box = ax.get_window_extent()
    top, bottom = int(fig.bbox.height - box.y1) + 2, int(fig.bbox.height - box.y0) - 2  # rows count from the top
    inside = pixels[top:bottom, int(box.x0) + 2 : int(box.x1) - 2]
    for line in [line for line in ax.lines if line.get_label() in same]:
        colour = np.array(to_rgb(line.get_color())) * 255
        seen = (np.abs(inside - colour).max(axis=-1) < 10).sum()
        assert seen >= 30, (line.get_label(), seen)


@pytest.mark.parametrize("lengths", [[900], [900, 1800]])
def test_an_interval_a_rounding_error_past_its_value_is_drawn(tmp_path, lengths):
    """0 of 3 trials: Wilson's lower end comes out 5.6e-17, above the value 0; the figure is still
    drawn, its interval from 0."""
    write(tmp_path / "r" / "results.csv", [pk_row("none", n, 0.5, s, 0) for n in lengths for s in range(3)])
    made = plot_all([tmp_path / "r"], tmp_path / "figs")
    assert next(s for p, s in made.items() if p.name == "m_passkey.png")["none"] == (lengths, [0.0] * len(lengths))


def test_a_figure_that_fails_leaves_no_figure_open(results, tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    import evalkit.plots

    def half_drawn(*args):
        plt.figure()
        raise RuntimeError("drawing failed")

    monkeypatch.setattr(evalkit.plots, "draw_heatmap", half_drawn)
    before = plt.get_fignums()
    with pytest.raises(RuntimeError, match="drawing failed"):
        plot_all([results], tmp_path / "figs")
    assert plt.get_fignums() == before


@pytest.mark.parametrize("command", ["compare", "plot", "report"])
def test_files_without_rows_are_one_line_with_exit_code_2(command, tmp_path):
    """An empty file or a header alone is a mistake (a wrong path, a sweep that wrote nothing),
    not an empty table with exit code 0."""
    header = (Path(__file__).parents[1] / "results/smollm2-135m-cpu/results.csv").read_text().splitlines()[0]
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "header.csv").write_text(header + "\n")
    for name in ("empty.csv", "header.csv"):
        out = {
            "compare": [],
            "plot": ["--out", str(tmp_path / "figures")],
            "report": ["--out", str(tmp_path / "r.html")],
        }
        args = [command, str(tmp_path / name)] + out[command]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, result.output
        assert result.output.strip().count("\n") == 0 and "no result rows in" in result.output, result.output


def test_plot_without_out_writes_beside_the_results(tmp_path, monkeypatch):
    """No --out: figures/ in the results folder (or beside the CSV), never the working directory."""
    import shutil

    src = Path(__file__).parents[1] / "results/smollm2-135m-self-extend"
    folder = tmp_path / "run"
    shutil.copytree(src, folder, ignore=shutil.ignore_patterns("figures"))
    monkeypatch.chdir(tmp_path)
    for given in (folder, folder / "results.csv"):
        result = CliRunner().invoke(app, ["plot", str(given)])
        assert result.exit_code == 0, result.output
        assert (folder / "figures" / "smollm2-135m_ppl.png").is_file()
        assert not (tmp_path / "figures").exists()
        shutil.rmtree(folder / "figures")
