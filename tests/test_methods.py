"""Every RoPE method on every transformers family equals an independent reference:
transformers' own rope types configured on that family (the oracle table below), a
hand-set frequency buffer, or a few lines of reference attention written here.
Also: checkpoints that ship a scaling (llama3, yarn, Phi-3 longrope), --rope-reset,
and the two-region attention methods (Self-Extend, ReRoPE) through cached decoding."""

import json
import math

import pytest
import torch
import transformers
from conftest import HF5, ROPE_MODELS, ids, llama_config, logits, method_params, tiny_llama, tiny_phi3, tiny_qwen3

from evalkit.errors import EvalkitError
from evalkit.forward import next_token_logits
from evalkit.patches import METHODS, methods_for, parse_call, patched, split_method_list

L, S, N = 16, 4.0, 40  # trained length, scale, input length (N > L: every method acts)
FACTORS = [1.0, 1.5, 2.0, 3.0, 4.0, 4.0, 4.0, 4.0]  # longrope: one per frequency of a 16-dim rotary


def _factors(n):
    return (FACTORS * 2)[:n]


# method -> (its parameters, the transformers rope type that computes the same frequencies)
ORACLES = {
    "pi": ({"scale": S}, lambda d: {"rope_type": "linear", "factor": S}),
    "yarn": ({"scale": S}, lambda d: {"rope_type": "yarn", "factor": S, "original_max_position_embeddings": L}),
    "ntk-by-parts": (
        {"scale": S},
        lambda d: {"rope_type": "yarn", "factor": S, "original_max_position_embeddings": L, "attention_factor": 1.0},
    ),
    "llama3": (
        {"scale": S},
        lambda d: {
            "rope_type": "llama3",
            "factor": S,
            "original_max_position_embeddings": L,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
        },
    ),
    "longrope": (
        None,
        lambda d: {
            "rope_type": "longrope",
            "long_factor": _factors(d // 2),
            "factor": S,
            "short_factor": _factors(d // 2),
            "original_max_position_embeddings": L,
        },
    ),
    "dynamic-ntk": ({"alpha": 2.0}, lambda d: {"rope_type": "dynamic", "factor": 2.0}),
    "dynamic-yarn": ({}, lambda d: {"rope_type": "yarn", "factor": N / L, "original_max_position_embeddings": L}),
}
# not a transformers rope type: checked against hand-written maths or reference attention below
OTHER_REFERENCES = {
    "none",
    "ntk",
    "logn",
    "self-extend",
    "rerope",
    "leaky-rerope",
    "dca",
    "string",
    "lm-infinite",
    "streaming-llm",
}  # dca, string, lm-infinite, streaming-llm: test_regions.py
HF_FAMILIES = [f for f in ROPE_MODELS if not f.startswith("baichuan")]


def test_every_rope_method_has_an_independent_reference():
    assert set(methods_for("rope")) == set(ORACLES) | OTHER_REFERENCES


def _rotary_dim(model):
    from conftest import rotary_half

    return 2 * rotary_half(model)


@pytest.mark.parametrize("method", list(ORACLES))
@pytest.mark.parametrize("family", HF_FAMILIES)
def test_method_equals_transformers_rope_type_on_every_family(family, method, tmp_path):
    build = ROPE_MODELS[family]
    model = build(max_pos=L)
    params, rope = ORACLES[method]
    d = _rotary_dim(model)
    if params is None:
        path = tmp_path / "factors.json"
        path.write_text(json.dumps(_factors(d // 2)))
        params = {"scale": S, "factors": str(path)}
    extra = {"original_max_position_embeddings": L} if method == "longrope" else {}  # 4.57 reads it here
    max_pos = L if method == "dynamic-ntk" else int(L * S)  # dynamic: L is max_position_embeddings
    try:
        ref = build(max_pos=max_pos, rope=rope(d), **extra)
    except Exception:  # noqa: BLE001 (Phi-3's config takes longrope only: hand-set transformers' frequencies)
        from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

        cfg = llama_config(max_pos=max_pos, rope=rope(d), head_dim=d, **extra)
        inv, factor = ROPE_INIT_FUNCTIONS[rope(d)["rope_type"]](cfg, "cpu", seq_len=N)
        ref = _hand_set(build(max_pos=L), inv, factor)
    ref.load_state_dict(model.state_dict())
    x = ids(N)
    with patched(model, method, trained_len=L, **params):
        got = logits(model, x)
    torch.testing.assert_close(got, logits(ref, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", HF_FAMILIES)
def test_ntk_equals_the_family_built_with_the_changed_base(family):
    build = ROPE_MODELS[family]
    model = build(max_pos=L)
    d = _rotary_dim(model)
    theta = 1e4 * 3.0 ** (d / (d - 2))  # NTK-aware: b·α^(d/(d-2)), d the rotary dim
    extra = {"rotary_emb_base": theta} if family == "gpt-neox" else {}  # its 4.x config's name for the base
    ref = build(max_pos=L, theta=theta, **extra)
    ref.load_state_dict(model.state_dict())
    x = ids(N)
    with patched(model, "ntk", alpha=3.0, trained_len=L):
        torch.testing.assert_close(logits(model, x), logits(ref, x), rtol=1e-5, atol=1e-5)


# --- checkpoints that ship a scaling ---

SHIPPED = {
    "llama3": dict(
        rope={
            "rope_type": "llama3",
            "factor": 8.0,
            "original_max_position_embeddings": 8,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
        },
        max_pos=64,
    ),
    "yarn": dict(rope={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16}, max_pos=32),
}


def _hand_set(model, inv_freq, factor):
    """Make a plain-RoPE model rotate with ``inv_freq`` and ``factor`` (its own rotary, buffers set by hand)."""
    rot = model.model.rotary_emb
    rot.inv_freq = inv_freq.clone()
    rot.original_inv_freq = inv_freq.clone()
    rot.attention_scaling = factor
    return model


@pytest.mark.parametrize("kind", list(SHIPPED))
def test_a_shipped_scaling_as_none_equals_transformers_and_pi_on_top_divides_its_frequencies(kind):
    model = tiny_llama(**SHIPPED[kind])
    rot = model.model.rotary_emb
    shipped_inv, shipped_factor = rot.inv_freq.clone(), float(rot.attention_scaling)
    x = ids(80)
    want = logits(model, x)
    with patched(model, "none") as p:
        assert torch.equal(logits(model, x), want)  # as shipped: not touched at all
        assert p.trained_len == 64  # the length the scaling was made for: max(max_pos, original x factor)
    ext = 64  # PI on top: s = 80 / 64 over the extended length
    with patched(model, "pi", target_len=80) as p:
        assert p.scale == 80 / ext
        got = logits(model, x)
    ref = _hand_set(tiny_llama(max_pos=64), shipped_inv / (80 / ext), shipped_factor)
    ref.load_state_dict(model.state_dict(), strict=False)
    torch.testing.assert_close(got, logits(ref, x), rtol=1e-5, atol=1e-5)


def test_yarn_on_top_of_llama3_multiplies_frequencies_and_attention_factors():
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    model = tiny_llama(**SHIPPED["llama3"])
    shipped_inv = model.model.rotary_emb.inv_freq.clone()
    plain_cfg = llama_config(max_pos=64)
    plain = 1.0 / (1e4 ** (torch.arange(0, 16, 2).float() / 16))
    yarn_cfg = llama_config(
        max_pos=256, rope={"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 64}
    )
    yarn_inv, yarn_factor = ROPE_INIT_FUNCTIONS["yarn"](yarn_cfg, "cpu")
    x = ids(80)
    with patched(model, "yarn", scale=2.0):
        got = logits(model, x)
    ref = _hand_set(transformers.LlamaForCausalLM(plain_cfg).eval(), shipped_inv * (yarn_inv / plain), yarn_factor)
    ref.load_state_dict(model.state_dict(), strict=False)
    torch.testing.assert_close(got, logits(ref, x), rtol=1e-5, atol=1e-5)


def test_ntk_on_top_of_yarn_scales_each_frequency_as_the_base_change_would():
    model = tiny_llama(**SHIPPED["yarn"])
    rot = model.model.rotary_emb
    shipped_inv, factor = rot.inv_freq.clone(), float(rot.attention_scaling)
    i = torch.arange(8, dtype=torch.float64)
    ntk_ratio = (2.0 ** (-2 * i / (16 - 2))).float()  # b^(-2i/d) -> (b·α^(d/(d-2)))^(-2i/d)
    x = ids(80)
    with patched(model, "ntk", alpha=2.0):
        got = logits(model, x)
    ref = _hand_set(tiny_llama(max_pos=64), shipped_inv * ntk_ratio, factor)
    ref.load_state_dict(model.state_dict(), strict=False)
    torch.testing.assert_close(got, logits(ref, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", list(SHIPPED))
def test_rope_reset_equals_the_checkpoint_without_its_scaling(kind):
    model = tiny_llama(**SHIPPED[kind])
    plain = tiny_llama(max_pos=SHIPPED[kind]["max_pos"])
    plain.load_state_dict(model.state_dict())
    x = ids(40)
    with patched(model, "none", rope_reset=True) as p:
        assert p.trained_len == SHIPPED[kind]["rope"]["original_max_position_embeddings"]
        torch.testing.assert_close(logits(model, x), logits(plain, x), rtol=1e-6, atol=1e-6)
    with patched(model, "pi", rope_reset=True, scale=2.0):  # a method then acts on the plain frequencies
        ref = tiny_llama(max_pos=SHIPPED[kind]["max_pos"], rope={"rope_type": "linear", "factor": 2.0})
        ref.load_state_dict(model.state_dict())
        torch.testing.assert_close(logits(model, x), logits(ref, x), rtol=1e-6, atol=1e-6)


PHI3_LONGROPE = {
    "rope_type": "longrope",
    "long_factor": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0],
    "short_factor": [1.0, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6],
    "original_max_position_embeddings": 16,
}


def _phi3_longrope():
    # as Phi-3 configs state it: 4.x wants exactly type / short_factor / long_factor, the length beside them
    rope = (
        PHI3_LONGROPE
        if HF5
        else {
            "type": "longrope",
            "long_factor": PHI3_LONGROPE["long_factor"],
            "short_factor": PHI3_LONGROPE["short_factor"],
        }
    )
    return tiny_phi3(max_pos=64, rope=rope, original_max_position_embeddings=16)


@pytest.mark.parametrize("length", [12, 40])
def test_phi3_longrope_as_none_equals_transformers_and_pi_on_top_uses_the_factors_of_the_length(length):
    model = _phi3_longrope()
    x = ids(length)
    want = logits(model, x)
    with patched(model, "none"):
        assert torch.equal(logits(model, x), want)
    base = 1.0 / (1e4 ** (torch.arange(0, 16, 2).float() / 16))
    factors = PHI3_LONGROPE["long_factor" if length > 16 else "short_factor"]  # as transformers picks them
    attention = math.sqrt(1 + math.log(64 / 16) / math.log(16))
    with patched(model, "pi", scale=2.0):
        got = logits(model, x)
    ref = tiny_phi3(max_pos=64)
    ref.load_state_dict(model.state_dict())
    _hand_set(ref, base / torch.tensor(factors) / 2.0, attention)
    torch.testing.assert_close(got, logits(ref, x), rtol=1e-5, atol=1e-5)


def test_shipped_longrope_makes_none_length_dependent():
    from evalkit.config import RunConfig
    from evalkit.plan import prefix_mode

    cfg = RunConfig(methods=("none",))
    assert not prefix_mode(cfg, cfg.calls[0], _phi3_longrope())
    assert prefix_mode(cfg, cfg.calls[0], tiny_llama(**SHIPPED["llama3"]))
    reset = RunConfig(methods=("none",), rope_reset=True)
    assert prefix_mode(reset, reset.calls[0], _phi3_longrope())


# --- two-region attention: a straightforward reference (full matrices, LongLM's masks) ---


def _reference_attention(attn, near_window, far_q, far_k):
    """Self-Extend / ReRoPE as the reference code computes it (datamllab/LongLM Llama.py,
    bojone/rerope): both score matrices in full, the neighbour mask built as tril minus the
    shifted tril, one softmax. Only prefill (no cache)."""

    def rope(x, pos, inv):
        freqs = pos.double()[:, None] * inv.double()[None]
        emb = torch.cat((freqs, freqs), -1)
        half = x.shape[-1] // 2
        return x * emb.cos().float() + torch.cat((-x[..., half:], x[..., :half]), -1) * emb.sin().float()

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
        pos = torch.arange(t)
        near = rope(q, pos, inv) @ rope(k, pos, inv).transpose(2, 3) * attn.scaling
        far = rope(q, far_q(pos.double()), inv) @ rope(k, far_k(pos.double()), inv).transpose(2, 3) * attn.scaling
        neighbour = torch.tril(torch.ones(t, t))
        if t > near_window:
            neighbour[near_window:, :-near_window] -= torch.tril(torch.ones(t - near_window, t - near_window))
        scores = torch.where(neighbour.bool(), near, far).masked_fill(~torch.tril(torch.ones(t, t)).bool(), -math.inf)
        out = torch.softmax(scores, -1) @ v
        return attn.o_proj(out.transpose(1, 2).reshape(b, t, -1)), None

    return forward


REGIONS = {  # method, params -> (window, far query position, far key position), as in the reference code
    "self-extend": ({"window": 6, "group": 3}, lambda p: torch.floor(p / 3) + 6 - 6 / 3, lambda p: torch.floor(p / 3)),
    "rerope": ({"window": 6}, lambda p: p * 0 + 6, lambda p: p * 0),
    "leaky-rerope": ({"window": 6, "k": 4.0}, lambda p: p / 4 + 6 - 6 / 4, lambda p: p / 4),
}


@pytest.mark.parametrize(
    "build", [tiny_llama, tiny_qwen3, lambda: tiny_llama(kv_heads=2)], ids=["llama", "qwen3", "llama-gqa"]
)  # gqa: 4 query heads share 2 KV heads
@pytest.mark.parametrize("method", list(REGIONS))
def test_two_region_attention_equals_the_reference(method, build, monkeypatch):
    params, far_q, far_k = REGIONS[method]
    model, ref = build(), build()
    x = ids(N)
    for layer in ref.model.layers:
        layer.self_attn.forward = _reference_attention(layer.self_attn, params["window"], far_q, far_k)
    with patched(model, method, trained_len=L, **params):
        got = logits(model, x)
    if METHODS.get(method).logn:  # ReRoPE's recipe scales the queries by logn too (in the reference code)
        factor = torch.clamp(torch.log(torch.arange(1, N + 1).float()) / math.log(L), min=1.0)
        for layer in ref.model.layers:
            target = getattr(layer.self_attn, "q_norm", None) or layer.self_attn.q_proj
            target.register_forward_hook(lambda m, i, o: o * factor.reshape((1, N) + (1,) * (o.dim() - 2)))
    torch.testing.assert_close(got, logits(ref, x), rtol=1e-4, atol=1e-4)


def test_self_extend_with_a_window_past_the_input_is_plain_attention():
    model, x = tiny_llama(), ids(30)
    want = logits(model, x)
    with patched(model, "self-extend", window=64, group=4, trained_len=L):
        torch.testing.assert_close(logits(model, x), want, rtol=1e-5, atol=1e-5)


def _hand_the_cache_over_as(model, name: str) -> None:
    """Each attention layer gets the cache under ``name``, as another transformers line would
    pass it (5.24 renamed ``past_key_values`` to ``cache``; 4.x layers took ``past_key_value``)."""

    def rename(_module, args, kwargs):
        for old in ("cache", "past_key_values", "past_key_value"):
            if old in kwargs:
                kwargs[name] = kwargs.pop(old)
        return args, kwargs

    for layer in model.model.layers:
        layer.self_attn.register_forward_pre_hook(rename, with_kwargs=True)


@torch.no_grad()
@pytest.mark.parametrize("name", [None, "cache", "past_key_values", "past_key_value", "a_future_name"])
@pytest.mark.parametrize("method", list(REGIONS))
def test_two_region_attention_through_cached_decoding_equals_full_forwards(method, name):
    """Keys enter the cache unrotated and each step rotates them afresh: a hook that missed the
    cache (as one reading only ``past_key_values`` does on transformers 5.24) decodes from an
    empty one, at position 0, with no error."""
    params = REGIONS[method][0]
    model = tiny_llama()
    if name is not None:
        _hand_the_cache_over_as(model, name)
    prompt, extra = ids(30), ids(4, seed=5)
    with patched(model, method, trained_len=L, **params):
        last, cache = next_token_logits(model, prompt)
        steps = [last]
        for t in range(extra.shape[1] - 1):
            last, cache = next_token_logits(model, extra[:, t : t + 1], cache)
            steps.append(last)
        assert cache.get_seq_length() == 30 + extra.shape[1] - 1
        full = logits(model, torch.cat([prompt, extra], 1))
    torch.testing.assert_close(torch.stack(steps, 1), full[:, 29:-1], rtol=1e-4, atol=1e-4)


def test_two_region_attention_refuses_positions_that_do_not_end_at_the_last_cached_key():
    """Keys are rotated at 0..n-1 from the cache: positions that say otherwise (left padding, an
    offset) would give another attention, so they stop the forward with one line."""
    model, x = tiny_llama(), ids(20)
    with patched(model, "self-extend", trained_len=L, **REGIONS["self-extend"][0]):
        with pytest.raises(EvalkitError, match=r"LlamaAttention: positions end at 24 but 20 keys are cached") as e:
            model(input_ids=x, position_ids=torch.arange(5, 25)[None])
    assert e.value.hint == "two-region attention needs positions 0..n-1 without padding"


def test_two_region_attention_holds_one_block_of_scores_at_a_time(monkeypatch):
    """The eager reference path: one block of query rows' scores at a time."""
    from evalkit.patches import attention

    seen = []
    real = torch.softmax

    def spy(x, *a, **k):
        seen.append(x.shape)
        return real(x, *a, **k)

    monkeypatch.setattr(attention, "SCORE_BUDGET", 4 * 40 * 8)  # 8 query rows of 40 keys, 4 heads
    monkeypatch.setattr(attention.torch, "softmax", spy)
    q, k, v = torch.randn(1, 4, 40, 16), torch.randn(1, 4, 40, 16), torch.randn(1, 4, 40, 16)
    pos = torch.arange(40, dtype=torch.float64)
    attention.two_region_attention(q, k, v, pos, pos, attention.self_extend(6, 3), torch.ones(8), 1.0, 0.25)
    assert seen and max(s[-2] for s in seen) == 8  # (B, H, rows, keys): never 40 x 40 at once


@pytest.mark.parametrize("method", ["self-extend", "dca", "string"])
def test_region_attention_calls_never_hold_more_than_a_block_by_a_band(monkeypatch, method):
    """Through the hook on a model: every kernel call is at most BLOCK query rows, and a call with
    a mask at most BLOCK × (BLOCK + band) (no L × L matrix, no score block beyond a band)."""
    from evalkit.patches import regions

    seen = []

    def spy(q, k, v, mask, scale):
        seen.append((q.shape[-2], k.shape[-2], None if mask is None else tuple(mask.shape)))
        return regions.eager(q, k, v, mask, scale)

    monkeypatch.setattr(regions, "BLOCK", 8)
    monkeypatch.setitem(regions.KERNELS, "spy", spy)
    monkeypatch.setattr(regions, "FORCED", ["spy"])
    params = {"self-extend": dict(window=6, group=3), "dca": dict(chunk_size=12, local_window=2),
              "string": dict(shift=10, window=3)}[method]  # fmt: skip
    model, x = tiny_llama(), ids(60)
    with patched(model, method, trained_len=16, **params):
        logits(model, x)
    band = {"self-extend": 6, "dca": 10, "string": 11}[method]
    assert seen and max(rows for rows, _, _ in seen) <= 8
    assert all(m[0] * m[1] <= 8 * (8 + band) for _, _, m in seen if m is not None)
    assert max(keys for _, keys, m in seen if m is not None) < 60


# --- method calls: parameters parsed, checked, written back ---


def test_method_texts_split_and_parse():
    assert split_method_list(["ntk:alpha=2,yarn", "self-extend:window=512,group=4"]) == [
        "ntk:alpha=2",
        "yarn",
        "self-extend:window=512,group=4",
    ]
    call = parse_call("self-extend:group=4,window=512")
    assert call.text == "self-extend:window=512,group=4" and call.length_independent
    assert parse_call("ntk").resolve(4096, 16384) == {"alpha": 4.0}
    assert parse_call("ntk:alpha=2").resolve(4096, 16384) == {"alpha": 2.0}


@pytest.mark.parametrize(
    "text, needle",
    [
        ("ntk:alpha=0.5", "ntk:alpha must be between 1 and"),
        ("ntk:beta=2", "has no parameter 'beta'"),
        ("self-extend:window=1.5", "must be a whole number"),
        ("yarn:scale", "is not key=value"),
        ("ntk:alpha=x", "must be a number"),
        ("ntk:alpha=2,alpha=3", "given twice"),
        ("longrope:factors=/no/such.json", "cannot read the factors file"),
        ("longrope", "needs its parameter factors"),
    ],
)
def test_bad_method_parameters_are_one_line(text, needle):
    with pytest.raises(EvalkitError, match=needle):
        parse_call(text).resolve(16, 32)


def test_rope_method_on_a_longrope_file_of_the_wrong_length_is_refused(tmp_path):
    path = tmp_path / "f.json"
    path.write_text(json.dumps({"rope_scaling": {"long_factor": [1.0, 2.0]}}))
    with pytest.raises(EvalkitError, match="longrope needs 8 factors"):
        with patched(tiny_llama(), "longrope", factors=str(path), trained_len=L):
            pass


def test_registry_lists_every_method_with_a_summary_and_source():
    for m in METHODS.values():
        assert m.summary and m.source and m.encoding in ("rope", "alibi", "any")
        kinds = [m.rope, m.slopes, m.attention]
        assert m.name == "none" or sum(k is not None for k in kinds) == 1, m.name


# --- loading options ---


@pytest.fixture
def lora_adapter(tiny_model_dir, tmp_path):
    """A LoRA adapter with non-zero weights for the tiny checkpoint, saved as PEFT saves it."""
    peft = pytest.importorskip("peft")
    base = transformers.AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model = peft.get_peft_model(
        base, peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    model.save_pretrained(tmp_path / "adapter")
    return tmp_path / "adapter", model.eval()


def test_adapter_is_merged_and_equals_peft_and_rows_name_it(lora_adapter, tiny_model_dir, tmp_path):
    from evalkit.loading import load_model
    from evalkit.models import spec_from_config

    folder, peft_model = lora_adapter
    x = ids(20)
    loaded = load_model(
        spec_from_config("tiny", str(tiny_model_dir)), device="cpu", dtype="float32", adapter=str(folder)
    )
    torch.testing.assert_close(logits(loaded.model, x), logits(peft_model, x), rtol=1e-5, atol=1e-5)
    plain = load_model(spec_from_config("tiny", str(tiny_model_dir)), device="cpu", dtype="float32").model
    assert not torch.allclose(logits(plain, x), logits(loaded.model, x))
    from typer.testing import CliRunner

    from evalkit.cli import app
    from evalkit.results import read_rows

    for extra in (["--adapter", str(folder)], []):
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
                "128",
                "--out",
                str(tmp_path / "r"),
                *extra,
            ],
        )
        assert result.exit_code == 0, result.output
    assert [r["adapter"] for r in read_rows(tmp_path / "r" / "results.csv")] == [str(folder.resolve()), ""]
    table = CliRunner().invoke(app, ["compare", str(tmp_path / "r"), "--format", "csv"]).output
    assert {"none", "none +adapter"} <= {line.split(",")[1] for line in table.splitlines() if line.count(",") > 1}


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--quantize", "4bit", "--device", "cpu"], "needs a CUDA GPU"),
        (["--quantize", "3bit"], "use 4bit or 8bit"),
        (["--adapter", "/no/such/adapter"], "no adapter_config.json"),
    ],
)
def test_loading_options_refused_in_one_line(args, needle, tiny_model_dir, tmp_path):
    from typer.testing import CliRunner

    from evalkit.cli import app

    result = CliRunner().invoke(
        app,
        ["run", "--model", str(tiny_model_dir), "--task", "ppl", "--len", "128", "--out", str(tmp_path / "r"), *args],
    )
    assert result.exit_code == 2 and needle in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


# --- trained lengths of checkpoints that ship a scaling (config.json fields as those checkpoints state them) ---


@pytest.mark.parametrize(
    "config, extended, original",
    [
        (
            {
                "model_type": "llama",
                "max_position_embeddings": 131072,  # Llama-3.1-8B
                "rope_scaling": {
                    "factor": 8.0,
                    "low_freq_factor": 1.0,
                    "high_freq_factor": 4.0,
                    "original_max_position_embeddings": 8192,
                    "rope_type": "llama3",
                },
            },
            131072,
            8192,
        ),
        (
            {
                "model_type": "qwen2",
                "max_position_embeddings": 32768,  # Qwen2.5-7B-Instruct with its YaRN note applied
                "rope_scaling": {"factor": 4.0, "original_max_position_embeddings": 32768, "type": "yarn"},
            },
            131072,
            32768,
        ),
        (
            {
                "model_type": "phi3",
                "max_position_embeddings": 131072,
                "original_max_position_embeddings": 4096,
                "rope_scaling": {"type": "longrope", "long_factor": [1.0], "short_factor": [1.0]},
            },
            131072,
            4096,
        ),
        ({"model_type": "llama", "max_position_embeddings": 4096}, 4096, 4096),
    ],
)
def test_trained_length_of_a_shipped_scaling(config, extended, original, tmp_path):
    from evalkit.family import rope_lengths
    from evalkit.models import spec_from_config

    (tmp_path / "config.json").write_text(json.dumps(config))
    assert spec_from_config("m", str(tmp_path)).trained_len == extended
    assert rope_lengths(config, config["max_position_embeddings"]) == (extended, original)


def test_family_table_decides_resolution_and_installation(tmp_path):
    from conftest import ALIBI_MODELS

    from evalkit.family import FAMILIES, family_of
    from evalkit.models import spec_from_config

    tiny = {**ROPE_MODELS, **ALIBI_MODELS}
    for name, build in tiny.items():
        family = family_of(build())
        assert family.name == {
            "baichuan-7b": "baichuan-rope",
            "baichuan2-7b": "baichuan-rope",
            "baichuan-13b": "baichuan-alibi",
            "baichuan2-13b": "baichuan-alibi",
        }.get(name, name)
    assert {family_of(b()).name for b in tiny.values()} == set(FAMILIES.names())  # every family has a tiny model
    for model_type, alibi, want in [
        ("falcon", True, "alibi"),
        ("falcon", False, "rope"),
        ("qwen3", None, "rope"),
        ("gpt_neox", None, "rope"),
    ]:
        (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type, "alibi": alibi}))
        assert spec_from_config("m", str(tmp_path)).encoding == want
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "cohere"}))
    with pytest.raises(EvalkitError, match="model type 'cohere' is not supported"):
        spec_from_config("m", str(tmp_path))


@pytest.mark.parametrize("heads", [4, 6])
def test_falcon_alibi_patch_equals_hand_set_slopes(heads, monkeypatch):
    import sys

    from conftest import tiny_falcon_alibi

    model, x = tiny_falcon_alibi(heads), ids(30)
    module = sys.modules[type(model.transformer).__module__]
    original = module.build_alibi_tensor
    with patched(model, "alibi-pi", scale=4.0, trained_len=8):
        got = logits(model, x)
    assert module.build_alibi_tensor is original

    def quarter(attention_mask, num_heads, dtype):  # Falcon's own tensor at a quarter of each slope
        unit = original(attention_mask, num_heads, torch.float32)
        return (unit.float() / 4).to(dtype)

    monkeypatch.setattr(module, "build_alibi_tensor", quarter)
    # Falcon multiplies slopes and positions in bf16: dividing its product by 4 is exact in binary
    torch.testing.assert_close(got, logits(model, x), rtol=1e-5, atol=1e-5)


# --- through the CLI: parameters in rows, resume keys and labels; --rope-reset ---


def _cli(*args):
    from typer.testing import CliRunner

    from evalkit.cli import app

    return CliRunner().invoke(app, list(map(str, args)))


def test_method_parameters_reach_rows_resume_and_labels(tiny_model_dir, tmp_path):
    from evalkit.results import read_rows

    out = tmp_path / "r"
    args = (
        "run",
        "--model",
        tiny_model_dir,
        "--task",
        "ppl",
        "--len",
        "512",
        "--out",
        out,
        "--method",
        "ntk:alpha=2,ntk,self-extend:window=64,group=4,self-extend",
    )
    first = _cli(*args)
    assert first.exit_code == 0, first.output
    rows = read_rows(out / "results.csv")
    assert [(r["method"], r["params"], r["alpha"]) for r in rows] == [
        ("ntk", "alpha=2", "2"),
        ("ntk", "", "2"),
        ("self-extend", "window=64,group=4", ""),
        ("self-extend", "window=1024,group=8", ""),
    ]  # alpha derived: 512 / 256
    assert rows[0]["ppl"] == rows[1]["ppl"]  # the same computation at this length, two settings
    again = _cli(*args)
    assert again.exit_code == 0 and "0 row(s) written" in again.output and "4 cell(s) already there" in again.output
    table = _cli("compare", out, "--format", "csv").output
    assert {"ntk alpha=2", "ntk", "self-extend window=64 group=4", "self-extend"} <= {
        line.split(",")[1] for line in table.splitlines()[1:] if line.count(",") > 1
    }
    bad = _cli(
        "run",
        "--model",
        tiny_model_dir,
        "--task",
        "ppl",
        "--len",
        "512",
        "--out",
        tmp_path / "b",
        "--method",
        "ntk",
        "--param",
        "windw=3",
    )
    assert bad.exit_code == 2 and "--param windw: no method has such a parameter" in bad.output


def test_rope_reset_through_the_cli(tiny_model_dir, tmp_path):
    import shutil

    from evalkit.results import read_rows

    scaled = tmp_path / "scaled"
    shutil.copytree(tiny_model_dir, scaled)
    config = json.loads((scaled / "config.json").read_text())
    rope = {
        "rope_type": "llama3",
        "factor": 2.0,
        "original_max_position_embeddings": 128,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "rope_theta": 10000.0,
    }
    config.update(rope_parameters=rope, rope_scaling=rope, max_position_embeddings=256)
    (scaled / "config.json").write_text(json.dumps(config))
    for extra in ((), ("--rope-reset",)):
        result = _cli(
            "run",
            "--model",
            scaled,
            "--task",
            "ppl",
            "--len",
            "384",
            "--method",
            "none,pi",
            "--out",
            tmp_path / "r",
            *extra,
        )
        assert result.exit_code == 0, result.output
    rows = read_rows(tmp_path / "r" / "results.csv")
    assert [(r["method"], r["rope_scaling"], r["trained_len"], r["scale"]) for r in rows] == [
        ("none", "llama3", "256", ""),
        ("pi", "llama3", "256", "1.5"),
        ("none", "removed:llama3", "128", ""),
        ("pi", "removed:llama3", "128", "3"),
    ]
    assert len({r["ppl"] for r in rows}) == 4
    labels = {
        line.split(",")[1]
        for line in _cli("compare", tmp_path / "r", "--format", "csv").output.splitlines()
        if line.count(",") > 1
    }
    assert {"none L=256", "pi L=256", "none rope-reset L=128", "pi rope-reset L=128"} <= labels  # L differs too


@pytest.mark.parametrize("method", methods_for("rope"))
def test_length_independent_methods_give_a_prefix_the_same_outputs(method, tmp_path):
    """What prefix mode relies on: for every method that says it is length-independent (with its
    parameters given), the outputs at the first n positions do not depend on what follows."""
    model = tiny_llama()
    params = method_params(method, model, folder=tmp_path)
    call = parse_call(method).with_defaults(params)
    x = ids(48)
    with patched(model, call, trained_len=L):
        whole, prefix = logits(model, x), logits(model, x[:, :30])
    if call.length_independent:
        torch.testing.assert_close(prefix, whole[:, :30], rtol=1e-5, atol=1e-5)
    else:  # the dynamic methods choose their frequencies from the length: a prefix differs
        assert not torch.allclose(prefix, whole[:, :30], atol=1e-5)


@pytest.mark.parametrize(
    "family, shape",
    [("qwen3", lambda n: (1, n, 1, 1)), ("gemma3", lambda n: (1, 1, n, 1)), ("llama", lambda n: (1, n, 1))],
)
def test_logn_scales_the_queries_after_their_norm(family, shape):
    """Qwen3 normalises per head before transposing, Gemma 3 after: a scale on q_proj would be
    normalised away, so logn must act on the norm's output, with the tokens where each model has them."""
    model, ref = ROPE_MODELS[family](), ROPE_MODELS[family]()
    x = ids(N)
    factor = torch.clamp(torch.log(torch.arange(1, N + 1).float()) / math.log(L), min=1.0)  # max(1, ln n / ln L)
    for layer in ref.model.layers:
        target = getattr(layer.self_attn, "q_norm", None) or layer.self_attn.q_proj
        target.register_forward_hook(lambda m, i, o: o * factor.reshape(shape(N)))
    with patched(model, "logn", trained_len=L):
        got = logits(model, x)
    torch.testing.assert_close(got, logits(ref, x), rtol=1e-5, atol=1e-5)


# --- identity and labels (found in review) ---


def _strip_to_legacy(path, version="0.2.0"):
    """Rewrite a results file as evalkit 0.2 wrote it: no params / rope_scaling / adapter / quantize."""
    import csv

    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    new = ("params", "rope_scaling", "adapter", "quantize")
    header = [c for c in rows[0] if c not in new]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=header, extrasaction="ignore")
        w.writeheader()
        w.writerows([dict(r, evalkit_version=version) for r in rows])


