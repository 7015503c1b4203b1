"""Task mechanics: passkey prompts and scoring, perplexity maths, data sources."""

import json

import pytest
import torch
import transformers
from conftest import ids, llama_config, tiny_llama

from evalkit.errors import EvalkitError
from evalkit.forward import next_token_logits, token_nll
from evalkit.tasks import passkey
from evalkit.tasks.data import documents
from evalkit.tasks.perplexity import bucket_profile, strided_nll


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.mark.parametrize("length", [200, 1000, 4321, 32768])
@pytest.mark.parametrize("depth", [0.0, 0.37, 1.0])
def test_prompt_has_exactly_the_requested_length_and_the_needle_at_its_depth(tokenizer, length, depth):
    pieces = passkey.Pieces.of(tokenizer)
    needle = tokenizer(passkey.NEEDLE.format(key=12345), add_special_tokens=False).input_ids
    prompt = passkey.build_prompt(pieces, needle, length, depth)
    assert len(prompt) == length
    text = tokenizer.decode(prompt)
    assert text.startswith(passkey.INSTRUCTION.strip()[:40]) and text.endswith("The pass key is")
    at = next(i for i in range(len(prompt)) if prompt[i : i + len(needle)] == needle)
    filler_span = length - len(pieces.prefix) - len(needle) - len(pieces.question)
    assert abs((at - len(pieces.prefix)) / filler_span - depth) < 0.02 + len(pieces.filler) / filler_span


def test_keys_are_five_digits_and_fixed_by_seed_sample_depth():
    k = passkey.passkey_for(0, 3, 0.5)
    assert 10000 <= k <= 99999 and k == passkey.passkey_for(0, 3, 0.5)
    assert len({passkey.passkey_for(0, s, 0.5) for s in range(20)}) > 15
    assert passkey.passkey_for(1, 3, 0.5) != k


@pytest.mark.parametrize(
    "answer, ok",
    [
        (" 12345.", True),
        ("12345 is it", True),
        ("123456", False),
        ("The key 99999, no 12345", False),
        ("", False),
        ("112345", False),
    ],
)
def test_scoring_takes_the_first_integer_exactly(answer, ok):
    assert passkey.score(answer, 12345) is ok


def test_chunked_nll_equals_the_full_logits_loss():
    model, x = tiny_llama(), ids(60)
    with torch.no_grad():
        full = model(input_ids=x, labels=x).loss
    got = token_nll(model, x, chunk=7)
    assert got.numel() == 59
    assert got.mean().item() == pytest.approx(full.item(), rel=1e-5)


def test_sliding_window_scores_every_token_once_with_its_window():
    model, x = tiny_llama(max_pos=64), ids(50)
    got = strided_nll(model, x, window=20, stride=8)
    assert got.numel() == 49
    full = token_nll(model, x)
    torch.testing.assert_close(got[:19], full[:19])  # the first window sees all of its context
    # token 30 is scored in the window ending at 36: tokens 16..35
    torch.testing.assert_close(got[29], token_nll(model, x[:, 16:36])[30 - 16 - 1])
    torch.testing.assert_close(strided_nll(model, x, window=50, stride=10), full)


def test_bucket_profile_covers_every_position():
    nll = torch.arange(10, dtype=torch.float32)
    assert bucket_profile(nll, 4) == [(0, 4, 1.5), (4, 8, 5.5), (8, 10, 8.5)]


def test_builtin_corpus_is_deterministic_and_long():
    a = [d.doc_id for _, d in zip(range(5), documents("stdlib"))]
    b = [(d.doc_id, len(d.text)) for _, d in zip(range(5), documents("stdlib"))]
    assert a == [x for x, _ in b] and all(n > 100_000 for _, n in b)


