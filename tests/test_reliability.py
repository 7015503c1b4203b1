"""Results under faults: foreign files never touched, torn files repaired CSV-aware, every cell
exactly once (kills between writes, duplicates in lists, two runs at once), non-finite numbers
never scored, one cell identity everywhere, and every user mistake one line with exit code 2."""

import csv
import shutil
from pathlib import Path

import pytest
import torch
from evalkit01 import POSITIONS_HEADER as V01_POSITIONS
from evalkit01 import RESULTS_HEADER as V01
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from evalkit.cli import app, parse_length, split_list
from evalkit.errors import EvalkitError
from evalkit.results import PROFILE_COLUMNS, CsvAppender, FolderLock, read_profile, read_rows, result_columns

runner = CliRunner()
QUICK = ("--len", "160")


def evalkit(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(result, needle):
    assert result.exit_code == 2, result.output
    text = result.output.strip()
    assert "Traceback" not in text and text.count("\n") == 0 and text.startswith("evalkit: error:"), text
    assert needle in text, text


def results_of(out: Path):
    return read_rows(out / "results.csv")


@pytest.fixture
def run(tiny_model_dir, tmp_path):
    def go(*extra, out=None, model=None):
        out = out or tmp_path / "res"
        return evalkit("run", "--model", model or tiny_model_dir, "--out", out, *extra), out

    return go


# --- files evalkit does not own ---


@pytest.mark.parametrize("name", ["results.csv", "positions.csv"])
@pytest.mark.parametrize("content", [b"my notes", b"my notes\n", b"model,method\n1,2\n", b""])
def test_a_foreign_file_is_refused_and_left_byte_for_byte(run, tmp_path, name, content):
    out = tmp_path / "res"
    out.mkdir()
    (out / name).write_bytes(content)
    result, _ = run("--task", "passkey", *QUICK)
    if content == b"":  # an empty file holds nothing to protect: evalkit may write its header there
        assert result.exit_code == 0, result.output
        return
    one_line_error(result, "not an evalkit results file")
    assert (out / name).read_bytes() == content


def test_a_torn_header_is_evalkits_own_and_is_rewritten(run, tmp_path):
    out = tmp_path / "res"
    out.mkdir()
    (out / "results.csv").write_text(",".join(result_columns())[:20])  # killed while writing the header
    result, _ = run("--task", "passkey", *QUICK)
    assert result.exit_code == 0, result.output
    assert len(results_of(out)) == 2  # none, ntk


def test_results_csv_that_is_a_folder_is_one_line(run, tmp_path):
    (tmp_path / "res" / "results.csv").mkdir(parents=True)
    one_line_error(run("--task", "passkey", *QUICK)[0], "is a folder")


# --- CSV-aware repair (property-based) ---

FIELD = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(answers=st.lists(FIELD, min_size=1, max_size=5), cut=st.floats(0, 1), extra=FIELD)
def test_a_file_cut_anywhere_reads_as_its_complete_rows_and_appends_cleanly(tmp_path_factory, answers, cut, extra):
    path = tmp_path_factory.mktemp("csv") / "results.csv"
    writer = CsvAppender(path, result_columns())
    writer.write([dict(model="m", task="passkey", sample=i, answer=a) for i, a in enumerate(answers)])
    writer.close()
    data = path.read_bytes()
    path.write_bytes(data[: int(cut * len(data))])  # a kill at any byte
    before = read_rows(path)
    assert [r["answer"] for r in before] == [a.replace("\r", "\\r") for a in answers][: len(before)]
    writer = CsvAppender(path, result_columns())  # repairs, then appends
    writer.write([dict(model="m", task="passkey", sample=99, answer=extra)])
    writer.close()
    after = read_rows(path)
    assert after[:-1] == before and after[-1]["answer"] == extra.replace("\r", "\\r")
    with open(path, newline="", encoding="utf-8") as f:  # and any CSV reader agrees
        assert len(list(csv.DictReader(f))) == len(after)


def test_a_torn_row_with_a_quoted_newline_does_not_swallow_later_rows(tmp_path):
    path = tmp_path / "results.csv"
    writer = CsvAppender(path, result_columns())
    writer.write([dict(model="m", sample=0, answer="fine")])
    writer.close()
    with open(path, "a", encoding="utf-8") as f:
        f.write('m,,,,,,,,1,,,,,"an answer\nthat was cut')  # kill inside a quoted field
    writer = CsvAppender(path, result_columns())
    writer.write([dict(model="m", sample=2, answer="later")])
    writer.close()
    assert [r["sample"] for r in read_rows(path)] == ["0", "2"]


# --- exactly once ---


@pytest.mark.parametrize("dies_at", [1, 2, 3, 4])
def test_a_kill_at_any_write_boundary_leaves_each_cell_once_after_a_rerun(run, monkeypatch, dies_at):
    """Two perplexity cells write four times: profile, results, profile, results. A kill before
    any one of them (2: between the first cell's profile rows and its results row), then a rerun."""
    writes = []
    original = CsvAppender.write

    def dying_write(self, rows):
        writes.append(self.path.name)
        if len(writes) == dies_at:
            raise KeyboardInterrupt
        original(self, rows)

    monkeypatch.setattr(CsvAppender, "write", dying_write)
    args = ("--task", "ppl", "--method", "none,pi", "--len", "160", "--samples", "1")
    result, out = run(*args)
    assert result.exit_code == 130 and writes == (["positions.csv", "results.csv"] * 2)[:dies_at]
    monkeypatch.setattr(CsvAppender, "write", original)
    result, out = run(*args)
    assert result.exit_code == 0, result.output
    assert sorted(r["method"] for r in results_of(out)) == ["none", "pi"]
    per_cell = {}
    for p in read_profile(out / "positions.csv"):
        per_cell.setdefault(p["method"], []).append(p["position_start"])
    assert set(per_cell) == {"none", "pi"}
    assert per_cell["none"] == per_cell["pi"] and len(set(per_cell["pi"])) == len(per_cell["pi"])


@pytest.mark.parametrize(
    "option, values", [("--method", "none,none"), ("--task", "ppl,ppl"), ("--len", "160,160"), ("--depths", "0.5,0.5")]
)
def test_a_value_listed_twice_runs_once(run, option, values):
    base = {"--method": "none", "--task": "passkey", "--len": "160", "--depths": "0.5"}
    base[option] = values
    if option == "--task":
        base["--len"] = "160"
    result, out = run(*[x for kv in base.items() for x in kv])
    assert result.exit_code == 0, result.output
    assert "more than once" in result.output
    rows = results_of(out)
    assert len(rows) == len({tuple(sorted(r.items())) for r in rows}) == 1


def test_a_second_run_on_the_same_folder_is_refused_while_the_first_holds_it(run, tmp_path):
    out = tmp_path / "res"
    lock = FolderLock(out)  # another run, still writing
    try:
        result, _ = run("--task", "passkey", *QUICK, out=out)
        one_line_error(result, "being written by another evalkit run (pid")
    finally:
        lock.release()
    assert run("--task", "passkey", *QUICK, out=out)[0].exit_code == 0


def test_duplicates_left_by_an_older_version_are_removed_on_the_next_run(run, tmp_path):
    result, out = run("--task", "passkey", "--method", "none", *QUICK)
    lines = (out / "results.csv").read_text().splitlines()
    (out / "results.csv").write_text("\n".join(lines + lines[1:]) + "\n")  # every cell twice
    result, _ = run("--task", "passkey", "--method", "none", *QUICK)
    assert result.exit_code == 0 and len(results_of(out)) == 1, result.output


# --- one identity: resume, compare and the summary agree ---


@pytest.mark.parametrize("change", [("--seed", "1"), ("--trained-len", "32")])
def test_a_run_with_another_seed_or_trained_length_succeeds_and_compare_still_works(run, change):
    result, out = run("--task", "passkey,ppl", "--method", "none,ntk", *QUICK)
    assert result.exit_code == 0, result.output
    result, _ = run("--task", "passkey,ppl", "--method", "none,ntk", *QUICK, *change)
    assert result.exit_code == 0, result.output
    written = int(result.output.split("row(s) written")[0].split()[-1])
    assert written == (2 if change[0] == "--seed" else 4)  # the seed changes passkey cells only
    compared = evalkit("compare", out)
    assert compared.exit_code == 0, compared.output


def test_an_alias_moved_to_another_checkpoint_is_measured_again(run, tiny_model_dir, tmp_path, monkeypatch):
    other = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, other)
    monkeypatch.chdir(tmp_path)
    toml = tmp_path / "evalkit.toml"
    toml.write_text(f'[models.mine]\nsource = "{tiny_model_dir}"\n')
    result, out = run("--task", "passkey", "--method", "none", *QUICK, model="mine")
    assert result.exit_code == 0, result.output
    toml.write_text(f'[models.mine]\nsource = "{other}"\n')
    result, _ = run("--task", "passkey", "--method", "none", *QUICK, model="mine")
    assert "1 row(s) written" in result.output
    one_line_error(evalkit("compare", out), "mixes checkpoints")