def test_rows_of_evalkit_02_resume_under_either_reading_and_keep_their_label(tiny_model_dir, tmp_path):
    out = tmp_path / "r"
    run = ("run", "--model", tiny_model_dir, "--task", "ppl", "--out", out)
    assert _cli(*run, "--method", "ntk", "--alpha", "2", "--len", "512").exit_code == 0
    _strip_to_legacy(out / "results.csv")
    for given in (("--alpha", "2"), ()):  # given, or derived (512 / 256 = 2): the same cell either way
        again = _cli(*run, "--method", "ntk", *given, "--len", "512")
        assert again.exit_code == 0 and "0 row(s) written" in again.output, again.output
    assert _cli(*run, "--method", "ntk", "--len", "1024").exit_code == 0  # derived alpha 4: a new setting
    table = _cli("compare", out, "--format", "csv").output
    labels = {line.split(",")[1] for line in table.splitlines() if line.count(",") > 1}
    assert {"ntk alpha=2", "ntk"} <= labels  # the old given factor is never pooled with a derived one


def test_every_identity_setting_is_in_the_label():
    from evalkit.compare import row_method_label
    from evalkit.results import row_key

    row = dict(model="m", method="none", task="ppl", length="8", sample="0", evalkit_version="0.3.0")
    assert row_method_label(dict(row, adapter="/x/my-lora")) == "none +my-lora"
    assert row_method_label(dict(row, quantize="4bit")) == "none 4bit"
    assert row_key(dict(row, quantize="4bit")) != row_key(row)
    # the shipped type follows from the checkpoint: 0.2's empty column is the same cell; a reset is not
    assert row_key(dict(row, rope_scaling="")) == row_key(dict(row, rope_scaling="llama3"))
    assert row_key(dict(row, rope_scaling="removed:llama3")) != row_key(row)


