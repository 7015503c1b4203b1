"""The retrieval suite (niah, RULER-style variants, LongEval lines) and what they share:
exact-length prompts, needles fixed by (seed, sample, depth), the built-in prose haystack,
RULER scoring, the chat-template frame, and the plugin contract of tasks."""

import ast
import csv
import re
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from evalkit.cli import app
from evalkit.config import RunConfig
from evalkit.errors import EvalkitError
from evalkit.results import read_rows
from evalkit.sweep import RunContext
from evalkit.tasks import TASKS, haystack, retrieval
from evalkit.tasks.niah import INSTRUCTION, NEEDLE

NEEDLE_TASKS = ["niah", "niah-multikey", "niah-multivalue", "niah-multiquery"]
CHATML = (
    "{% for m in messages %}<|user|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return SimpleNamespace(
        model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        tokenizer=AutoTokenizer.from_pretrained(tiny_model_dir),
    )


def context(tiny, tasks=tuple(NEEDLE_TASKS), **options):
    cfg = RunConfig(tasks=tasks, lengths=(4096,), options=options)
    return RunContext(cfg, SimpleNamespace(model=tiny.model, tokenizer=tiny.tokenizer, device="cpu"))


def text_of(tiny, ids):
    return tiny.tokenizer.decode(ids)


def test_the_built_in_haystack_is_real_prose_not_code_or_filler():
    text = haystack.builtin_text()
    sentences = haystack.sentences(text)
    assert len(text) > 300_000 and len(sentences) > 2000
    assert len(set(sentences)) > 0.95 * len(sentences)  # not a repeated filler
    assert not re.search(r"\d", text)  # no numbers that could be mistaken for a needle's value
    assert "def " not in text and ">>>" not in text and "    " not in text
    words = re.findall(r"[A-Za-z]+", text)
    assert len(words) > 0.15 * len(text) / 1  # mostly words: about one word per 6 characters
    assert haystack.builtin_text() == text  # deterministic


@pytest.mark.parametrize("task", NEEDLE_TASKS)
@pytest.mark.parametrize("length", [1500, 4000])
def test_needle_prompts_have_the_exact_length_and_every_needle(tiny, task, length):
    ctx = context(tiny, multikey_variant=1)
    trial = TASKS.get(task).trial(ctx, length, 0, 0.5)
    assert len(trial.prompt) == length
    text = text_of(tiny, trial.prompt)
    assert text.startswith("Some special magic numbers are hidden within the following text.")
    assert text.endswith("mentioned in the provided text are")
    for value in trial.expected:
        assert f"is: {value}." in text
    assert len(trial.expected) == {"niah": 1, "niah-multikey": 1, "niah-multivalue": 4, "niah-multiquery": 4}[task]
    assert (
        len(re.findall(r"One of the special magic numbers for [\w-]+ is: \d{7}\.", text))
        == {"niah": 1, "niah-multikey": 4, "niah-multivalue": 4, "niah-multiquery": 4}[task]
    )


@pytest.mark.parametrize("task", NEEDLE_TASKS + ["passkey"])
def test_the_same_needles_at_every_length(tiny, task):
    ctx = context(tiny, tasks=(task,))
    if task == "passkey":
        from evalkit.tasks.passkey import passkey_for

        assert passkey_for(0, 1, 0.25) == passkey_for(0, 1, 0.25)
        return
    short, long = (TASKS.get(task).trial(ctx, n, 1, 0.25) for n in (1500, 6000))
    assert short.expected == long.expected
    needles = lambda t: re.findall(r"One of the special magic numbers for [\w-]+ is: \d+\.", text_of(tiny, t.prompt))
    assert sorted(needles(short)) == sorted(needles(long))


@pytest.mark.parametrize("depth", [0.0, 0.3, 1.0])
def test_the_asked_needle_sits_at_its_depth(tiny, depth):
    """At the sentence boundary nearest to the depth, in tokens of the haystack."""
    ctx = context(tiny)
    trial = TASKS.get("niah").trial(ctx, 4000, 0, depth)
    tok, p = tiny.tokenizer, trial.prompt
    find = lambda ids: next(i for i in range(len(p)) if p[i : i + len(ids)] == ids)  # noqa: E731
    start = len(retrieval.raw_frame(tok).head) + len(retrieval.encode(tok, INSTRUCTION.format(kind="numbers")))
    key = re.search(r"numbers for ([\w-]+) is:", text_of(tiny, p)).group(1)
    needle = retrieval.encode(tok, " " + NEEDLE.format(kind="numbers", key=key, value=trial.expected[0]))
    at = find(needle)
    question = retrieval.encode(tok, "\nWhat are all the special magic numbers for " + key)
    end = find(question[:6])
    hay = end - start - len(needle)
    longest = max(len(retrieval.encode(tok, " " + s)) for s in haystack.sentences(haystack.builtin_text())[:300])
    assert abs((at - start) - depth * hay) <= longest / 2 + 1