# --- non-finite numbers ---


@pytest.mark.parametrize("args", [("--alpha", "nan"), ("--scale", "nan"), ("--alpha", "inf"), ("--scale", "inf")])
def test_non_finite_factors_are_refused(run, tmp_path, args):
    result, out = run("--method", "ntk,pi", *QUICK, *args)
    one_line_error(result, "finite number")
    assert not out.exists()


def test_a_non_finite_loss_is_a_nan_row_and_compare_shows_it(run, monkeypatch):
    from evalkit import forward

    monkeypatch.setattr(forward, "token_nll", lambda model, ids: torch.full((ids.shape[1] - 1,), float("nan")))
    result, out = run("--task", "ppl", "--method", "none", *QUICK)
    assert result.exit_code == 0, result.output
    (row,) = results_of(out)
    assert row["status"] == "nan" and row["error"] == "non-finite loss"
    table = evalkit("compare", out).output
    assert "NaN" in table and "1.000" not in table
    assert read_profile(out / "positions.csv") == []


# --- every mistake one line, nothing written ---


@pytest.mark.parametrize(
    "args, needle",
    [
        (("--len", ""), "--len was given an empty list"),
        (("--method", ""), "--method was given an empty list"),
        (("--len", "infk"), "bad length 'infk'"),
        (("--len", "1e400"), "bad length"),
        (("--len", "1", "--task", "ppl"), "needs lengths of at least 2 tokens"),
        (("--depths", "nan"), "bad --depths value 'nan'"),
    ],
)
def test_option_mistakes(run, args, needle):
    result, out = run(*args)
    one_line_error(result, needle)
    assert not out.exists()