def test_two_factor_files_of_one_name_stay_apart(tmp_path):
    from evalkit.compare import row_method_label
    from evalkit.results import row_key

    rows = []
    for folder, value in (("a", 1.0), ("b", 4.0)):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "factors.json").write_text(json.dumps([value] * 8))
        rows.append(
            dict(
                model="m",
                method="longrope",
                task="ppl",
                length="8",
                sample="0",
                params=f"factors={tmp_path / folder / 'factors.json'}",
            )
        )
    assert row_key(rows[0]) != row_key(rows[1])
    assert row_method_label(rows[0]) != row_method_label(rows[1])
    moved = dict(rows[0], params=f"factors={tmp_path / 'c.json'}")
    (tmp_path / "c.json").write_text(json.dumps([1.0] * 8))  # same content elsewhere: the same cell
    assert row_key(moved) == row_key(rows[0])


def test_a_huge_integer_parameter_is_one_line():
    with pytest.raises(EvalkitError, match="must be an integer"):
        parse_call("self-extend:window=1.0e400")


def test_python_api_accepts_what_evalkit_02_accepted():
    model = tiny_llama()
    with patched(model, "pi", scale=None, alpha=None, trained_len=L, target_len=32) as p:
        assert p.scale == 2.0
    with patched(model, "none", scale=2, trained_len=L) as p:
        assert p.scale is None
    with patched(model, "ntk", scale=2, trained_len=L) as p:
        assert p.alpha == 2 and p.scale is None  # alpha defaults to the scale