def test_local_sources(tmp_path):
    (tmp_path / "a.txt").write_text("alpha")
    (tmp_path / "b.txt").write_text("beta")
    assert [d.text for d in documents(str(tmp_path))] == ["alpha", "beta"]
    jl = tmp_path / "d.jsonl"
    jl.write_text("\n".join(json.dumps({"body": t}) for t in ["x", "y"]))
    assert [d.doc_id for d in documents(str(jl), "body")] == ["d.jsonl#0", "d.jsonl#1"]
    pq = tmp_path / "d.parquet"
    import pandas as pd

    pd.DataFrame({"text": ["p", "q"]}).to_parquet(pq)
    assert [d.text for d in documents(str(pq))] == ["p", "q"]
    (tmp_path / "x.csv").write_text("text\nz\n")
    with pytest.raises(EvalkitError, match="unsupported data file type"):
        list(documents(str(tmp_path / "x.csv")))


def _tiny_family(family: str, **extra):
    """A tiny model of a family whose logits are not the plain LM head output."""
    torch.manual_seed(0)
    cfg = llama_config(cls=getattr(transformers, f"{family}Config"), head_dim=16, **extra)
    return getattr(transformers, f"{family}ForCausalLM")(cfg).eval()


@pytest.mark.parametrize(
    "family, extra",
    [
        ("Gemma2", {"final_logit_softcapping": 0.05}),
        ("Cohere", {"logit_scale": 0.5}),
        ("Granite", {"logits_scaling": 4.0}),
    ],
)
def test_chunked_nll_applies_what_the_model_does_after_its_head(family, extra):
    model, x = _tiny_family(family, **extra), ids(40)
    with torch.no_grad():
        out = model(input_ids=x, labels=x)
    assert token_nll(model, x, chunk=7).mean().item() == pytest.approx(out.loss.item(), rel=1e-5)
    last, _ = next_token_logits(model, x)
    torch.testing.assert_close(last, out.logits[:, -1].float())
    plain = llama_config(cls=getattr(transformers, f"{family}Config"), head_dim=16)
    assert all(getattr(plain, k) != v for k, v in extra.items())  # the setting under test is not the default


def test_a_model_that_changes_its_logits_unknowably_is_refused():
    class Doubled(transformers.LlamaForCausalLM):
        def forward(self, *args, **kwargs):
            out = super().forward(*args, **kwargs)
            out.logits = out.logits * 2
            return out

    torch.manual_seed(0)
    model = Doubled(llama_config()).eval()
    with pytest.raises(EvalkitError, match="changes its logits after the LM head"):
        token_nll(model, ids(20))


def _doc_folder(tmp_path, tokenizer, sizes):
    """Folder of .txt documents, the i-th with about sizes[i] tokens; returns (folder, token counts)."""
    folder = tmp_path / "docs"
    folder.mkdir()
    text = next(documents("stdlib")).text
    counts = []
    for i, n in enumerate(sizes):
        ids = tokenizer(text, verbose=False).input_ids[1 + 1000 * i : 1 + 1000 * i + n]
        (folder / f"{i}.txt").write_text(tokenizer.decode(ids))
        counts.append(len(tokenizer((folder / f"{i}.txt").read_text(), verbose=False).input_ids))
    return folder, counts