@pytest.fixture(scope="module")
def recorded_folder(tiny_model_dir, tmp_path_factory):
    """A folder holding evalkit's files from a finished run (both tasks), made once."""
    out = tmp_path_factory.mktemp("recorded") / "res"
    result = evalkit("run", "--model", tiny_model_dir, "--out", out, "--method", "none", "--len", "160")
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.parametrize(
    "args, needle",
    [
        (("--method", "ntk-alibi"), "methods for rope"),
        (("--method", "ntk:alpha=0.5"), "alpha must be between"),
        (("--method", "dynamic_ntk"), "did you mean"),
        (("--task", "pplx"), "did you mean"),
        (("--len", "160,abc"), "bad length"),
        (("--task", "ppl", "--data", "/nonexistent/docs.txt"), "/nonexistent/docs.txt"),
        (("--task", "ppl", "--len", "10000000"), "longer than the data"),
        (("--shard", "2/2"), "--shard"),
    ],
)
def test_a_mistake_leaves_an_existing_results_folder_byte_for_byte(
    recorded_folder, tiny_model_dir, tmp_path, args, needle
):
    """docs/running.md, "Mistakes": a mistake is one line and nothing is written, also where evalkit's own files
    already are (results, positions, notes: every file of the folder, and no new one)."""
    out = tmp_path / "copy"
    shutil.copytree(recorded_folder, out)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert {Path("results.csv"), Path("positions.csv")} <= set(before)
    result = evalkit("run", "--model", tiny_model_dir, "--out", out, "--len", "160", *args)
    one_line_error(result, needle)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize(
    "content, needle",
    [
        (b"this is not parquet", "not a readable parquet file"),
    ],
)
def test_a_text_file_named_parquet(run, tmp_path, content, needle):
    bad = tmp_path / "docs.parquet"
    bad.write_bytes(content)
    one_line_error(run("--task", "ppl", "--data", bad, *QUICK)[0], needle)


