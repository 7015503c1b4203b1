"""Patches applied to tiny models of every family: equal to independent references,
fully undone on exit, refused on the wrong encoding."""

import math
import sys

import pytest
import torch
from conftest import (
    ALIBI_MODELS,
    ATTENTION_HOOK_REFUSED,
    LOGN_REFUSED,
    ROPE_MODELS,
    ids,
    logits,
    method_params,
    tiny_llama,
)

from evalkit.errors import EvalkitError
from evalkit.patches import METHODS, methods_for, patched

ROPE_METHODS = methods_for("rope")
ALIBI_METHODS = methods_for("alibi")


def test_every_method_has_an_encoding_and_summary():
    for name, m in METHODS.items():
        assert m.encoding in ("rope", "alibi", "any") and m.summary, name


def _cases():
    for family, build in ROPE_MODELS.items():
        for method in ROPE_METHODS:
            yield family, build, method
    for family, build in ALIBI_MODELS.items():
        for method in ALIBI_METHODS:
            yield family, build, method


def refused(family: str, method: str) -> bool:
    """A method the family's layout cannot take (see conftest): refused, never applied wrongly."""
    m = METHODS.get(method)
    return (m.attention is not None and family in ATTENTION_HOOK_REFUSED) or (m.logn and family in LOGN_REFUSED)


@pytest.mark.parametrize("family, build, method", [pytest.param(f, b, m, id=f"{f}-{m}") for f, b, m in _cases()])
def test_patch_changes_long_inputs_and_unpatch_restores_bit_identical_logits(family, build, method, tmp_path):
    model = build()
    x = ids(48)
    before = logits(model, x)
    if refused(family, method):
        with pytest.raises(EvalkitError) as error:
            with patched(model, method, trained_len=16, **method_params(method, model, folder=tmp_path)):
                pass
        assert "\n" not in str(error.value)
        assert torch.equal(logits(model, x), before)
        return
    with patched(model, method, trained_len=16, **method_params(method, model, folder=tmp_path)):
        during = logits(model, x)
    after = logits(model, x)
    assert torch.equal(before, after)
    if method != "none":
        assert not torch.allclose(before, during, atol=1e-6), f"{method} had no effect on {family}"


@pytest.mark.parametrize("family", list(ROPE_MODELS) + list(ALIBI_MODELS))
def test_methods_do_not_leak_into_each_other(family):
    build = {**ROPE_MODELS, **ALIBI_MODELS}[family]
    methods = ROPE_METHODS if family in ROPE_MODELS else ALIBI_METHODS
    model, fresh, x = build(), build(), ids(40)
    for method in (m for m in methods if not refused(family, m)):  # one model serves every method, as in a sweep
        params = method_params(method, model, s=2.0)
        with patched(model, method, trained_len=16, **params):
            got = logits(model, x)
        with patched(fresh, method, trained_len=16, **params):
            want = logits(fresh, x)
        torch.testing.assert_close(got, want, rtol=0, atol=0)
        fresh = build()


def _reference_llama(rope):
    """The same weights in a model whose config asks transformers for ``rope``."""
    model = tiny_llama()
    ref = tiny_llama(rope=rope, max_pos=rope.pop("_max_pos", 64))
    ref.load_state_dict(model.state_dict())
    return model, ref


def test_pi_equals_transformers_linear_model():
    model, ref = _reference_llama({"rope_type": "linear", "factor": 4.0})
    x = ids(60)
    with patched(model, "pi", scale=4.0, trained_len=16):
        torch.testing.assert_close(logits(model, x), logits(ref, x), rtol=0, atol=0)