def test_a_stride_scores_the_whole_document_as_the_window_sees_it(tokenizer, tiny_model_dir, tmp_path):
    """PI / YaRN protocol: windows of the length every stride over the whole document; checked
    against the model's own logits window by window."""
    from typer.testing import CliRunner

    from evalkit.cli import app
    from evalkit.results import read_rows

    folder, (n,) = _doc_folder(tmp_path, tokenizer, [700])
    out = tmp_path / "r"
    result = CliRunner().invoke(
        app,
        [
            "run",
            "--model",
            str(tiny_model_dir),
            "--task",
            "ppl",
            "--method",
            "none",
            "--len",
            "200",
            "--stride",
            "64",
            "--data",
            str(folder),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    (row,) = read_rows(out / "results.csv")
    assert int(row["tokens"]) == n - 1 and row["stride"] == "64"
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    x = torch.tensor([tokenizer((folder / "0.txt").read_text(), verbose=False).input_ids])
    losses, scored = [], 1  # tokens [0, scored) have their loss (token 0 never)
    with torch.no_grad():
        for end in range(200, n + 64, 64):
            end, start = min(end, n), max(0, min(end, n) - 200)
            logp = torch.log_softmax(model(x[:, start:end]).logits[0, :-1].float(), -1)
            nll = -logp.gather(1, x[0, start + 1 : end, None])[:, 0]  # predictions of tokens start+1..end-1
            losses.append(nll[scored - start - 1 :])
            scored = end
            if end == n:
                break
    assert float(row["nll"]) == pytest.approx(float(torch.cat(losses).mean()), rel=1e-5)


def test_min_doc_tokens_keeps_only_long_documents(tokenizer, tiny_model_dir, tmp_path):
    from typer.testing import CliRunner

    from evalkit.cli import app
    from evalkit.results import read_rows

    folder, counts = _doc_folder(tmp_path, tokenizer, [300, 900])
    out = tmp_path / "r"
    args = [
        "run",
        "--model",
        str(tiny_model_dir),
        "--task",
        "ppl",
        "--method",
        "none",
        "--len",
        "160",
        "--samples",
        "2",
        "--data",
        str(folder),
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(app, args + ["--min-doc-tokens", "500"])
    assert result.exit_code == 0, result.output
    assert "skipped 1 document(s) shorter than 500 tokens" in result.output
    assert [r["doc"] for r in read_rows(out / "results.csv")] == ["1.txt"]
    assert CliRunner().invoke(app, args + ["--min-doc-tokens", "5000"]).exit_code == 2


def test_short_documents_are_skipped_and_counted_and_positions_hold_the_bucket_means(
    tokenizer, tiny_model_dir, tmp_path
):
    """A document shorter than the length is skipped (said in the output and in notes.txt), never
    padded; each used document is cut to its first ``length`` tokens; positions.csv holds the mean
    NLL of every 64 predicted positions, computed here from the model's own logits."""
    from typer.testing import CliRunner

    from evalkit.cli import app
    from evalkit.results import read_profile, read_rows

    folder, counts = _doc_folder(tmp_path, tokenizer, [120, 400, 900])
    assert counts[0] < 200 < counts[1]
    out = tmp_path / "r"
    result = CliRunner().invoke(
        app,
        [
            "run",
            "--model",
            str(tiny_model_dir),
            "--task",
            "ppl",
            "--method",
            "none",
            "--len",
            "200",
            "--samples",
            "2",
            "--bucket",
            "64",
            "--data",
            str(folder),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    note = "ppl at 200: skipped 1 document(s) shorter than 200 tokens"
    assert note in result.output and note in (out / "notes.txt").read_text()
    rows = read_rows(out / "results.csv")
    assert [r["doc"] for r in rows] == ["1.txt", "2.txt"] and {r["tokens"] for r in rows} == {"199"}
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    profile = read_profile(out / "positions.csv")
    for row in rows:
        x = torch.tensor([tokenizer((folder / row["doc"]).read_text(), verbose=False).input_ids[:200]])
        with torch.no_grad():
            logp = torch.log_softmax(model(x).logits[0, :-1].float(), -1)
        nll = -logp.gather(1, x[0, 1:, None])[:, 0]  # 199 predicted positions
        want = [(0, 64), (64, 128), (128, 192), (192, 199)]
        got = [
            (int(p["position_start"]), int(p["position_end"]), float(p["nll"]))
            for p in profile
            if p["doc"] == row["doc"]
        ]
        assert [(s, e) for s, e, _ in got] == want
        for s, e, value in got:
            assert value == pytest.approx(float(nll[s:e].mean()), rel=1e-5)
        assert float(row["nll"]) == pytest.approx(float(nll.mean()), rel=1e-5)