@pytest.mark.parametrize(
    "content, needle", [(b'["a list"]\n', "is a JSON list, not an object"), (b'{"text": "caf\xe9"}\n', "is not UTF-8")]
)
def test_bad_jsonl_lines(run, tmp_path, content, needle):
    bad = tmp_path / "docs.jsonl"
    bad.write_bytes(content)
    one_line_error(run("--task", "ppl", "--data", bad, *QUICK)[0], needle)


@pytest.mark.parametrize(
    "toml, needle",
    [
        ('[models.x]\nsource = "/data/x"\ntrained_len = "abc"\nencoding = "rope"\n', "trained_len must be a int"),
        ("models = 5\n", "models must be a table"),
        ("[models]\nx = 3\n", "models.x must be a table"),
    ],
)
def test_wrong_types_in_evalkit_toml(run, tmp_path, monkeypatch, toml, needle):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "evalkit.toml").write_text(toml)
    one_line_error(run(*QUICK)[0], needle)


@pytest.mark.parametrize("config, needle", [("{not json", "is not valid JSON"), ("[1, 2]", "holds a JSON list")])
def test_a_broken_config_json(run, tmp_path, config, needle):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text(config)
    one_line_error(run(*QUICK, model=folder)[0], needle)


def test_an_out_folder_that_cannot_be_made_is_refused_before_the_model_loads(run, tmp_path, monkeypatch):
    import evalkit.models

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded before --out was checked")

    monkeypatch.setattr(evalkit.sweep, "load_model", no_loading)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for out, needle in [(blocker, "is a file"), (blocker / "sub" / "deeper", f"{blocker} is a file")]:
        one_line_error(run("--task", "passkey", *QUICK, out=out)[0], needle)
    assert blocker.read_text() == "x"


def test_plot_out_that_is_a_file_and_rows_without_trained_length(run, tmp_path):
    result, out = run("--task", "ppl", "--method", "none", *QUICK)
    rows = results_of(out)
    for r in rows:
        r["trained_len"] = ""
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=V01, lineterminator="\n", extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    assert evalkit("plot", out, "--out", tmp_path / "figs").exit_code == 0
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    one_line_error(evalkit("plot", out, "--out", blocker), "cannot use")


# --- option parsing never raises anything but a one-line error ---


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=12))
def test_length_parsing_is_a_whole_positive_finite_number_or_a_clear_error(text):
    try:
        values = split_list([text], parse_length, "length", "--len")
    except EvalkitError:
        return
    assert values is None or all(isinstance(v, int) for v in values)


def test_a_quote_inside_an_unquoted_field_is_an_ordinary_character(tmp_path):
    path = tmp_path / "results.csv"
    writer = CsvAppender(path, result_columns())
    writer.write([dict(model="m", sample=i, answer="ANSWER") for i in range(3)])
    writer.close()
    text = path.read_text().replace("ANSWER", 'the ore"red', 1)  # valid CSV: Python's csv reads 3 rows
    path.write_text(text)
    with open(path, newline="") as f:
        assert len(list(csv.DictReader(f))) == 3
    assert len(read_rows(path)) == 3
    CsvAppender(path, result_columns()).close()  # nothing to repair
    assert path.read_text() == text


