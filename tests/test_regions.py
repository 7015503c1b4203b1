"""DCA and STRING against full-matrix references written from the authors' code, and the region
mechanism's kernels against each other and against the eager two-region reference.

The references build every (query, key) score of each region in full (float64), stack the
regions' scores side by side (a key in two regions counts twice, as the authors' LSE merge of
two flash calls counts it) and take one softmax: no blocks, no LSE, no kernel of evalkit's."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import ids, logits, tiny_llama, tiny_qwen3

from evalkit.errors import EvalkitError
from evalkit.patches import patched

L = 16  # the trained length the tests give


def _rope(x, pos, inv, factor=1.0):
    freqs = pos.double()[:, None] * inv.double()[None]
    emb = torch.cat((freqs, freqs), -1)
    half = x.shape[-1] // 2
    rotated = x.double() * emb.cos() + torch.cat((-x[..., half:], x[..., :half]), -1).double() * emb.sin()
    return rotated * factor


def dca_rules(t, chunk_size, local_window):
    """ChunkLlama (chunkllama_attn_replace.py): keys at j mod c; the query at i mod c in its own
    chunk, at min(i mod c + c, chunk_size) in the previous one, at min(2c - 1, chunk_size) in older ones."""
    c = chunk_size - local_window
    i, j = torch.arange(t)[:, None], torch.arange(t)[None, :]
    ci, cj = i // c, j // c
    q_at = torch.arange(t) % c
    return [
        ((ci == cj) & (j <= i), q_at, torch.arange(t) % c),
        (cj == ci - 1, torch.clamp(q_at + c, max=chunk_size), torch.arange(t) % c),
        (cj <= ci - 2, torch.full((t,), min(2 * c - 1, chunk_size)), torch.arange(t) % c),
    ]


def string_rules(t, shift, window):
    """STRING (string_for_llama.py): distance 0..S with plain positions (flash window [S, 0]); distance
    >= S with the query moved to i - S + W (the shifted causal triangle)."""
    i, j = torch.arange(t)[:, None], torch.arange(t)[None, :]
    pos = torch.arange(t)
    return [((i - j >= 0) & (i - j <= shift), pos, pos), (i - j >= shift, pos - shift + window, pos)]


def reference_forward(attn, rules, temperature=1.0):
    def forward(hidden_states, position_embeddings=None, attention_mask=None, **kwargs):
        b, t, _ = hidden_states.shape
        shape = (b, t, -1, attn.head_dim)
        q, k = attn.q_proj(hidden_states).view(shape), attn.k_proj(hidden_states).view(shape)
        if hasattr(attn, "q_norm"):
            q, k = attn.q_norm(q), attn.k_norm(k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)
        v = attn.v_proj(hidden_states).view(shape).transpose(1, 2)
        rep = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
        inv = 1.0 / (1e4 ** (torch.arange(0, attn.head_dim, 2).float() / attn.head_dim))
        blocks = []
        for member, q_at, k_at in rules:
            s = _rope(q, q_at, inv, temperature) @ _rope(k, k_at, inv, temperature).transpose(2, 3) * attn.scaling
            blocks.append(s.masked_fill(~member, -math.inf))
        probs = torch.softmax(torch.cat(blocks, -1), -1)  # (B, H, T, regions × T)
        out = sum(probs[..., r * t : (r + 1) * t] for r in range(len(rules))) @ v.double()
        return attn.o_proj(out.float().transpose(1, 2).reshape(b, t, -1)), None

    return forward


def lambda_rules(t, local, sinks, limit):
    """LM-Infinite (lambda_attention.py, llama.py): distance below the local branch as is; the first
    ``sinks`` keys beyond it unrotated ("stationary") against the query rotated at the limit distance."""
    i, j = torch.arange(t)[:, None], torch.arange(t)[None, :]
    pos = torch.arange(t)
    return [
        ((i - j >= 0) & (i - j < local), pos, pos),
        ((i - j >= local) & (j < sinks), torch.full((t,), limit), 0 * pos),
    ]


def streaming_rules(t, start, recent):
    """StreamingLLM's cache (kv_cache.py) read per query: the latest recent + 1 tokens as they are; the
    first ``start`` beyond them with the query at its cache position min(i, start + recent)."""
    i, j = torch.arange(t)[:, None], torch.arange(t)[None, :]
    pos = torch.arange(t)
    return [
        ((i - j >= 0) & (i - j <= recent), pos, pos),
        ((i - j > recent) & (j < start), pos.clamp(max=start + recent), pos),
    ]


CASES = {  # case: method, params, rules for T tokens, temperature for T tokens
    "dca": ("dca", dict(chunk_size=12, local_window=2), lambda t: dca_rules(t, 12, 2), lambda t: 0.05 * math.log(t / L) + 1),
    "dca-long-window": ("dca", dict(chunk_size=9, local_window=6), lambda t: dca_rules(t, 9, 6), lambda t: 0.05 * math.log(t / L) + 1),
    "string": ("string", dict(shift=10, window=3), lambda t: string_rules(t, 10, 3), lambda t: 0.1 * math.log(2) + 1),
    "string-zero-window": ("string", dict(shift=5, window=0, attention_factor=1.0), lambda t: string_rules(t, 5, 0), lambda t: 1.0),
    "lm-infinite": ("lm-infinite", dict(global_branch=3), lambda t: lambda_rules(t, L, 3, L), lambda t: 1.0),
    "lm-infinite-near-limit": ("lm-infinite", dict(local_branch=9, global_branch=4, limit_distance=5), lambda t: lambda_rules(t, 9, 4, 5), lambda t: 1.0),
    "streaming-llm": ("streaming-llm", dict(start_size=2, recent_size=6), lambda t: streaming_rules(t, 2, 6), lambda t: 1.0),
}  # fmt: skip


@pytest.mark.parametrize("block", [1024, 8, 5])
@pytest.mark.parametrize(
    "build", [tiny_llama, tiny_qwen3, lambda: tiny_llama(kv_heads=2)], ids=["llama", "qwen3", "gqa"]
)
@pytest.mark.parametrize("case", list(CASES))
def test_region_methods_equal_the_full_matrix_reference(case, build, block, monkeypatch):
    """Past the trained length (40 > 16 tokens, several chunks, windows and sinks): the same logits,
    with query blocks that cut chunks and bands anywhere (block 5, 8) or not at all."""
    from evalkit.patches import regions

    monkeypatch.setattr(regions, "BLOCK", block)
    method, params, rules, temperature = CASES[case]
    n = 40
    model, ref = build(), build()
    for layer in ref.model.layers:
        layer.self_attn.forward = reference_forward(layer.self_attn, rules(n), temperature(n))
    x = ids(n)
    with patched(model, method, trained_len=L, **params):
        got = logits(model, x)
    torch.testing.assert_close(got, logits(ref, x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kernel", ["sdpa-cpu", "eager"])
@pytest.mark.parametrize("method", ["self-extend", "rerope", "leaky-rerope"])
def test_two_region_methods_on_the_region_mechanism_equal_the_eager_reference_path(method, kernel, monkeypatch):
    """Self-Extend, ReRoPE and leaky ReRoPE moved onto the regions: the same outputs as the eager
    two-region path (one merged score matrix per block, one softmax), to fp32 rounding."""
    from evalkit.patches import attention, regions

    monkeypatch.setattr(regions, "BLOCK", 7)
    monkeypatch.setattr(regions, "FORCED", [kernel])
    region = {"self-extend": attention.self_extend(6, 3), "rerope": attention.rerope(6),
              "leaky-rerope": attention.leaky_rerope(6, 4.0)}[method]  # fmt: skip
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 4, 50, 16), torch.randn(1, 2, 50, 16), torch.randn(1, 2, 50, 16)
    inv, pos = 1.0 / (1e4 ** (torch.arange(0, 16, 2).float() / 16)), torch.arange(50)
    want = attention.two_region_attention(q, k, v, pos.double(), pos.double(), region, inv, 1.1, 0.25, groups=2)
    got = regions.region_attention(q, k, v, pos, region.layout().regions, inv, 1.1, 0.25, groups=2)
    torch.testing.assert_close(got, want, rtol=2e-5, atol=2e-5)


def test_the_fused_cpu_kernel_equals_the_eager_one_with_masks_and_rows_that_see_nothing():
    from evalkit.patches import regions

    torch.manual_seed(1)
    q, k, v = torch.randn(1, 3, 9, 8), torch.randn(1, 3, 20, 8), torch.randn(1, 3, 20, 8)
    mask = torch.rand(9, 20) > 0.5
    mask[2] = False  # this row sees no key of this call
    out_e, lse_e = regions.eager(q, k, v, mask, 0.3)
    out_f, lse_f = regions.sdpa_cpu(q, k, v, mask, 0.3)
    assert torch.isinf(lse_e[..., 2]).all() and torch.isinf(lse_f[..., 2]).all()
    torch.testing.assert_close(out_f, out_e, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(lse_f, lse_e, rtol=1e-5, atol=1e-5)
    # merged with a call the row does see, the row gets exactly that call's output
    out2, lse2 = regions.eager(q, k, v, None, 0.3)
    merged, _ = regions.merge(out_f, lse_f, out2, lse2)
    torch.testing.assert_close(merged[..., 2, :], out2[..., 2, :])


@torch.no_grad()
@pytest.mark.parametrize(
    "method, params, n",
    [
        ("string", dict(shift=10, window=3), 30),
        ("dca", dict(chunk_size=12, local_window=2), 14),
        ("lm-infinite", dict(local_branch=8, global_branch=3, limit_distance=8), 30),
        ("streaming-llm", dict(start_size=2, recent_size=6), 30),
    ],
)
def test_cached_decoding_equals_full_forwards(method, params, n):
    """Keys enter the cache unrotated; every step rotates them for its own query (DCA within the
    trained length here, where its temperature is 1 at every step; STRING past its shift; the sink methods past their windows)."""
    from evalkit.forward import next_token_logits

    model = tiny_llama()
    prompt, extra = ids(n), ids(4, seed=5)
    trained = L
    with patched(model, method, trained_len=trained, **params):
        last, cache = next_token_logits(model, prompt)
        steps = [last]
        for t in range(extra.shape[1] - 1):
            last, cache = next_token_logits(model, extra[:, t : t + 1], cache)
            steps.append(last)
        full = logits(model, torch.cat([prompt, extra], 1))
    torch.testing.assert_close(torch.stack(steps, 1), full[:, n - 1 : -1], rtol=1e-4, atol=1e-4)


def test_defaults_follow_the_reference_code():
    from evalkit.patches import parse_call

    dca = parse_call("dca").resolve(8192, 16384)
    assert dca == {"chunk_size": 6144, "local_window": 1024}  # 3L/4, L/8 (replace_with_chunkllama)
    string = parse_call("string").resolve(131072, 131072)  # the README's values; replace_with_string's factor
    assert string == {"shift": 43253, "window": 128, "attention_factor": pytest.approx(1.0693147)}
    assert parse_call("string").length_independent and not parse_call("dca").length_independent
    lm = parse_call("lm-infinite").resolve(4096, 16384)  # README: local_branch 4096, limit_distance 4096, 10 sinks
    assert lm == {"local_branch": 4096, "global_branch": 10, "limit_distance": 4096}
    assert parse_call("streaming-llm").resolve(8192, 16384) == {"start_size": 4, "recent_size": 2000}


@pytest.mark.parametrize(
    "text, needle",
    [
        ("dca:chunk_size=16", "chunk_size = 16 must be below the trained length 16"),
        ("dca:chunk_size=8,local_window=8", "local_window = 8 must be smaller than chunk_size = 8"),
        ("string:shift=4,window=5", "window = 5 must not exceed shift = 4"),
        ("string:shift=20", "shift = 20 must be below the trained length 16"),
        ("lm-infinite:local_branch=8,limit_distance=9", "limit_distance = 9 must not exceed local_branch = 8"),
    ],
)
def test_bad_parameters_are_one_line_naming_the_method(text, needle):
    model = tiny_llama()
    with pytest.raises(EvalkitError, match=needle) as e:
        with patched(model, text, trained_len=L):
            pass
    assert text.split(":")[0] in str(e.value)


@pytest.mark.parametrize(
    "family, reason",
    [("gemma2", "caps its logits or attends within a sliding window"), ("phi3", "separate q/k/v/o projections"),
     ("falcon", "separate q/k/v/o projections")],
)  # fmt: skip
@pytest.mark.parametrize("method", ["dca", "string:shift=10,window=3", "lm-infinite", "streaming-llm"])
def test_families_the_hook_cannot_reproduce_are_refused_naming_method_and_family(family, reason, method):
    from conftest import ROPE_MODELS

    model = ROPE_MODELS[family]()
    with pytest.raises(EvalkitError, match=reason) as e:
        with patched(model, method, trained_len=L):
            pass
    assert str(e.value).startswith(f"{method.split(':')[0]} on {model.config.model_type} (")


def test_string_with_its_defaults_is_labelled_plain_string():
    """Rows write the cos/sin factor 0.1 ln 2 + 1 to 8 digits; read back, it is still the default."""
    from evalkit.compare import row_method_label

    assert row_method_label({"method": "string", "params": "window=128,attention_factor=1.0693147"}) == "string"
    assert row_method_label({"method": "string", "params": "window=64,attention_factor=1.2"}) == (
        "string window=64 attention_factor=1.2"
    )
