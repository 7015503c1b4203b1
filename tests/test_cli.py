"""The CLI end to end on a tiny random-init LLaMA: schema, resume, OOM, bad input."""

import csv
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from evalkit.cli import app

runner = CliRunner()


def evalkit(*args):
    return runner.invoke(app, [str(a) for a in args])


def rows(out: Path):
    with open(out / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


README = Path(__file__).resolve().parent.parent / "README.md"
RESULTS_DOC = README.parent / "docs" / "results.md"  # the docs page that states the results schema


def documented_columns() -> list[str]:
    """The columns the schema table of docs/results.md names (the back-quoted names of its first
    cells), read from its section "## `results.csv`" up to the next heading."""
    text = RESULTS_DOC.read_text(encoding="utf-8").split("\n## `results.csv`\n", 1)[1].split("\n#", 1)[0]
    table = [line for line in text.splitlines() if line.startswith("| `")]
    return [name for line in table for name in re.findall(r"`([a-z_]+)`", line.split("|")[1])]


def documented_profile_columns() -> list[str]:
    """The ``positions.csv`` header as docs/results.md lists it."""
    text = RESULTS_DOC.read_text(encoding="utf-8").split("`positions.csv`: ", 1)[1].split(" (predicted positions", 1)[0]
    return re.findall(r"[a-z_]+", text)


@pytest.fixture
def tiny_run(tiny_model_dir, tmp_path):
    def go(*extra, out=None):
        out = out or tmp_path / "res"
        result = evalkit("run", "--model", tiny_model_dir, "--out", out, *extra)
        return result, out

    return go


def test_schema_of_both_tasks(tiny_run):
    result, out = tiny_run("--method", "none,pi", "--len", "160,320", "--depths", "0,1", "--samples", "2")
    assert result.exit_code == 0, result.output
    with open(out / "results.csv", newline="") as f:
        header = next(csv.reader(f))
    assert sorted(header) == sorted(documented_columns()), "results.csv and the schema table of docs/results.md differ"
    assert header[:5] == ["model", "method", "scale", "alpha", "params"]  # the common columns come first
    with open(out / "positions.csv", newline="") as f:
        assert next(csv.reader(f)) == documented_profile_columns()
    got = rows(out)
    passkey = [r for r in got if r["task"] == "passkey"]
    ppl = [r for r in got if r["task"] == "ppl"]
    assert len(passkey) == 2 * 2 * 2 * 2  # methods × lengths × depths × samples
    assert len(ppl) == 2 * 2 * 2  # methods × lengths × documents
    for r in passkey:
        assert r["tokens"] == r["length"] and len(r["passkey"]) == 5 and r["correct"] in ("0", "1")
        assert r["ppl"] == r["nll"] == "" and r["status"] == "ok"
    for r in ppl:
        assert int(r["tokens"]) == int(r["length"]) - 1 and float(r["ppl"]) > 1 and r["doc"].startswith("stdlib-")
        assert r["passkey"] == r["answer"] == r["depth"] == ""
    for r in got:
        for col in (
            "model",
            "method",
            "trained_len",
            "seconds",
            "peak_mem_mb",
            "device",
            "dtype",
            "seed",
            "evalkit_version",
            "created_at",
        ):
            assert r[col] != "", col
        assert (r["scale"] != "") == (r["method"] == "pi") and r["alpha"] == ""
    # the same key and depth for a sample at every length and method
    keys = {(r["depth"], r["sample"]): set() for r in passkey}
    for r in passkey:
        keys[(r["depth"], r["sample"])].add(r["passkey"])
    assert all(len(v) == 1 for v in keys.values())
    assert "perplexity" in result.output and "passkey accuracy" in result.output
    assert (out / "positions.csv").stat().st_size > 0


def test_rows_name_the_git_commit_of_the_code_that_made_them(tiny_run):
    """Run from a checkout, every row carries ``git rev-parse HEAD`` (+dirty when evalkit's own files
    changed), so rows of one ``evalkit_version`` made by different code can be told apart."""
    root = README.parent
    head = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0 or not (root / ".git").exists():
        pytest.skip("not a git checkout")
    changed = subprocess.run(
        ["git", "-C", root, "status", "--porcelain", "--untracked-files=no", "evalkit", "tasks", "patches"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    result, out = tiny_run("--method", "none", "--len", "160", "--task", "ppl")
    assert result.exit_code == 0, result.output
    assert {r["evalkit_commit"] for r in rows(out)} == {head.stdout.strip() + ("+dirty" if changed else "")}


def test_rerun_skips_recorded_cells_and_force_redoes_them(tiny_run):
    args = ("--method", "none", "--len", "160", "--task", "passkey,ppl", "--bucket", "64")
    tiny_run(*args)
    result, out = tiny_run(*args)
    assert result.exit_code == 0 and "0 row(s) written" in result.output and "2 cell(s) already there" in result.output
    assert len(rows(out)) == 2
    profile = (out / "positions.csv").read_text()
    first = {r["created_at"] for r in rows(out)}
    time.sleep(1.1)
    result, out = tiny_run(*args, "--force")
    assert len(rows(out)) == 2 and not first & {r["created_at"] for r in rows(out)}
    assert (out / "positions.csv").read_text() == profile  # replaced, not appended twice


def test_killed_sweep_resumes_without_lost_or_duplicated_rows(tiny_model_dir, tmp_path):
    out = tmp_path / "killed"
    cmd = [
        sys.executable,
        "-m",
        "evalkit.cli",
        "run",
        "--model",
        str(tiny_model_dir),
        "--out",
        str(out),
        "--method",
        "none,ntk,yarn",
        "--len",
        "160,480,960",
        "--task",
        "passkey",
        "--depths",
        "0,0.5,1",
        "--samples",
        "3",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = out / "results.csv"
    deadline = time.time() + 120
    while time.time() < deadline and (not results.exists() or results.read_text().count("\n") < 6):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = results.read_text().count("\n") - 1
    assert 5 <= before < 81, "the kill should land mid-sweep"
    with open(results, "a") as f:
        f.write("/tmp/x,none,,,256,passkey,16")  # a torn last line, as a kill mid-write leaves
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    got = rows(out)
    keys = [(r["method"], r["length"], r["depth"], r["sample"]) for r in got]
    assert len(keys) == 3 * 3 * 3 * 3 and len(set(keys)) == len(keys)


def test_out_of_memory_is_recorded_and_longer_lengths_skipped(tiny_run, monkeypatch):
    import evalkit.forward as forward

    real = forward.token_nll

    def token_nll(model, ids, *a, **k):
        if ids.shape[1] > 300:
            raise MemoryError("simulated")
        return real(model, ids, *a, **k)

    monkeypatch.setattr(forward, "token_nll", token_nll)
    result, out = tiny_run("--method", "none,ntk", "--len", "160,320,640", "--task", "ppl", "--no-prefix")
    assert result.exit_code == 0, result.output
    status = {(r["method"], r["length"]): r["status"] for r in rows(out)}
    for m in ("none", "ntk"):
        assert status[(m, "160")] == "ok" and status[(m, "320")] == "oom" and status[(m, "640")] == "skipped"
    assert "OOM" in result.output


def test_prefix_mode_equals_separate_forwards(tiny_run, tmp_path):
    args = ("--method", "none,pi", "--scale", "2", "--len", "160,320,480", "--task", "ppl", "--samples", "2")
    _, a = tiny_run(*args, out=tmp_path / "prefix")
    _, b = tiny_run(*args, "--no-prefix", out=tmp_path / "separate")
    ra = {(r["method"], r["length"], r["doc"]): r for r in rows(a)}
    rb = {(r["method"], r["length"], r["doc"]): r for r in rows(b)}
    assert ra.keys() == rb.keys() and len(ra) == 12
    for k in ra:
        assert ra[k]["shared"] == "prefix-forward" and rb[k]["shared"] == "none"
        assert float(ra[k]["nll"]) == pytest.approx(float(rb[k]["nll"]), rel=1e-5)


def save_tiny_bloom(folder: Path, tokenizer_dir) -> Path:
    """A tiny random-init BLOOM (ALiBi) with the tiny LLaMA's tokenizer, saved for the CLI."""
    import torch
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    cfg = transformers.BloomConfig(
        vocab_size=len(tok), hidden_size=64, n_layer=2, n_head=4, bos_token_id=0, eos_token_id=1
    )
    transformers.BloomForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def save_tiny_mpt(folder: Path, tokenizer_dir, max_seq_len: int) -> Path:
    """A tiny random-init MPT (ALiBi, refuses inputs past ``max_seq_len``) with the tiny LLaMA's tokenizer."""
    import torch
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    cfg = transformers.MptConfig(
        vocab_size=len(tok),
        d_model=64,
        n_layers=2,
        n_heads=4,
        expansion_ratio=2,
        max_seq_len=max_seq_len,
        bos_token_id=0,
        eos_token_id=1,
    )
    transformers.MptForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_mpt_max_seq_len_is_raised_to_the_longest_length(tiny_model_dir, tmp_path):
    """MPT refuses inputs longer than config.max_seq_len (64 here): evalkit raises it for the sweep, and
    the NLL at 160 tokens is that of transformers' own model configured for 160."""
    import torch
    import transformers

    folder = save_tiny_mpt(tmp_path / "mpt", tiny_model_dir, max_seq_len=64)
    plain = transformers.MptForCausalLM.from_pretrained(folder).eval()
    from evalkit.tasks.data import stdlib_documents

    text = next(stdlib_documents()).text[:4000]  # the first built-in document, as the run reads it
    x = torch.tensor([transformers.AutoTokenizer.from_pretrained(folder)(text).input_ids[:160]])
    with pytest.raises(Exception):  # what evalkit must work around
        plain(input_ids=x)
    result = evalkit(
        "run",
        "--model",
        folder,
        "--method",
        "none,ntk-alibi",
        "--len",
        "160",
        "--task",
        "ppl",
        "--samples",
        "1",
        "--out",
        tmp_path / "r",
    )
    assert result.exit_code == 0, result.output
    got = {r["method"]: r for r in rows(tmp_path / "r")}
    assert {r["status"] for r in got.values()} == {"ok"} and got["none"]["trained_len"] == "64"
    plain.config.max_seq_len = 160
    with torch.no_grad():
        logp = torch.log_softmax(plain(input_ids=x).logits[0, :-1].float(), -1)
    want = float(-logp.gather(1, x[0, 1:, None]).mean())
    assert float(got["none"]["nll"]) == pytest.approx(want, rel=1e-5)
    assert float(got["ntk-alibi"]["nll"]) != pytest.approx(want, rel=1e-5)


def _method_text(method: str, model_dir) -> str:
    """``method:k=v,...`` with the values that make it act on the tiny models (scale / alpha 2)."""
    from conftest import method_params

    params = method_params(method, s=2.0, folder=Path(model_dir).parent)
    params.update(
        {
            "self-extend": {"window": 32, "group": 4},
            "rerope": {"window": 32},
            "leaky-rerope": {"window": 32, "k": 2.0},
        }.get(method, {})
    )
    return method + (":" + ",".join(f"{k}={v}" for k, v in params.items()) if params else "")


def _prefix_cases():
    from evalkit.patches import METHODS

    for name, m in METHODS.items():
        if m.encoding != "any":
            yield pytest.param(name, m.encoding, m.static, id=name)


@pytest.mark.parametrize("method, encoding, static", list(_prefix_cases()))
def test_every_static_method_gives_prefix_mode_the_nll_of_separate_forwards(
    method, encoding, static, tiny_model_dir, tmp_path
):
    """What docs/tasks.md promises for prefix mode, per method and through the CLI: one forward at the
    longest length gives each shorter length the NLL of its own forward (--no-prefix). Dynamic
    methods never share a forward."""
    model = tiny_model_dir if encoding == "rope" else save_tiny_bloom(tmp_path / "bloom", tiny_model_dir)
    args = (
        "--model",
        model,
        "--method",
        _method_text(method, tiny_model_dir),
        "--len",
        "160,320,480",
        "--task",
        "ppl",
        "--trained-len",
        "128",
    )
    a, b = (
        evalkit("run", *args, "--out", tmp_path / "prefix"),
        evalkit("run", *args, "--no-prefix", "--out", tmp_path / "sep"),
    )
    assert a.exit_code == b.exit_code == 0, a.output + b.output
    ra = {(r["length"], r["doc"]): r for r in rows(tmp_path / "prefix")}
    rb = {(r["length"], r["doc"]): r for r in rows(tmp_path / "sep")}
    assert ra.keys() == rb.keys() and len(ra) == 3
    for k in ra:
        assert ra[k]["shared"] == ("prefix-forward" if static else "none") and rb[k]["shared"] == "none"
        assert float(ra[k]["nll"]) == pytest.approx(float(rb[k]["nll"]), rel=1e-5), k


def _one_line_error(result, needle):
    assert result.exit_code == 2, result.output
    text = result.output.strip()
    assert "Traceback" not in text and text.count("\n") == 0, text
    assert text.startswith("evalkit: error:") and needle in text, text


@pytest.mark.parametrize(
    "args, needle",
    [
        (("--model", "lama-7b"), "did you mean 'llama-7b'"),
        (("--method", "ntkk"), "did you mean 'ntk'"),
        (("--task", "pass-key"), "did you mean 'passkey'"),
        (("--method", "ntk-alibi"), "methods for rope: none, pi, ntk"),
        (("--len", "0"), "positive number of tokens"),
        (("--len", "-5"), "positive number of tokens"),
        (("--len", "abc"), "bad length 'abc'"),
        (("--scale", "0.5", "--method", "pi"), "--scale must be a finite number from 1"),
        (("--data", "/nonexistent/file.txt", "--task", "ppl"), "does not exist"),
        (("--model", "/nonexistent/checkpoint"), "no such checkpoint folder"),
    ],
)
def test_bad_input_is_one_line_with_exit_code_2(args, needle, tiny_model_dir, tmp_path):
    out = tmp_path / "res"
    base = ["run", "--out", str(out), "--len", "160", "--model", str(tiny_model_dir)]
    _one_line_error(evalkit(*base, *args), needle)
    assert not (out / "results.csv").exists()


def test_length_longer_than_the_data(tiny_run, tmp_path):
    doc = tmp_path / "short.txt"
    doc.write_text("just a few words " * 10)
    result, _ = tiny_run("--task", "ppl", "--data", doc, "--len", "4096")
    _one_line_error(result, "longer than the data")


def test_unreadable_jsonl_and_missing_field(tiny_run, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{not json\n')
    _one_line_error(tiny_run("--task", "ppl", "--data", bad)[0], "is not valid JSON")
    nofield = tmp_path / "nofield.jsonl"
    nofield.write_text('{"body": "x"}\n')
    _one_line_error(tiny_run("--task", "ppl", "--data", nofield)[0], "has no 'text' field")


def test_foreign_results_file_is_refused_and_left_alone(tiny_run, tmp_path):
    out = tmp_path / "foreign"
    out.mkdir()
    (out / "results.csv").write_text("a,b\n1,2\n")
    result, _ = tiny_run("--len", "160", out=out)
    _one_line_error(result, "not an evalkit results file")
    assert (out / "results.csv").read_text() == "a,b\n1,2\n"


def test_remote_code_needs_the_flag(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "evalkit.toml").write_text(
        f'[models.my-baichuan]\nsource = "{tiny_model_dir}"\nfamily = "baichuan"\nencoding = "rope"\n'
        "trained_len = 256\nremote_code = true\n"
    )
    _one_line_error(evalkit("run", "--model", "my-baichuan", "--len", "160"), "--trust-remote-code")


def test_user_file_aliases_are_listed_and_usable(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "evalkit.toml").write_text(
        f'[models.tiny]\nsource = "{tiny_model_dir}"\ntrained_len = 200\n'
        f'[models.llama-7b]\nsource = "/data/llama-7b"\n'
        '[models.elsewhere]\nsource = "/mnt/x"\nencoding = "alibi"\n'
        "trained_len = 4096\n"
    )
    listing = evalkit("models").output
    assert "tiny" in listing and "/data/llama-7b" in listing and "/mnt/x" in listing
    result = evalkit("run", "--model", "tiny", "--len", "160", "--task", "passkey", "--out", tmp_path / "o")
    assert result.exit_code == 0, result.output
    assert rows(tmp_path / "o")[0]["trained_len"] == "200"


def test_trained_len_override_changes_the_default_scale(tiny_run):
    result, out = tiny_run("--method", "pi", "--len", "320", "--task", "passkey", "--trained-len", "80")
    assert result.exit_code == 0, result.output
    r = rows(out)[0]
    assert (r["trained_len"], r["scale"]) == ("80", "4")


def test_listings():
    listed = evalkit("methods").output
    from evalkit.patches import METHODS
    from evalkit.registry import FAMILIES

    assert all(f"\n{name} " in listed for name in METHODS.names())  # every registered method, by the registry
    assert "window=1024 group=8" in listed and "scale=length/L" in listed
    families = evalkit("models").output
    assert all(f"\n{name} " in families for name in FAMILIES.names())
    assert "smollm2-135m" in evalkit("models").output and "baichuan-13b" in evalkit("models").output
    assert "passkey" in evalkit("tasks").output


def test_prefix_mode_only_where_the_output_cannot_depend_on_the_length():
    from evalkit.config import RunConfig
    from evalkit.plan import prefix_mode

    def independent(method, **kw):
        cfg = RunConfig(methods=(method,), **kw)
        return prefix_mode(cfg, cfg.calls[0])

    assert independent("none") and independent("logn") and independent("self-extend") and independent("rerope")
    assert not independent("pi") and not independent("ntk") and not independent("llama3")  # derived per length
    assert independent("pi", scale=2.0) and independent("ntk", scale=2.0) and independent("yarn", scale=2.0)
    assert independent("ntk", alpha=2.0) and not independent("pi", alpha=2.0)
    assert independent("pi:scale=2") and independent("ntk-by-parts", params={"scale": "3"})
    assert not independent("dynamic-ntk", scale=2.0) and not independent("dynamic-yarn")
    # sliding windows: each length its own forward even where the method would allow one for all
    from types import SimpleNamespace

    from evalkit.tasks import TASKS, Cell, Sharing

    shared = Sharing(prefix=True)
    strided = SimpleNamespace(cfg=RunConfig(scale=2.0, options={"stride": 64}, lengths=(128,), tasks=("ppl",)))
    a, b = Cell("ppl", 128, 0, None, "d"), Cell("ppl", 256, 0, None, "d")
    assert TASKS.get("ppl").group(strided, a, shared) != TASKS.get("ppl").group(strided, b, shared)
    whole = SimpleNamespace(cfg=RunConfig(scale=2.0, lengths=(128,), tasks=("ppl",)))
    assert TASKS.get("ppl").group(whole, a, shared) == TASKS.get("ppl").group(whole, b, shared)


@pytest.mark.parametrize(
    "argv, needle", [(["frobnicate"], "No such command 'frobnicate'"), (["run", "--method"], "requires an argument")]
)
def test_clicks_own_usage_errors_are_one_line_too(argv, needle, capsys):
    from evalkit.cli import main

    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and err.count("\n") == 0 and err.startswith("evalkit: error:") and needle in err


def test_version_is_the_installed_distributions():
    """--version says what pip installed (pyproject's version), so the two cannot drift apart."""
    import subprocess
    import sys
    from importlib.metadata import version

    out = subprocess.run(
        [sys.executable, "-c", "from evalkit.cli import main; main()", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0 and out.stdout.strip() == f"evalkit {version('evalkit')}"


# --- the first hour ---

COMMANDS = ["run", "compare", "plot", "report", "methods", "tasks", "models"]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_fits_80_columns_without_cut_or_made_up_options(command):
    """Every option's whole text at 80 columns: no "…" cut behind a type column, no generated
    --no-X twin of a flag, no Python type names as placeholders."""
    import re

    out = subprocess.run(
        [sys.executable, "-m", "evalkit", command, "--help"],
        capture_output=True,
        text=True,
        env=dict(os.environ, COLUMNS="80", TERM="xterm"),
    )
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert all(len(line) <= 80 for line in text.splitlines()), max(text.splitlines(), key=len)
    assert "…" not in text and "--no-no-" not in text
    options = [line for line in text.splitlines() if line.lstrip().startswith("-")]
    assert not [line for line in options if re.search(r"<(str|int|float|bool|list|path)", line)]
    for flag in ("--trust-remote-code", "--force", "--no-prefix", "--rope-reset"):
        assert f"--no-{flag[2:]}" not in text or flag == "--no-prefix"
    if command == "run":
        words = " ".join(text.split())  # wrapped lines joined: each help text whole
        assert "Allow checkpoints that ship their own Python code (Baichuan)." in words
        assert "Fixed alpha for ntk/dynamic-ntk/ntk-alibi. Default: the scale." in words


@pytest.mark.parametrize("command", ["methods", "tasks", "models"])
def test_listings_do_not_load_torch(command):
    """The listings read the registries only (torch alone takes seconds to import)."""
    code = (
        f"import sys\nfrom evalkit.cli import main\ntry:\n    main([{command!r}])\nexcept SystemExit:\n    pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip().endswith("NO-TORCH"), out.stdout[-500:] + out.stderr


def test_the_demo_writes_apart_draws_its_figures_and_says_what_next(tiny_model_dir, tmp_path, monkeypatch):
    """No --out: runs/MODEL, git-ignored even in the user's own repository; figures drawn; the
    closing lines name the files and the next commands, and those commands work."""
    monkeypatch.chdir(tmp_path)
    subprocess.run(["git", "init", "-q"], check=True)
    result = evalkit("run", "--model", tiny_model_dir, "--len", "160", "--method", "none,pi")
    assert result.exit_code == 0, result.output
    import re

    methods = {
        re.split(r"\s{2,}", line)[1] for line in result.output.splitlines() if line.startswith(str(tiny_model_dir))
    }
    assert methods == {"none", "pi"}  # inside the trained window the derived scale 1 is not part of the label
    out = Path("runs") / tiny_model_dir.as_posix().strip("/").replace("/", "-")
    assert (out / "results.csv").is_file() and not Path("results").exists()
    figures = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert figures and all(name in result.output for name in figures)
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"], capture_output=True, text=True, check=True
    ).stdout
    assert status == "", status  # nothing for the user to commit by mistake
    nexts = [line.split("#")[0].split() for line in result.output.splitlines() if line.startswith("  evalkit ")]
    assert [n[1] for n in nexts[:3]] == ["compare", "report", "run"]
    assert evalkit(*nexts[0][1:]).exit_code == 0  # evalkit compare runs/... --ci
    again = evalkit(*nexts[2][1:])  # one more method in the same folder: the earlier cells kept
    assert again.exit_code == 0 and "cell(s) already there" in again.output, again.output


def test_the_next_run_hint_keeps_every_option_given(tiny_model_dir, tmp_path):
    """The "one more method" command repeats the task options and settings of the run (depths,
    samples, seed, flags), so running it adds that method's cells and measures nothing else."""
    out = tmp_path / "r"
    given = ("--len", "160", "--task", "passkey", "--depths", "0.25", "--samples", "2", "--seed", "3", "--no-prefix")
    first = evalkit("run", "--model", tiny_model_dir, "--method", "none", *given, "--out", out)
    assert first.exit_code == 0, first.output
    hint = next(line for line in first.output.splitlines() if line.startswith("  evalkit run"))
    for token in ("--depths 0.25", "--samples 2", "--seed 3", "--no-prefix", f"--out {out}"):
        assert token in hint, hint
    again = evalkit(*hint.split("#")[0].split()[1:])
    assert again.exit_code == 0 and "2 cell(s) already there" in again.output, again.output
    rows = list(csv.DictReader((out / "results.csv").open()))
    methods = hint.split("--method ")[1].split()[0].split(",")
    assert len(methods) == 2 and methods[0] == "none"
    assert {(r["method"], r["depth"], r["seed"]) for r in rows} == {(m, "0.25", "3") for m in methods}
    assert len(rows) == 4  # 2 methods x 2 samples at one depth


def test_progress_off_a_terminal_is_a_line_per_group_with_a_cost_weighted_eta():
    from evalkit.progress import duration, lines, reporter

    said, now = [], [0.0]
    start = lines(said.append, "evalkit", clock=lambda: now[0])
    advance = start(3, 4000.0)  # three cells: 1000 + 1000 + 2000 tokens
    advance(0, "none ppl 1000")
    now[0] = 10.0
    advance(1, None, 1000.0)
    assert said == ["evalkit: 1/3 cells (33%) · none ppl 1000 · 10s elapsed · eta 30s"]  # 3000 tokens left at 100/s
    advance(0, "ntk ppl 2000")
    now[0] = 130.0
    advance(2, None, 3000.0)
    assert said[-1] == "evalkit: 3/3 cells (100%) · ntk ppl 2000 · 2m10s elapsed · done"
    assert duration(3725) == "1h02m" and duration(59.6) == "1m00s"

    class Pipe:
        def isatty(self):
            return False

    assert reporter(said.append, stream=Pipe()) is not None
    assert reporter(said.append, stream=Pipe()).__name__ == "start"  # plain lines, not the bar


def test_requires_python_is_what_the_readme_says_and_what_runs_here():
    import re
    import tomllib

    root = Path(__file__).resolve().parents[1]
    claimed = tomllib.loads((root / "pyproject.toml").read_text())["project"]["requires-python"]
    lowest = tuple(int(x) for x in re.fullmatch(r">=(\d+)\.(\d+)", claimed).groups())
    assert f"Python ≥ {lowest[0]}.{lowest[1]}" in (root / "README.md").read_text()
    assert sys.version_info[:2] >= lowest