def test_a_parameter_value_may_hold_a_colon():
    assert split_method_list(["longrope:scale=2,factors=/x/f:8.json,yarn"]) == [
        "longrope:scale=2,factors=/x/f:8.json",
        "yarn",
    ]


@pytest.mark.parametrize(
    "text, needle",
    [
        ("yarn:beta_fast=0.5,beta_slow=2", "beta_slow must be below beta_fast"),
        ("llama3:low_freq_factor=4,high_freq_factor=1", "low_freq_factor must be below"),
        ("self-extend:window=4,group=8", "group must not exceed window"),
    ],
)
def test_contradictory_parameters_are_refused(text, needle):
    with pytest.raises(EvalkitError, match=needle):
        parse_call(text).resolve(16, 32)


def test_a_factor_given_twice_or_unused_is_said(tiny_model_dir, tmp_path):
    twice = _cli(
        "run",
        "--model",
        tiny_model_dir,
        "--task",
        "ppl",
        "--len",
        "512",
        "--out",
        tmp_path / "a",
        "--method",
        "ntk",
        "--alpha",
        "3",
        "--param",
        "alpha=2",
    )
    assert twice.exit_code == 2 and "--alpha and --param alpha are both given" in twice.output
    unused = _cli(
        "run",
        "--model",
        tiny_model_dir,
        "--task",
        "ppl",
        "--len",
        "512",
        "--out",
        tmp_path / "b",
        "--method",
        "self-extend",
        "--scale",
        "2",
    )
    assert unused.exit_code == 0 and "scale (--param / --scale) is not a parameter of the methods run" in unused.output
