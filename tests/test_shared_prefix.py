"""Retrieval trials that start from an earlier trial's KV cache equal full prefills: the
last prompt position's logits and the greedy answers, for every static method on every
family whose cache can be cut back; the fallbacks (dynamic methods, sliding windows, remote
code, --no-prefix); and the rows of a sweep with and without sharing."""

from types import SimpleNamespace

import pytest
import torch
from conftest import ALIBI_MODELS, ATTENTION_HOOK_REFUSED, LOGN_REFUSED, ROPE_MODELS, ids, method_params
from typer.testing import CliRunner

from evalkit.cli import app
from evalkit.forward import croppable, next_token_logits
from evalkit.kvcache import cache_arg, cache_in, cache_out
from evalkit.patches import METHODS, parse_call, patched
from evalkit.results import read_rows
from evalkit.tasks.retrieval import SharedPrefix, generate

L = 16  # the tiny models' trained length: every prompt below is past it, so every method acts
FAMILIES = {**ROPE_MODELS, **ALIBI_MODELS}
SLIDING = {"mistral", "gemma2", "gemma3"}  # caches that keep a window: never shared
REMOTE = {f for f in FAMILIES if f.startswith("baichuan")}  # their own (tuple) caches: never shared


def prompts() -> list[list[int]]:
    """Prompts sharing prefixes of several lengths with each other, as trials of one sample at
    several depths and lengths do; one is a prefix of another and one is repeated."""
    a, b, c = ids(60, seed=1)[0].tolist(), ids(60, seed=2)[0].tolist(), ids(60, seed=3)[0].tolist()
    return sorted([a[:50], a[:20] + b[20:45], a[:35] + c[35:56], a[:35] + c[35:48], a[:50]])


def fake_ctx(model):
    tokenizer = SimpleNamespace(eos_token_id=None, decode=lambda out, skip_special_tokens=True: " ".join(map(str, out)))
    return SimpleNamespace(model=model, tokenizer=tokenizer, input_device="cpu")


def refused(family: str, method: str) -> bool:
    m = METHODS.get(method)
    return (m.attention is not None and family in ATTENTION_HOOK_REFUSED) or (
        method == "logn" and family in LOGN_REFUSED
    )


CASES = [
    (f, m)
    for f in FAMILIES
    for m in METHODS.names()
    if METHODS.get(m).encoding in ("any", "rope" if f in ROPE_MODELS else "alibi") and not refused(f, m)
]


@pytest.mark.parametrize("family, method", CASES)
def test_a_trial_from_the_shared_cache_equals_a_full_prefill(family, method, tmp_path, monkeypatch):
    monkeypatch.setattr(SharedPrefix, "MIN_PART", 3)  # the rest of a prompt in parts, as at real lengths
    model = (
        FAMILIES[family](max_pos=L)
        if family in ROPE_MODELS and not family.startswith("baichuan")
        else FAMILIES[family]()
    )
    call = parse_call(method).with_defaults(method_params(method, model, folder=tmp_path))
    ctx = fake_ctx(model)
    with patched(model, call, trained_len=L, target_len=64):
        _, probe = next_token_logits(model, torch.tensor([prompts()[0]]))
        if not croppable(probe):  # the fallback: each trial prefilled whole
            assert family in SLIDING | REMOTE, f"{family}'s cache cannot be cut back"
            return
        assert family not in SLIDING | REMOTE
        shared, differs = SharedPrefix(), False
        for prompt in prompts():
            got, _ = shared.prefill(ctx, prompt)
            want, _ = next_token_logits(model, torch.tensor([prompt]))
            if METHODS.get(method).static:
                torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
            else:  # dynamic methods pick frequencies from the sequence: why they never share
                differs |= not torch.allclose(got, want, rtol=0, atol=1e-6)  # DCA: 0.05 ln(n/L) changes little
        assert shared.reused > 0
        if not METHODS.get(method).static:
            assert differs
            return
        if family not in ("llama", "qwen3", "bloom", "mpt"):  # the answers on a few layouts (time)
            return
        # the greedy answers too, with the answer tokens carried in the cache between trials
        shared = SharedPrefix()
        for prompt in prompts():
            assert generate(ctx, prompt, 6, lambda text: False, shared) == generate(ctx, prompt, 6, lambda text: False)


def test_a_hook_finds_the_cache_under_every_name_transformers_has_given_it():
    """5.24 renamed ``past_key_values`` to ``cache``; 4.x attention took ``past_key_value``: a
    hook (BLOOM's mask, two-region attention) that misses it works on an empty cache, silently."""
    from transformers import DynamicCache

    cache, other = DynamicCache(), torch.zeros(1, 3)
    for name in ("cache", "past_key_values", "past_key_value", "a_future_name"):
        assert cache_in({"position_ids": other, name: cache}) is cache, name
    assert cache_in({"cache": None, "past_key_values": cache}) is cache
    legacy = ((torch.zeros(1, 1, 2, 4), torch.zeros(1, 1, 2, 4)),)  # a tuple cache (remote code): by name only
    assert cache_in({"position_ids": other, "past_key_values": legacy}) is legacy
    assert cache_in({"position_ids": other, "use_cache": True}) is None


