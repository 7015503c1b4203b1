"""Row sinks (``--sink``) and the results schema's ``shared`` column, through the CLI on a tiny model."""

from __future__ import annotations

import csv
import json

from typer.testing import CliRunner

from evalkit.cli import app
from evalkit.results import read_rows


def run(*args):
    return CliRunner().invoke(app, ["run", *map(str, args)])


def csv_rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_jsonl_holds_every_row_of_results_csv_as_written(tiny_model_dir, tmp_path):
    out = tmp_path / "r"
    common = ("--model", tiny_model_dir, "--len", "160,320", "--task", "ppl,passkey", "--depths", "0.5", "--out", out)
    first = run(*common, "--method", "none", "--sink", "jsonl")
    assert first.exit_code == 0, first.output
    again = run(*common, "--method", "none,pi", "--sink", "jsonl")  # resumes: only pi's cells are new
    assert again.exit_code == 0, again.output
    table = csv_rows(out / "results.csv")
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(lines) == len(table) == 8  # 2 methods × 2 lengths × (1 document + 1 trial), each once
    assert [{k: r.get(k, "") for k in table[0]} for r in lines] == table  # the same text, column by column


def test_an_unknown_sink_is_one_line_before_the_model_loads(tiny_model_dir, tmp_path):
    result = run(
        "--model", tiny_model_dir, "--len", "160", "--task", "ppl", "--sink", "jsonll", "--out", tmp_path / "r"
    )
    assert result.exit_code == 2
    assert "unknown row sink 'jsonll'" in result.output and "did you mean 'jsonl'" in result.output
    assert not (tmp_path / "r").exists()


def test_shared_says_what_was_shared_and_old_rows_read_the_same(tiny_model_dir, tmp_path):
    out = tmp_path / "r"
    result = run(
        "--model",
        tiny_model_dir,
        "--len",
        "160,320",
        "--task",
        "ppl,passkey",
        "--depths",
        "0.5",
        "--samples",
        "2",
        "--method",
        "none,dynamic-ntk",
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    rows = csv_rows(out / "results.csv")
    assert {r["schema_version"] for r in rows} == {"2"} and "prefix_mode" not in rows[0]
    kinds = {(r["method"], r["task"]): set() for r in rows}
    for r in rows:
        kinds[(r["method"], r["task"])].add(r["shared"])
        if r["shared"] == "shared-kv":
            assert int(r["reused"]) > 0
        if r["task"] == "passkey" and r["shared"] == "none":
            assert r["reused"] == "0"
    assert kinds[("none", "ppl")] == {"prefix-forward"}  # one forward at 320 served both lengths
    assert kinds[("dynamic-ntk", "ppl")] == {"none"}  # length-dependent: a forward per length
    assert kinds[("none", "passkey")] == {"none", "shared-kv"}  # the first trial of a depth prefills whole
    assert kinds[("dynamic-ntk", "passkey")] == {"none"}
    # the same rows as evalkit 0.3 wrote them (prefix_mode, no shared): read as version 2
    old = out.parent / "old.csv"
    header = [c for c in rows[0] if c not in ("shared", "schema_version")] + ["prefix_mode"]
    with open(old, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=header, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            grouped = r["task"] == "ppl" and r["method"] == "none" or r["task"] == "passkey" and r["method"] == "none"
            w.writerow(dict(r, prefix_mode="1" if grouped else "0"))
    assert [r["shared"] for r in read_rows(old)] == [r["shared"] for r in rows]
