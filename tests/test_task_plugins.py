"""A task is a plugin: one registered from this test file runs, resumes, compares and plots
with no change to the core (sweep, results, compare, plots, CLI)."""

import pytest
from typer.testing import CliRunner

from evalkit import stats
from evalkit.cli import app
from evalkit.results import read_rows
from evalkit.tasks import METRICS, TASKS, Cell, Metric, register


class EvenLength:
    """A toy task: 'correct' when the length is even; no model call at all."""

    name = "even-length"
    summary = "toy: is the context length even"
    identity = ("seed",)
    options = ()
    columns = {"correct": int, "tokens": int}
    min_length = 1
    default = False
    profile = False
    metrics = (
        Metric("even", "even-length", "even lengths", stats.accuracy("correct"), percent=True, relative="difference"),
    )

    def cells(self, ctx, lengths):
        return [Cell(self.name, n, s) for n in lengths for s in range(ctx.cfg.samples)]

    def group(self, ctx, cell, prefix_mode):
        return cell

    def measure(self, ctx, cells):
        return [dict(correct=int(c.length % 2 == 0), tokens=c.length) for c in cells]


@pytest.fixture
def toy_task():
    register(EvenLength())
    yield
    TASKS._entries.pop("even-length")
    METRICS._entries.pop("even")


def test_a_task_from_a_test_file_runs_resumes_compares_and_plots(toy_task, tiny_model_dir, tmp_path):
    runner = CliRunner()
    args = [
        "run",
        "--model",
        str(tiny_model_dir),
        "--task",
        "even-length",
        "--method",
        "none,ntk",
        "--len",
        "160,161",
        "--samples",
        "2",
        "--out",
        str(tmp_path / "r"),
    ]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "8 row(s) written" in first.output
    rows = read_rows(tmp_path / "r" / "results.csv")
    assert {(r["length"], r["correct"]) for r in rows} == {("160", "1"), ("161", "0")}
    again = runner.invoke(app, args)
    assert "0 row(s) written" in again.output and "8 cell(s) already there" in again.output
    table = runner.invoke(app, ["compare", str(tmp_path / "r"), "--metric", "even", "--ci"]).output
    assert "even lengths" in table and "100% [" in table and "0% [" in table
    made = runner.invoke(app, ["plot", str(tmp_path / "r"), "--out", str(tmp_path / "figs")])
    assert made.exit_code == 0, made.output
    assert any(p.name.endswith("_even.png") for p in (tmp_path / "figs").iterdir())
    listed = runner.invoke(app, ["tasks"]).output
    assert "even-length" in listed and "toy: is the context length even" in listed