def test_multikey_variants_follow_ruler(tiny):
    two = TASKS.get("niah-multikey").trial(context(tiny, multikey_variant=2), 3000, 0, 0.5)
    text = text_of(tiny, two.prompt)
    needles = re.findall(r"One of the special magic numbers for ([\w-]+) is: (\d{7})\.", text)
    assert len(needles) > 20  # the haystack is made of needles
    asked = re.search(r"What are all the special magic numbers for ([\w-]+) mentioned", text).group(1)
    assert [v for k, v in needles if k == asked] == two.expected  # the asked key once, with its value
    three = TASKS.get("niah-multikey").trial(context(tiny, multikey_variant=3), 3000, 0, 0.5)
    text = text_of(tiny, three.prompt)
    assert uuid.UUID(three.expected[0]).version == 4
    assert "special magic uuids" in text and len(re.findall(r"for [0-9a-f-]{36} is: [0-9a-f-]{36}\.", text)) > 10


def test_multiquery_asks_for_four_keys_as_ruler_lists_them(tiny):
    trial = TASKS.get("niah-multiquery").trial(context(tiny), 3000, 0, 0.5)
    question = text_of(tiny, trial.prompt).rsplit("What are all the special magic numbers for ", 1)[1]
    keys = re.match(r"([\w-]+), ([\w-]+), ([\w-]+), and ([\w-]+) mentioned", question)
    assert keys and len(set(keys.groups())) == 4


@pytest.mark.parametrize(
    "answer, values, score",
    [
        (": 1234567.", ["1234567"], 1.0),
        (": 12345678.", ["1234567"], 0.0),  # not part of a longer number
        ("7654321, 1234567 and 1111111", ["1234567", "1111111", "2222222", "3333333"], 0.5),
        ("The ID is 9A1B2C3D-0000-4000-8000-000000000000", ["9a1b2c3d-0000-4000-8000-000000000000"], 1.0),
        ("", ["1"], 0.0),
    ],
)
def test_ruler_scoring_is_the_fraction_of_values_found_as_whole_tokens(answer, values, score):
    assert retrieval.recalled(answer, values) == score


def test_lines_fill_the_length_and_ask_a_line_that_is_there(tiny):
    ctx = context(tiny, tasks=("lines",))
    lines = TASKS.get("lines")
    for length in (800, 3000):
        prompt, value, n = lines.prompt(ctx, length, 0, 0.5)
        text = text_of(tiny, prompt)
        records = re.findall(r"line ([\w-]+): REGISTER_CONTENT is <(\d+)>\n", text)
        assert len(records) == n and len({k for k, _ in records}) == n
        longest_line = max(len(tiny.tokenizer(f"line {k}: REGISTER_CONTENT is <{v}>\n").input_ids) for k, v in records)
        assert length - longest_line - 30 <= len(prompt) <= length
        asked = re.search(r"in line ([\w-]+)\? I need the number", text).group(1)
        assert dict(records)[asked] == str(value) and 1 <= value <= 50000
    short, _, n_short = lines.prompt(ctx, 800, 0, 0.5)
    assert text_of(tiny, short).split("line ")[1] == text_of(tiny, prompt).split("line ")[1]  # same first line


def test_a_chat_template_frames_every_retrieval_prompt_at_the_exact_length(tiny):
    tiny.tokenizer.chat_template = CHATML
    try:
        ctx = context(tiny, tasks=("niah", "passkey"), chat_template=True)
        trial = TASKS.get("niah").trial(ctx, 2000, 0, 0.5)
        text = text_of(tiny, trial.prompt)
        assert len(trial.prompt) == 2000
        assert (
            text.startswith("<|user|>Some special magic") and "provided text?<|end|><|assistant|> The special" in text
        )
        from evalkit.tasks import passkey

        pieces = passkey.Pieces.of(tiny.tokenizer, retrieval.frame(ctx))
        prompt = passkey.build_prompt(pieces, retrieval.encode(tiny.tokenizer, "The pass key is 1."), 900, 0.5)
        assert len(prompt) == 900 and text_of(tiny, prompt).startswith("<|user|>There is an important info")
        assert text_of(tiny, prompt).endswith("What is the pass key?<|end|><|assistant|> The pass key is")
    finally:
        tiny.tokenizer.chat_template = None
    with pytest.raises(EvalkitError, match="has no chat template"):
        TASKS.get("niah").trial(context(tiny, tasks=("niah",), chat_template=True), 2000, 0, 0.5)