def test_yarn_equals_transformers_yarn_model():
    model, ref = _reference_llama(
        {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16, "_max_pos": 64}
    )
    x = ids(60)
    with patched(model, "yarn", scale=4.0, trained_len=16):
        torch.testing.assert_close(logits(model, x), logits(ref, x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("length", [12, 16, 40, 64])
def test_dynamic_ntk_equals_transformers_dynamic_model_at_each_length(length):
    model = tiny_llama(max_pos=16)
    ref = tiny_llama(max_pos=16, rope={"rope_type": "dynamic", "factor": 2.0})
    ref.load_state_dict(model.state_dict())
    x = ids(length)
    plain = logits(model, x)
    with patched(model, "dynamic-ntk", alpha=2.0, trained_len=16):
        got = logits(model, x)
    torch.testing.assert_close(got, logits(ref, x), rtol=1e-6, atol=1e-6)
    if length <= 16:
        assert torch.equal(got, plain)  # back to the trained frequencies, bit for bit


@torch.no_grad()
def test_dynamic_ntk_decode_with_cache_keeps_the_prefill_frequencies():
    """Cached decoding under dynamic NTK equals a full forward of the whole sequence
    rotated with the base chosen for the prompt (one base per sequence)."""
    model = tiny_llama(max_pos=16)
    prompt, extra = ids(40), ids(3, seed=7)
    with patched(model, "dynamic-ntk", alpha=2.0, trained_len=16):
        out = model(input_ids=prompt, use_cache=True)
        cache, step_logits = out.past_key_values, []
        for t in range(extra.shape[1]):
            out = model(input_ids=extra[:, t : t + 1], past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            step_logits.append(out.logits[:, -1])
    base = 1e4 * (2.0 * 40 / 16 - 1) ** (16 / 14)  # b·(α·l/L − (α−1))^(d/(d−2)): d 16, l 40, L 16, α 2
    fixed = tiny_llama(max_pos=16, theta=base)
    fixed.load_state_dict(model.state_dict())
    full = logits(fixed, torch.cat([prompt, extra], 1))
    torch.testing.assert_close(torch.stack(step_logits, 1), full[:, 40:], rtol=1e-5, atol=1e-5)


class _DigitTokenizer:
    """Enough of a tokenizer for evalkit's greedy decoding: ids as text, no EOS."""

    eos_token_id = None

    @staticmethod
    def decode(tokens, skip_special_tokens=True):
        return " ".join(map(str, tokens))


def _decode_with_evalkit(model, prompt, steps, monkeypatch):
    """evalkit's own greedy decode loop (tasks.retrieval.generate: prefill, then one cached token per
    step); returns the logits of each step and the tokens chosen."""
    import types

    from evalkit import forward
    from evalkit.tasks.retrieval import generate

    seen, real = [], forward.next_token_logits

    def recording(*args, **kwargs):
        out = real(*args, **kwargs)
        seen.append(out[0].float())
        return out

    monkeypatch.setattr(forward, "next_token_logits", recording)
    ctx = types.SimpleNamespace(model=model, tokenizer=_DigitTokenizer(), input_device=torch.device("cpu"))
    answer = generate(ctx, prompt[0].tolist(), steps, stop=lambda text: False)
    return torch.cat(seen[:steps]), [int(t) for t in answer.split()]


def _greedy_by_full_forwards(model, prompt, steps):
    """The same greedy decoding without a cache: a whole forward per token."""
    seq, out = prompt, []
    for _ in range(steps):
        last = logits(model, seq)[:, -1]
        out.append(last)
        seq = torch.cat([seq, last.argmax(-1, keepdim=True)], 1)
    return torch.cat(out), seq[0, prompt.shape[1] :].tolist()


@pytest.mark.parametrize("family", ["llama", "baichuan-7b"])
def test_dynamic_ntk_through_evalkits_decode_loop_keeps_the_base_of_the_prompt(family, monkeypatch):
    """The docs' promise (docs/tasks.md) for dynamic methods and the KV cache, through the loop the retrieval
    tasks use: every decode step equals a full forward of a model rotated with the base chosen for
    the 40-token prompt, b·(α·l/L − (α−1))^(d/(d−2)) written out here (transformers' own ``dynamic``
    re-bases at each step and differs). Baichuan-7B's remote code keeps a tuple cache and a rotary
    per layer."""
    base = 1e4 * (2.0 * 40 / 16 - 1) ** (16 / 14)  # d 16, l 40, L 16, α 2
    model = ROPE_MODELS[family]()
    if family == "llama":
        fixed = tiny_llama(max_pos=16, theta=base)
        fixed.load_state_dict(model.state_dict())
    else:
        fixed = ROPE_MODELS[family]()
        rotary_class = type(fixed.model.layers[0].self_attn.rotary_emb)
        for layer in fixed.model.layers:
            layer.self_attn.rotary_emb = rotary_class(16, max_position_embeddings=64, base=base)
    prompt = ids(40)
    with patched(model, "dynamic-ntk", alpha=2.0, trained_len=16):
        got, tokens = _decode_with_evalkit(model, prompt, 4, monkeypatch)
    want, want_tokens = _greedy_by_full_forwards(fixed, prompt, 4)
    assert tokens == want_tokens
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_ntk_equals_a_model_built_with_the_changed_base():
    model = tiny_llama()
    ref = tiny_llama(theta=1e4 * 3.0 ** (16 / 14))  # b·α^(d/(d−2)), head dim 16, α 3: by hand
    ref.load_state_dict(model.state_dict())
    x = ids(50)
    with patched(model, "ntk", alpha=3.0, trained_len=16):
        torch.testing.assert_close(logits(model, x), logits(ref, x), rtol=1e-6, atol=1e-6)


def attention_scores(run, monkeypatch) -> list[torch.Tensor]:
    """The pre-softmax scores (B, H, T, S) of every attention call made by ``run()``, in order (layer 0,
    layer 1, ... of each forward): read off the 4-D softmax calls of eager attention, or computed here
    as q·kᵀ·scale + mask for code that calls scaled_dot_product_attention (Baichuan2-7B's)."""
    seen: list = []

    def recording(real):
        def softmax(scores, *args, **kwargs):
            if scores.dim() == 4:
                seen.append(scores.detach().float().clone())
            return real(scores, *args, **kwargs)

        return softmax

    sdpa = torch.nn.functional.scaled_dot_product_attention

    def recording_sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kwargs):
        scores = (q.float() @ k.float().transpose(-2, -1)) * (scale or q.shape[-1] ** -0.5)
        if attn_mask is not None:
            scores = (
                scores.masked_fill(~attn_mask, -torch.inf)
                if attn_mask.dtype == torch.bool
                else scores + attn_mask.float()
            )
        if is_causal:
            scores = scores.masked_fill(torch.ones(scores.shape[-2:], dtype=torch.bool).triu(1), -torch.inf)
        seen.append(scores.detach())
        return sdpa(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(torch.nn.functional, "softmax", recording(torch.nn.functional.softmax))
        m.setattr(torch, "softmax", recording(torch.softmax))
        m.setattr(torch.nn.functional, "scaled_dot_product_attention", recording_sdpa)
        run()
    assert seen, "no attention seen"
    return seen


def logn_reference(positions) -> torch.Tensor:
    """max(1, ln n / ln L) for 0-based positions, n = position + 1, L = 16: written out here."""
    return torch.tensor([max(1.0, math.log(p + 1) / math.log(16)) for p in positions])


def assert_rows_scaled(got: torch.Tensor, plain: torch.Tensor, factor: torch.Tensor):
    """got = plain with query row t times factor[t], wherever a key is visible (masked entries hold
    the dtype's minimum in both)."""
    visible = plain > -1e4
    assert visible.any(-1).all()
    want = plain * factor.view(1, 1, -1, 1)
    torch.testing.assert_close(got[visible], want[visible], rtol=1e-5, atol=1e-6)


LOGN_FAMILIES = [f for f in ROPE_MODELS if f not in LOGN_REFUSED]


@pytest.mark.parametrize("family", LOGN_FAMILIES)
@torch.no_grad()
def test_logn_multiplies_each_query_by_its_factor_and_leaves_keys_alone(family, monkeypatch):
    """Layer 0's scores under logn are the plain scores with row t times max(1, ln(t+1)/ln 16):
    1 inside the trained window, ln(t+1)/ln 16 past it; a squared factor, or a factor on the keys
    (columns), fails. A decode step after a cached prefill gets the factor of its absolute position.
    (Layer 0's inputs do not depend on the patch, so the two runs differ by the patch alone.)"""
    extra = {"attn_logit_softcapping": None} if family == "gemma2" else {}  # tanh capping is not linear
    model = ROPE_MODELS[family](**extra)
    layers = model.config.num_hidden_layers
    prompt, step = ids(40), ids(1, seed=5)

    def prefill_then_step():
        out = model(input_ids=prompt, use_cache=True)
        model(input_ids=step, past_key_values=out.past_key_values, use_cache=True)

    plain = attention_scores(prefill_then_step, monkeypatch)
    with patched(model, "logn", trained_len=16):
        scaled = attention_scores(prefill_then_step, monkeypatch)
    assert len(plain) == len(scaled) == 2 * layers
    assert plain[0].shape[-2:] == (40, 40) and plain[layers].shape[-2] == 1
    assert_rows_scaled(scaled[0], plain[0], logn_reference(range(40)))
    assert_rows_scaled(scaled[layers], plain[layers], logn_reference([40]))
    assert not torch.allclose(scaled[0][..., 16:, :], plain[0][..., 16:, :])  # the factor did act past L


@pytest.mark.parametrize("release", ["baichuan-7b", "baichuan2-7b"])
def test_baichuan_rope_ntk_equals_the_model_with_its_own_rotary_rebuilt_at_the_ntk_base(release):
    """The per-layer Baichuan installer: patched with ntk, the model equals the same weights
    with every layer's RotaryEmbedding (the module's own class) built with b·α^(d/(d-2))."""
    from conftest import tiny_baichuan

    model, ref = tiny_baichuan(release), tiny_baichuan(release)
    rotary_class = type(ref.model.layers[0].self_attn.rotary_emb)
    ntk = 1e4 * 2.0 ** (16 / 14)  # head dim 16, alpha 2: closed form, not evalkit's
    for layer in ref.model.layers:
        layer.self_attn.rotary_emb = rotary_class(16, max_position_embeddings=64, base=ntk)
    x = ids(50)
    with patched(model, "ntk", alpha=2.0, trained_len=16):
        torch.testing.assert_close(logits(model, x), logits(ref, x), rtol=1e-5, atol=1e-5)


# --- ALiBi: patched logits equal those of a model whose slopes were set by hand ---


@pytest.mark.parametrize("heads", [4, 6])
@pytest.mark.parametrize("method", ["ntk-alibi", "alibi-pi"])
def test_bloom_patch_equals_hand_set_slopes(monkeypatch, heads, method):
    from conftest import tiny_bloom

    bloom = sys.modules[type(tiny_bloom().transformer).__module__]
    base = torch.tensor(ALIBI_SLOPES[heads])
    want_slopes = per_slope_ntk_alibi(base.tolist(), 4.0) if method == "ntk-alibi" else base / 4.0
    model, x = tiny_bloom(heads), ids(30)
    with patched(model, method, trained_len=8, **{"ntk-alibi": {"alpha": 4.0}, "alibi-pi": {"scale": 4.0}}[method]):
        got = logits(model, x)
        got_masked = model(input_ids=x, attention_mask=torch.ones_like(x)).logits
    original_build = bloom.build_alibi_tensor

    def hand_set(attention_mask, num_heads, dtype):  # the model's own builder, slopes replaced
        unit = (
            original_build(attention_mask, num_heads, torch.float32)
            / base.repeat(attention_mask.shape[0])[:, None, None]
        )
        return (unit * want_slopes.repeat(attention_mask.shape[0])[:, None, None]).to(dtype)

    monkeypatch.setattr(bloom, "build_alibi_tensor", hand_set)
    if hasattr(bloom, "_get_alibi_slopes"):
        monkeypatch.setattr(bloom, "_get_alibi_slopes", lambda n, device: want_slopes.to(device))
    want = logits(tiny_bloom(heads), x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_masked.float(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("heads", [4, 6])
def test_mpt_patch_equals_hand_set_slopes(heads):
    from conftest import tiny_mpt

    model, ref, x = tiny_mpt(heads), tiny_mpt(heads), ids(30)
    base = torch.tensor(ALIBI_SLOPES[heads])  # MPT's alibi_bias_max 8 gives the same slopes
    want_slopes = per_slope_ntk_alibi(base.tolist(), 3.0)
    with patched(model, "ntk-alibi", trained_len=8, alpha=3.0):
        got = logits(model, x)
    # by hand: the model's own bias with every head rescaled
    own = type(ref.transformer).build_mpt_alibi_tensor
    ref.transformer.build_mpt_alibi_tensor = lambda n, s, m=8, device=None: (
        own(ref.transformer, n, s, m, device) * (want_slopes / base)[:, None, None].to(device)
    )
    torch.testing.assert_close(got, logits(ref, x), rtol=1e-5, atol=1e-5)


def test_mpt_base_slopes_are_read_from_the_model():
    from conftest import tiny_mpt

    from evalkit.patches.alibi_models import _mpt_base

    for heads in (4, 6):
        torch.testing.assert_close(_mpt_base(tiny_mpt(heads)), torch.tensor(ALIBI_SLOPES[heads]))


# ALiBi's slopes by hand (Press et al. 2022, sec. 3): 2^(-8h/n) for n a power of two; otherwise
# those of the power of two below, then every other slope of the one above (BLOOM, MPT, Baichuan)
ALIBI_SLOPES = {
    4: [2**-2, 2**-4, 2**-6, 2**-8],
    5: [2**-2, 2**-4, 2**-6, 2**-8, 2**-1],
    6: [2**-2, 2**-4, 2**-6, 2**-8, 2**-1, 2**-3],
}


def per_slope_ntk_alibi(slopes, a):
    """NTK-ALiBi per slope, written out independently: m / a^((ln m_max - ln m)/(ln m_max - ln m_min))."""
    logs = [math.log(m) for m in slopes]
    hi, lo = max(logs), min(logs)
    return torch.tensor([m / a ** ((hi - lg) / (hi - lo)) for m, lg in zip(slopes, logs)], dtype=torch.float32)


@pytest.mark.parametrize("release", ["baichuan-13b", "baichuan2-13b"])
def test_baichuan_alibi_patch_scales_every_head_once_and_resets_the_mask_cache(release):
    from conftest import tiny_baichuan

    model, ref, x = tiny_baichuan(release), tiny_baichuan(release), ids(30)
    module = sys.modules[type(model).__module__]
    heads = model.config.num_attention_heads  # 5: not a power of two
    logits(model, x)  # fill the cached future_mask with the original slopes
    base = module._get_interleave(heads)
    assert base == ALIBI_SLOPES[heads]
    want_slopes = per_slope_ntk_alibi(base, 4.0)
    original_mask = model.model.future_mask.clone()
    with patched(model, "ntk-alibi", trained_len=8, alpha=4.0):
        got = logits(model, x)
        rebuilt = model.model.future_mask
    # the rebuilt mask is the original with each head's bias rescaled by want/base (once, not twice)
    ratio = (want_slopes / torch.tensor(base))[:, None, None]
    expected_mask = torch.where(torch.isinf(original_mask), original_mask, original_mask * ratio)
    torch.testing.assert_close(rebuilt, expected_mask, rtol=1e-5, atol=1e-6)
    ref.model.first_run = False  # a mask set by hand with the wanted slopes
    ref.model.register_buffer("future_mask", expected_mask.clone(), persistent=False)
    torch.testing.assert_close(got, logits(ref, x), rtol=1e-5, atol=1e-5)
    assert module._get_interleave(heads) == base  # the module function is restored
    torch.testing.assert_close(logits(model, x), logits(tiny_baichuan(release), x), rtol=0, atol=0)  # cache rebuilt


@pytest.mark.parametrize("method", ["ntk", "pi", "yarn", "dynamic-ntk", "logn"])
@pytest.mark.parametrize("family", list(ALIBI_MODELS))
def test_rope_method_on_alibi_model_is_refused(family, method):
    with pytest.raises(
        EvalkitError, match="methods for alibi: none, ntk-alibi, ntk-alibi-index, ntk-alibi-keezen, alibi-pi"
    ):
        with patched(ALIBI_MODELS[family](), method, trained_len=16):
            pass


@pytest.mark.parametrize("family", list(ROPE_MODELS))
def test_alibi_method_on_rope_model_is_refused(family):
    with pytest.raises(EvalkitError, match="methods for rope: none, pi, ntk"):
        with patched(ROPE_MODELS[family](), "ntk-alibi", trained_len=16):
            pass


def test_unknown_method_suggests_a_close_name():
    with pytest.raises(EvalkitError, match="did you mean 'dynamic-ntk'"):
        with patched(tiny_llama(), "dynamic_ntk"):
            pass


def test_scale_below_one_is_refused():
    with pytest.raises(EvalkitError, match="pi:scale must be between 1 and"):
        with patched(tiny_llama(), "pi", scale=0.5, trained_len=16):
            pass


def test_default_scale_is_target_over_trained_never_below_one():
    model = tiny_llama()
    with patched(model, "pi", target_len=64, trained_len=16) as p:
        assert p.scale == 4.0 and p.values == {"scale": 4.0}
    with patched(model, "ntk", target_len=64, trained_len=16) as p:
        assert p.alpha == 4.0  # alpha defaults to the scale
    with patched(model, "pi", target_len=8, trained_len=16) as p:
        assert p.scale == 1.0


def test_patch_is_restored_after_an_error_inside_the_block():
    model, x = tiny_llama(), ids(40)
    before = logits(model, x)
    with pytest.raises(RuntimeError):
        with patched(model, "yarn", scale=4.0, trained_len=16):
            raise RuntimeError("boom")
    assert torch.equal(logits(model, x), before)


def test_patching_after_half_precision_recomputes_frequencies_in_fp32():
    model = tiny_llama().to(torch.bfloat16)
    with patched(model, "ntk", alpha=2.0, trained_len=16):
        inv = model.model.rotary_emb.current[0]
        assert inv.dtype == torch.float32


@pytest.mark.parametrize("method", ["pi", "ntk", "yarn"])
def test_interleaved_rope_is_refused_not_patched_wrongly(method):
    """Cohere interleaves its cos/sin; a rotate-half replacement would silently rotate it wrongly."""
    import transformers
    from conftest import llama_config

    torch.manual_seed(0)
    model = transformers.CohereForCausalLM(llama_config(cls=transformers.CohereConfig)).eval()
    x = ids(20)
    before = logits(model, x)
    with pytest.raises(EvalkitError, match="cannot patch a CohereForCausalLM"):  # not in the family table
        with patched(model, method, trained_len=16, **method_params(method)):
            pass
    assert torch.equal(logits(model, x), before)
    from evalkit.patches.rope_models import check_layout

    with pytest.raises(EvalkitError, match="lays out its cos/sin differently"):  # nor would the layout check pass
        check_layout(model.model.rotary_emb, "model.rotary_emb")


@pytest.mark.parametrize("family", ["llama", "baichuan-7b"])
@pytest.mark.parametrize("method", ["pi", "ntk", "logn"])  # (none installs nothing: the model as it is)
def test_a_rotary_that_disagrees_with_its_config_is_refused_not_patched(family, method):
    """A checkpoint whose rotary module holds other frequencies than its config (and its rope_scaling)
    describes: evalkit cannot know what it extends, so it refuses in one line and changes nothing."""
    model, x = ROPE_MODELS[family](), ids(40)
    if family == "llama":
        rotary = model.model.rotary_emb
        rotary.inv_freq = rotary.inv_freq / 3  # as a scaling the config does not state would leave it
        rotary.original_inv_freq = rotary.inv_freq.clone()
    else:  # Baichuan-7B: a per-layer rotary with a persistent inv_freq, read from the checkpoint
        rotary_class = type(model.model.layers[0].self_attn.rotary_emb)
        for layer in model.model.layers:  # its own class, built with another base than the config's
            layer.self_attn.rotary_emb = rotary_class(16, max_position_embeddings=64, base=3e4)
    before = logits(model, x)
    with pytest.raises(EvalkitError, match="does not hold the RoPE frequencies its config describes") as error:
        with patched(model, method, trained_len=16, **method_params(method)):
            pass
    assert "\n" not in str(error.value)
    assert torch.equal(logits(model, x), before)


def test_rotate_half_rope_of_other_families_passes_the_layout_check():
    import transformers
    from conftest import llama_config

    from evalkit.patches.rope_models import check_layout

    for family in ("Gemma2", "Granite", "Llama"):
        cfg = llama_config(cls=getattr(transformers, f"{family}Config"), head_dim=16)
        check_layout(getattr(transformers, f"{family}ForCausalLM")(cfg).model.rotary_emb, "model.rotary_emb")


def test_an_attention_method_on_a_fused_qkv_projection_is_refused_before_anything_is_patched():
    import transformers
    from conftest import llama_config

    torch.manual_seed(0)
    model = transformers.Phi3ForCausalLM(llama_config(cls=transformers.Phi3Config, pad_token_id=0)).eval()
    rotary = model.model.rotary_emb
    with pytest.raises(EvalkitError, match="separate q/k/v/o projections"):
        with patched(model, "self-extend", trained_len=16):
            pass
    assert model.model.rotary_emb is rotary
    with patched(model, "ntk", alpha=2.0, trained_len=16):  # the other methods work on it
        assert model.model.rotary_emb is not rotary