def test_force_rewrites_through_a_temporary_file_of_its_own(run, tmp_path):
    result, out = run("--task", "ppl", "--method", "none", *QUICK)
    for name in ("results.tmp", "positions.tmp"):
        (out / name).write_text("my notes")
    assert run("--task", "ppl", "--method", "none", *QUICK, "--force")[0].exit_code == 0
    assert (out / "results.tmp").read_text() == (out / "positions.tmp").read_text() == "my notes"
    assert not list(out.glob("*evalkit-tmp"))


def test_mistakes_found_while_planning_write_nothing(run, tiny_model_dir, tmp_path):
    # a passkey length too short for its prompt, behind a perplexity task that would have run first
    result, out = run("--task", "ppl,passkey", "--method", "none", "--len", "40")
    one_line_error(result, "too short for the prompt")
    assert not out.exists()
    # a method the checkpoint refuses (factors for another rotary dimension), behind `none`
    factors = tmp_path / "factors.json"
    factors.write_text("[1.0, 2.0, 3.0]")
    result, out = run("--task", "passkey", "--method", f"none,longrope:factors={factors}", *QUICK, out=tmp_path / "r2")
    one_line_error(result, "longrope needs 8 factors")
    assert not out.exists()


def test_two_depths_that_are_recorded_alike_are_one_cell(run):
    result, out = run("--task", "passkey", "--method", "none", "--len", "160", "--depths", "0.1,0.100000001,-0,0")
    assert result.exit_code == 0, result.output
    assert sorted(r["depth"] for r in results_of(out)) == ["0", "0.1"]


@pytest.mark.parametrize(
    "args, needle",
    [
        (("--alpha", "1e300", "--method", "ntk"), "from 1 to 1e+06"),
        (("--samples", "99999999999"), "--samples must be between 1 and"),
    ],
)
def test_factors_and_counts_beyond_reason(run, args, needle):
    result, out = run("--task", "passkey", *QUICK, *args)
    one_line_error(result, needle)
    assert not out.exists()


@pytest.mark.parametrize(
    "edit, needle",
    [
        (lambda c: c.update(max_position_embeddings="abc"), "states its length as 'abc', not a positive whole"),
        (lambda c: c.update(max_position_embeddings=0), "not a positive whole number"),
        (lambda c: c.update(model_type=["llama"]), "model_type = ['llama'], not a string"),
    ],
)
def test_wrong_values_in_config_json(run, tiny_model_dir, tmp_path, edit, needle):
    import json

    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))
    one_line_error(run(*QUICK, model=folder)[0], needle)


def test_truncated_weights_and_a_non_string_source_are_one_line(run, tiny_model_dir, tmp_path, monkeypatch):
    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_model_dir, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    one_line_error(run(*QUICK, model=folder)[0], "fails to load")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "evalkit.toml").write_text("[models.m]\nsource = 5\n")
    one_line_error(run(*QUICK, model="m")[0], "source must be a string")


def test_plot_skips_unreadable_or_non_finite_profile_values(run, tmp_path):
    result, out = run("--task", "ppl", "--method", "none", *QUICK)
    profile = out / "positions.csv"
    lines = profile.read_text().splitlines()
    cells = lines[1].split(",")
    lines[1] = ",".join(cells[:-1] + ["nan"])
    profile.write_text("\n".join(lines) + "\n")
    assert evalkit("plot", out, "--out", tmp_path / "figs").exit_code == 0


