"""compare and plot on small hand-made CSVs, expected values computed by hand."""
import csv
import math

import pytest
from typer.testing import CliRunner

from evalkit.cli import app
from evalkit.compare import load_results, pivot, summarise
from evalkit.errors import EvalkitError
from evalkit.plots import plot_all
from evalkit.results import PROFILE_COLUMNS

from evalkit01 import RESULTS_HEADER as COLUMNS  # rows as evalkit 0.1 wrote them

runner = CliRunner()
BASE = dict(model="m", trained_len="4096", seed="0", evalkit_version="0.1.0", status="ok", data="stdlib",
            stride="0", device="cpu", dtype="float32", created_at="2026-01-01T00:00:00+00:00")


def ppl_row(method, length, sample, nll, tokens, scale="", **kw):
    return dict(BASE, method=method, task="ppl", length=length, sample=sample, nll=nll, tokens=tokens,
                ppl=math.exp(nll) if nll != "" else "", scale=scale, doc=f"d{sample}", **kw)


def pk_row(method, length, depth, sample, correct, **kw):
    return dict(BASE, method=method, task="passkey", length=length, depth=depth, sample=sample, correct=correct,
                data="", stride="", tokens=length, **kw)


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
        ppl_row("none", 4096, 0, 2.0, 4095), ppl_row("none", 4096, 1, 3.0, 1000),
        ppl_row("none", 8192, 0, 4.0, 8191),
        ppl_row("pi", 4096, 0, 2.5, 4095, scale="2"),
        ppl_row("pi", 8192, 0, 2.2, 8191, scale="2"),
        dict(ppl_row("ntk", 8192, 0, "", ""), status="oom", ppl=""),
        pk_row("none", 4096, 0.0, 0, 1), pk_row("none", 4096, 0.0, 1, 0), pk_row("none", 4096, 1.0, 0, 1),
        pk_row("none", 8192, 0.0, 0, 0), pk_row("none", 8192, 1.0, 0, 0),
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
    write(results.parent / "positions.csv", [
        dict(model="m", method=m, scale=s, alpha="", trained_len="4096", length="8192", sample="0", doc="d0",
             data="stdlib", stride="0", seed="0", position_start=a, position_end=a + 4096, nll=v)
        for m, s, a, v in [("none", "", 0, 2.0), ("none", "", 4096, 5.0), ("pi", "2", 0, 2.1),
                           ("pi", "2", 4096, 2.3)]], PROFILE_COLUMNS)
    made = plot_all([results.parent], tmp_path / "a")
    names = sorted(p.name for p in made)
    assert names == ["m_passkey.png", "m_passkey_heatmap.png", "m_positions.png", "m_ppl.png"]
    series = {p.name: s for p, s in made.items()}
    assert series["m_ppl.png"]["pi scale=2"] == ([4096, 8192], [pytest.approx(math.exp(2.5)), pytest.approx(math.exp(2.2))])
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
    rows = [dict(ppl_row(m, 4096, 0, nll, 4095), trained_len=L)
            for m, L, nll in (("none", "4096", 2.0), ("pi", "4096", 3.0), ("none", "2048", 4.0), ("pi", "2048", 4.4))]
    path = write(tmp_path / "mixed" / "results.csv", rows)
    long = summarise(load_results([path]), "ppl")
    from evalkit.compare import apply_baseline
    ratio = apply_baseline(long, "none", "ppl").set_index("method")["value"]
    assert ratio["pi L=4096"] == pytest.approx(math.exp(3.0 - 2.0))  # against its own none
    assert ratio["pi L=2048"] == pytest.approx(math.exp(4.4 - 4.0))
    assert ratio["none L=2048"] == pytest.approx(1.0)
    profile = [dict(model="m", method=m, trained_len=L, length=4096, sample=0, doc="d0", data="stdlib", stride="0",
                    seed="0", position_start=0, position_end=256, nll=v, source="")
               for m, L, v in (("pi", "4096", 3.0), ("pi", "2048", 4.4))]
    write(tmp_path / "mixed" / "positions.csv", profile, PROFILE_COLUMNS)
    made = plot_all([tmp_path / "mixed"], tmp_path / "figs")
    lines = next(series for f, series in made.items() if f.name.endswith("_positions.png"))
    assert {label: ys for label, (xs, ys) in lines.items()} == {"pi L=4096": [3.0], "pi L=2048": [4.4]}


def test_a_baseline_is_taken_within_the_same_task_settings(tmp_path):
    """With and without chat template in one folder: each row is compared with the baseline of
    its own setting (none 100%/0%, ntk 100%/100% -> ntk +0 pp without, +100 pp with)."""
    rows = []
    for s in range(4):
        rows += [pk_row("none", 4096, 0.5, s, 1, chat_template=0), pk_row("none", 4096, 0.5, s, 0, chat_template=1),
                 pk_row("ntk", 4096, 0.5, s, 1, chat_template=0), pk_row("ntk", 4096, 0.5, s, 1, chat_template=1)]
    path = write(tmp_path / "r" / "results.csv", rows, COLUMNS + ["chat_template"])
    table = runner.invoke(app, ["compare", str(path), "--baseline", "none", "--format", "csv"]).output
    cells = {line.split(",")[1]: line.split(",")[2] for line in table.splitlines()[1:] if line.startswith("m,")}
    assert cells == {"none chat-template=0": "+0 pp (4)", "none chat-template=1": "+0 pp (4)",
                     "ntk chat-template=0": "+0 pp (4)", "ntk chat-template=1": "+100 pp (4)"}, table


def test_rewriting_a_results_file_keeps_its_permissions(tmp_path):
    import os
    import stat

    from evalkit.results import CsvAppender, result_columns

    path = write(tmp_path / "results.csv", [ppl_row("none", 4096, 0, 2.0, 4095)])  # the 0.1 layout
    os.chmod(path, 0o644)
    CsvAppender(path, result_columns()).close()  # adds the newer columns: a rewrite
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert "min_doc_tokens" in path.read_text().splitlines()[0]