def test_decoding_passes_and_reads_the_cache_under_the_model_s_own_name():
    class New(torch.nn.Module):  # transformers 5.24+
        def forward(self, input_ids, cache=None, use_cache=None):
            pass

    class Old(torch.nn.Module):  # 4.57 to 5.23, and remote code
        def forward(self, input_ids, past_key_values=None, use_cache=None):
            pass

    assert (cache_arg(New()), cache_arg(Old())) == ("cache", "past_key_values")

    class NewOutput:  # 5.24+: reading the old name warns in every run, so it is never read
        cache = None

        @property
        def past_key_values(self):
            raise AssertionError("the deprecated name was read")

    cache = object()
    assert cache_out(NewOutput()) is None
    assert cache_out(SimpleNamespace(cache=cache)) is cache
    assert cache_out(SimpleNamespace(past_key_values=cache)) is cache
    assert cache_out(SimpleNamespace(logits=None)) is None


def test_how_far_trials_share_follows_the_method_and_the_checkpoint(tiny_model_dir):
    from evalkit.config import RunConfig
    from evalkit.loading import load_model
    from evalkit.plan import reuse_mode
    from evalkit.sweep import RunContext

    loaded = load_model(str(tiny_model_dir), device="cpu", dtype="float32")

    def mode(method, **kw):
        cfg = RunConfig(model=str(tiny_model_dir), methods=(method,), lengths=(300,), tasks=("passkey",), **kw)
        return reuse_mode(cfg, cfg.calls[0], RunContext(cfg, loaded))

    assert mode("none") == mode("logn") == mode("self-extend") == mode("pi:scale=2") == "lengths"
    assert mode("pi") == mode("ntk") == mode("yarn") == "length"  # the factor follows the length
    assert mode("dynamic-ntk") == mode("dynamic-yarn") == ""
    assert mode("none", prefix=False) == ""  # --no-prefix


def test_a_sweep_shares_prefixes_and_records_it_with_the_same_answers(tiny_model_dir, tmp_path):
    runner = CliRunner()
    sweep = [
        "run",
        "--model",
        str(tiny_model_dir),
        "--len",
        "512,640",
        "--method",
        "none,pi,dynamic-ntk",
        "--task",
        "passkey,niah,lines",
        "--depths",
        "0,0.5,1",
        "--samples",
        "2",
    ]
    for out, extra in (("shared", []), ("whole", ["--no-prefix"])):
        result = runner.invoke(app, sweep + ["--out", str(tmp_path / out)] + extra)
        assert result.exit_code == 0, result.output
    key = lambda r: (r["method"], r["task"], r["length"], r["depth"], r["sample"])  # noqa: E731
    shared = {key(r): r for r in read_rows(tmp_path / "shared" / "results.csv")}
    whole = {key(r): r for r in read_rows(tmp_path / "whole" / "results.csv")}
    assert shared.keys() == whole.keys() and len(shared) == 3 * 3 * 2 * 3 * 2
    for k, r in shared.items():
        assert (r["answer"], r["correct"], r["tokens"]) == (whole[k]["answer"], whole[k]["correct"], whole[k]["tokens"])
        assert whole[k]["reused"] == "0"
    reused = {m: sum(int(r["reused"]) for k, r in shared.items() if k[0] == m) for m in ("none", "pi", "dynamic-ntk")}
    assert reused["none"] > reused["pi"] > 0 == reused["dynamic-ntk"]  # across lengths > within a length > never
    for k, r in shared.items():
        assert int(r["reused"]) < int(r["tokens"])  # at least the last prompt token computed


def test_each_trial_of_a_shared_group_is_committed_as_it_ends(tiny_model_dir, tmp_path, monkeypatch):
    """A group of shared trials writes each row when its trial ends: memory running out at the
    third trial keeps the two answered ones and marks only the rest oom."""
    import evalkit.tasks.retrieval as retrieval

    real, calls = retrieval.generate, []

    def third_runs_out(*args, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise MemoryError("simulated")
        return real(*args, **kw)

    monkeypatch.setattr(retrieval, "generate", third_runs_out)
    result = CliRunner().invoke(
        app,
        [
            "run",
            "--model",
            str(tiny_model_dir),
            "--len",
            "512,640",
            "--method",
            "none",
            "--task",
            "passkey",
            "--depths",
            "0,1",
            "--samples",
            "2",
            "--out",
            str(tmp_path / "r"),
        ],
    )
    assert result.exit_code == 0, result.output
    rows = read_rows(tmp_path / "r" / "results.csv")
    by_depth = {d: sorted(r["status"] for r in rows if r["depth"] == d) for d in ("0", "1")}
    assert by_depth["0"] == ["ok", "ok", "oom", "oom"]  # one group: 2 answered and kept, the rest out of memory
    assert by_depth["1"] == ["ok"] * 4  # a group of the same longest length: measured (only longer ones skip)