def test_a_positions_file_of_evalkit_0_1_is_read_and_brought_to_the_current_header(run, tmp_path):
    result, out = run("--task", "ppl", "--method", "none", *QUICK)
    profile = out / "positions.csv"
    rows = read_profile(profile)
    old_header = V01_POSITIONS  # 0.1 wrote no source (nor the later settings) columns
    with open(profile, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=old_header, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    assert [r["source"] for r in read_profile(profile)] == [""] * len(rows)
    assert evalkit("plot", out, "--out", tmp_path / "figs").exit_code == 0
    result, _ = run("--task", "ppl", "--method", "none,pi", *QUICK)  # resumes, appends
    assert result.exit_code == 0, result.output
    assert profile.read_text().splitlines()[0] == ",".join(PROFILE_COLUMNS)
    again = read_profile(profile)
    assert all(r["source"] for r in again) and len(again) == 2 * len(rows)


def test_an_alias_moved_to_another_checkpoint_keeps_both_profiles(run, tiny_model_dir, tmp_path, monkeypatch):
    other = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, other)
    monkeypatch.chdir(tmp_path)
    toml = tmp_path / "evalkit.toml"
    for source in (tiny_model_dir, other, other):
        toml.write_text(f'[models.mine]\nsource = "{source}"\n')
        result, out = run("--task", "ppl", "--method", "none", *QUICK, model="mine")
        assert result.exit_code == 0, result.output
    result, out = run("--task", "ppl", "--method", "none", *QUICK, "--force", model="mine")
    profile = read_profile(out / "positions.csv")
    assert {r["source"] for r in profile} == {str(tiny_model_dir), str(other)}
    per_source = [sum(r["source"] == s for r in profile) for s in (str(tiny_model_dir), str(other))]
    assert per_source[0] == per_source[1] > 0


def test_a_cell_with_some_nan_rows_says_so(tmp_path):
    from tests.test_compare_plot import ppl_row, write

    rows = [ppl_row("none", 4096, 0, 2.0, 4095), ppl_row("none", 4096, 1, float("nan"), 4095)]
    table = evalkit("compare", write(tmp_path / "r" / "results.csv", rows)).output
    assert "(1; 1 NaN left out)" in table


@pytest.mark.parametrize(
    "name, content, needle",
    [("docs.jsonl", b'{"text": null}\n', "or it is null"), ("doc.txt", b"caf\xe9 " * 400, "is not UTF-8")],
)
def test_null_text_and_non_utf8_text(run, tmp_path, name, content, needle):
    bad = tmp_path / name
    bad.write_bytes(content)
    one_line_error(run("--task", "ppl", "--data", bad, *QUICK)[0], needle)


@pytest.mark.parametrize(
    "error, oom",
    [
        (torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
        (RuntimeError("CUDA out of memory. Tried to allocate 512.00 MiB (GPU 0; 79.15 GiB total capacity)"), True),
        (
            RuntimeError(
                "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried to "
                "allocate 68719476736 bytes"
            ),
            True,
        ),
        (MemoryError(), True),
        (RuntimeError("shape '[1, 32, 128]' is invalid for input of size 4096"), False),
        (ValueError("out of memory"), False),  # only memory errors of torch / Python count
    ],
)
def test_out_of_memory_is_recognised_in_the_forms_torch_raises(error, oom):
    from evalkit.memory import is_oom as _is_oom

    assert _is_oom(error) is oom


def test_pdf_and_svg_figures_carry_no_time_stamp(run, tmp_path):
    """The same CSV gives the same bytes: no creation date in a PDF, no date in an SVG."""
    import time

    result, out = run("--task", "ppl", "--method", "none", *QUICK)
    assert result.exit_code == 0, result.output
    for fmt in ("pdf", "svg"):
        first = evalkit("plot", out, "--out", tmp_path / f"a-{fmt}", "--format", fmt)
        time.sleep(1.1)  # a time stamp would differ by then
        second = evalkit("plot", out, "--out", tmp_path / f"b-{fmt}", "--format", fmt)
        assert first.exit_code == second.exit_code == 0, first.output + second.output
        for a in sorted((tmp_path / f"a-{fmt}").iterdir()):
            data = a.read_bytes()
            assert b"CreationDate" not in data and b"<dc:date>" not in data, a.name
            assert data == (tmp_path / f"b-{fmt}" / a.name).read_bytes(), a.name