def test_a_user_haystack_is_used_and_recorded(tiny, tmp_path):
    essay = tmp_path / "essay.txt"
    essay.write_text("Startups are hard. " * 3 + "Founders should talk to users. Growth is the metric that matters.")
    ctx = context(tiny, tasks=("niah",), haystack=haystack.parse_haystack(str(essay)))
    text = text_of(tiny, TASKS.get("niah").trial(ctx, 1500, 0, 0.5).prompt)
    assert "Founders should talk to users." in text and "Startups are hard." in text
    with pytest.raises(EvalkitError, match="does not exist"):
        haystack.parse_haystack(str(tmp_path / "missing.txt"))


def test_every_task_is_listed_with_its_options():
    out = CliRunner().invoke(app, ["tasks"]).output
    for name in ["ppl", "passkey", "niah", "niah-multikey", "niah-multivalue", "niah-multiquery", "lines"]:
        assert re.search(rf"^{re.escape(name)} ", out, re.M), out
    assert "--haystack" in out and "--stride" in out and "--min-doc-tokens" in out


def test_the_core_names_no_task():
    """No task or metric name as a string in the core modules: they read the registry. (The
    per-position profile file's columns are the core's own schema: its "nll" is not the metric.)"""
    from evalkit.results import PROFILE_COLUMNS
    from evalkit.tasks import METRICS

    names = (set(TASKS.names()) | set(METRICS.names())) - set(PROFILE_COLUMNS)
    core = Path(__file__).parent.parent / "evalkit"
    for module in ("sweep.py", "results.py", "compare.py", "plots.py", "cli.py"):
        strings = {
            n.value
            for n in ast.walk(ast.parse((core / module).read_text()))
            if isinstance(n, ast.Constant) and isinstance(n.value, str)
        }
        assert not strings & names, f"{module} names {strings & names}"


def test_a_run_records_the_new_columns_and_an_old_file_keeps_its_rows(tiny_model_dir, tmp_path):
    """A results.csv of evalkit 0.1 (its header) gains the new tasks' columns on append; its
    passkey rows still count as done (they read as chat template off)."""
    from evalkit01 import RESULTS_HEADER

    runner, out = CliRunner(), tmp_path / "r"
    base = ["run", "--model", str(tiny_model_dir), "--method", "none", "--len", "700", "--out", str(out)]
    assert runner.invoke(app, base + ["--task", "passkey"]).exit_code == 0
    rows = read_rows(out / "results.csv")
    with open(out / "results.csv", "w", newline="") as f:  # as evalkit 0.1 wrote it
        w = csv.DictWriter(f, fieldnames=RESULTS_HEADER, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    again = runner.invoke(app, base + ["--task", "passkey,niah"])
    assert again.exit_code == 0, again.output
    assert "1 row(s) written" in again.output and "1 cell(s) already there" in again.output
    header = (out / "results.csv").read_text().splitlines()[0].split(",")
    assert header[: len(RESULTS_HEADER)] == RESULTS_HEADER and {"haystack", "chat_template", "score"} <= set(header)
    got = {r["task"]: r for r in read_rows(out / "results.csv")}
    assert got["passkey"]["answer"] == rows[0]["answer"] and got["passkey"]["chat_template"] == ""
    assert got["niah"]["chat_template"] == "0" and got["niah"]["haystack"] == haystack.BUILTIN
    chat = runner.invoke(app, base + ["--task", "passkey", "--chat-template"])  # another cell: no template here
    assert chat.exit_code == 2 and "has no chat template" in chat.output


def test_a_column_this_version_does_not_know_is_kept(tiny_model_dir, tmp_path):
    runner, out = CliRunner(), tmp_path / "r"
    args = [
        "run",
        "--model",
        str(tiny_model_dir),
        "--method",
        "none",
        "--len",
        "700",
        "--task",
        "passkey",
        "--out",
        str(out),
    ]
    assert runner.invoke(app, args).exit_code == 0
    rows = read_rows(out / "results.csv")
    header = list(rows[0]) + ["from_the_future"]
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=header, lineterminator="\n")
        w.writeheader()
        w.writerows([dict(r, from_the_future="x") for r in rows])
    result = runner.invoke(app, args + ["--depths", "0"])
    assert result.exit_code == 0, result.output
    got = read_rows(out / "results.csv")
    assert [r["from_the_future"] for r in got] == ["x", ""]
    assert CliRunner().invoke(app, ["compare", str(out), "--ci"]).exit_code == 0


def test_needle_rows_compare_with_intervals(tiny_model_dir, tmp_path):
    out = tmp_path / "r"
    result = CliRunner().invoke(
        app,
        [
            "run",
            "--model",
            str(tiny_model_dir),
            "--method",
            "none",
            "--len",
            "900",
            "--task",
            "niah-multivalue,lines",
            "--depths",
            "0,0.5,1",
            "--samples",
            "2",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    rows = read_rows(out / "results.csv")
    assert len(rows) == 12 and all(r["status"] == "ok" for r in rows)
    assert {r["task"] for r in rows} == {"niah-multivalue", "lines"}
    table = CliRunner().invoke(app, ["compare", str(out), "--ci", "--per-depth"]).output
    assert "multi-value NIAH" in table and "LongEval lines" in table and "[" in table
    made = CliRunner().invoke(app, ["plot", str(out), "--out", str(tmp_path / "figs")])
    assert made.exit_code == 0, made.output
    names = {p.name for p in (tmp_path / "figs").iterdir()}
    assert any("niah-multivalue_heatmap" in n for n in names) and any("lines_heatmap" in n for n in names)


def test_rows_of_different_task_settings_are_separate_rows_in_tables(tiny_model_dir, tmp_path):
    """Two haystacks in one folder: never pooled, shown as two labelled rows (not refused)."""
    essay = tmp_path / "essay.txt"
    essay.write_text(" ".join(f"Sentence number {w} of the essay is here." for w in ["one", "two", "three"] * 80))
    out, runner = tmp_path / "r", CliRunner()
    base = [
        "run",
        "--model",
        str(tiny_model_dir),
        "--method",
        "none",
        "--len",
        "900",
        "--task",
        "niah",
        "--depths",
        "0,1",
        "--out",
        str(out),
    ]
    assert runner.invoke(app, base).exit_code == 0
    assert runner.invoke(app, base + ["--haystack", str(essay)]).exit_code == 0
    table = runner.invoke(app, ["compare", str(out), "--format", "csv"]).output
    lines = [line for line in table.splitlines() if line.startswith(str(tiny_model_dir))]
    assert sorted(line.split(",")[1] for line in lines) == sorted(
        [f"none haystack={haystack.BUILTIN}", "none haystack=essay.txt"]
    )
    assert all(line.endswith("(2)") for line in lines)  # two depths each, not four pooled


def test_a_bad_value_is_an_error_even_for_an_option_no_chosen_task_reads(tiny_model_dir, tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "run",
            "--model",
            str(tiny_model_dir),
            "--task",
            "niah",
            "--len",
            "900",
            "--multikey-variant",
            "4",
            "--out",
            str(tmp_path / "r"),
        ],
    )
    assert result.exit_code == 2 and "--multikey-variant must be 1, 2 or 3" in result.output
    assert not (tmp_path / "r").exists()


def test_every_lines_sample_is_checked_before_anything_is_written(tiny_model_dir, tmp_path):
    """At a length where some samples' questions do not fit, the run stops before its first row."""
    lengths = []
    for length in range(150, 1500, 25):
        result = CliRunner().invoke(
            app,
            [
                "run",
                "--model",
                str(tiny_model_dir),
                "--task",
                "lines",
                "--len",
                str(length),
                "--samples",
                "12",
                "--method",
                "none",
                "--out",
                str(tmp_path / f"r{length}"),
            ],
        )
        lengths.append((length, result.exit_code, (tmp_path / f"r{length}" / "results.csv").exists()))
        if result.exit_code == 0:
            break
    assert all(written == (code == 0) for _, code, written in lengths), lengths
    assert lengths[0][1] == 2 and lengths[-1][1] == 0  # refused up to a length where all fit
