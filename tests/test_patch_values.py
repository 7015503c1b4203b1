"""Exact values of the scaling formulas of evalkit.patches, written to kill mutants (mutation/run patches).

Every expected value comes from transformers' own rope types (ROPE_INIT_FUNCTIONS), hand constants,
or a few lines of independent maths here; never from the evalkit function under test. All fast.
"""

import math

import pytest
import torch
from conftest import llama_config
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from evalkit.patches import alibi, rope


def _hf(rope_type, dim=128, theta=1e4, max_pos=2048, seq_len=None, **params):
    """transformers' (inv_freq, attention factor) for a head of ``dim`` (4 heads)."""
    cfg = llama_config(theta=theta, max_pos=max_pos, heads=4, hidden=4 * dim, rope={"rope_type": rope_type, **params})
    inv, factor = ROPE_INIT_FUNCTIONS[rope_type](cfg, "cpu", seq_len=seq_len)
    return inv, factor


def _plain(dim, base):
    """θ_i = base^(-2i/d) in float64, i = 0 .. d/2-1."""
    return 1.0 / base ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)


# --- RoPE ---


@pytest.mark.parametrize("dim, base", [(8, 10000.0), (64, 500000.0), (6, 7.0)])
def test_default_inv_freq_is_base_to_minus_2i_over_d(dim, base):
    inv = rope.default_inv_freq(dim, base)
    assert inv.dtype == torch.float32 and inv.shape == (dim // 2,)
    torch.testing.assert_close(inv.double(), _plain(dim, base), rtol=1e-6, atol=0)
    assert inv[0].item() == 1.0


def test_default_inv_freq_hand_values():
    assert rope.default_inv_freq(4, 100.0).tolist() == pytest.approx([1.0, 0.1], rel=1e-7)
    assert rope.default_inv_freq(6, 8.0).tolist() == pytest.approx([1.0, 0.5, 0.25], rel=1e-7)


@pytest.mark.parametrize("s, low, high, L", [(8, 1, 4, 8192), (4, 1, 4, 2048), (16, 2, 8, 4096), (3, 0.5, 3, 1024)])
def test_llama3_equals_transformers_llama3(s, low, high, L):
    inv, factor = _hf(
        "llama3",
        max_pos=L * s,
        factor=s,
        low_freq_factor=low,
        high_freq_factor=high,
        original_max_position_embeddings=L,
    )
    ours, our_factor = rope.rope_llama3(128, 1e4, scale=s, trained_len=L, low_freq_factor=low, high_freq_factor=high)
    torch.testing.assert_close(ours, inv, rtol=1e-6, atol=0)
    assert our_factor == factor == 1.0


def test_llama3_defaults_are_meta_low_1_high_4():
    inv, _ = _hf(
        "llama3",
        max_pos=8192 * 8,
        factor=8,
        low_freq_factor=1,
        high_freq_factor=4,
        original_max_position_embeddings=8192,
    )
    torch.testing.assert_close(rope.rope_llama3(128, 1e4, scale=8, trained_len=8192)[0], inv, rtol=1e-6, atol=0)


def test_llama3_bands_by_hand():
    """dim 8, base 10: θ = 1, 10^-0.25, 10^-0.5, 10^-0.75; L = 16, low 1, high 4, s = 2: wavelengths
    (6.3, 11.2, 19.9, 35.3): the first two in the blended band [L/4, L], the others above L (θ/s)."""
    theta = [10 ** (-k / 4) for k in range(4)]
    want = []
    for t in theta:
        lam = 2 * math.pi / t
        if lam < 16 / 4:
            want.append(t)
        elif lam > 16 / 1:
            want.append(t / 2)
        else:
            g = (16 / lam - 1) / (4 - 1)
            want.append((1 - g) * t / 2 + g * t)
    assert rope.rope_llama3(8, 10.0, scale=2, trained_len=16)[0].tolist() == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("s, L, seq_len", [(2, 2048, 4096), (4, 1024, 4096), (1.5, 4096, 8192)])
def test_longrope_equals_transformers_longrope(s, L, seq_len):
    long = [1.0 + 0.25 * i for i in range(64)]
    inv, factor = _hf(
        "longrope",
        max_pos=int(L * s),
        factor=s,
        long_factor=long,
        short_factor=[1.0] * 64,
        original_max_position_embeddings=L,
        seq_len=seq_len,
    )
    ours, our_factor = rope.rope_longrope(128, 1e4, scale=s, trained_len=L, factors=tuple(long))
    torch.testing.assert_close(ours, inv, rtol=1e-6, atol=0)
    assert our_factor == pytest.approx(factor, rel=1e-12)
    assert our_factor == pytest.approx(math.sqrt(1 + math.log(s) / math.log(L)), rel=1e-12)


def test_longrope_factor_is_one_at_or_below_scale_one_and_wrong_factor_count_is_refused():
    assert rope.longrope_attention_factor(1.0, 4096) == 1.0
    assert rope.longrope_attention_factor(0.5, 4096) == 1.0
    assert rope.longrope_attention_factor(4.0, 4096) == pytest.approx(math.sqrt(1 + math.log(4) / math.log(4096)))
    from evalkit.errors import EvalkitError

    with pytest.raises(EvalkitError, match="needs 4 factors"):
        rope.rope_longrope(8, 1e4, scale=2, trained_len=16, factors=(1.0, 2.0, 3.0))


@pytest.mark.parametrize("s, L, fast, slow", [(4, 2048, 32, 1), (8, 4096, 16, 2), (2, 1024, 64, 0.5)])
def test_ntk_by_parts_is_yarn_without_temperature(s, L, fast, slow):
    inv, factor = _hf(
        "yarn", max_pos=L * s, factor=s, original_max_position_embeddings=L, beta_fast=fast, beta_slow=slow
    )
    ours, our_factor = rope.rope_ntk_by_parts(128, 1e4, scale=s, trained_len=L, beta_fast=fast, beta_slow=slow)
    torch.testing.assert_close(ours, inv, rtol=1e-6, atol=0)
    assert our_factor == 1.0 and factor > 1.0
    yarn, yarn_factor = rope.rope_yarn(128, 1e4, scale=s, trained_len=L, beta_fast=fast, beta_slow=slow)
    torch.testing.assert_close(yarn, inv, rtol=1e-6, atol=0)
    assert yarn_factor == pytest.approx(0.1 * math.log(s) + 1, rel=1e-12)


@pytest.mark.parametrize("seq_len, L", [(4096, 2048), (3000, 1024), (2049, 2048)])
def test_dynamic_yarn_is_yarn_at_s_equal_l_over_L(seq_len, L):
    s = seq_len / L
    inv, factor = _hf("yarn", max_pos=seq_len, factor=s, original_max_position_embeddings=L)
    ours, our_factor = rope.rope_dynamic_yarn(128, 1e4, trained_len=L, seq_len=seq_len)
    torch.testing.assert_close(ours, inv, rtol=1e-6, atol=0)
    assert our_factor == pytest.approx(0.1 * math.log(s) + 1, rel=1e-12)
    assert rope.rope_dynamic_yarn(128, 1e4, trained_len=L, seq_len=L) == (None, 1.0)
    assert rope.rope_dynamic_yarn(128, 1e4, trained_len=L, seq_len=L - 1) == (None, 1.0)


def test_dynamic_yarn_passes_its_betas():
    inv, _ = _hf("yarn", max_pos=8192, factor=4, original_max_position_embeddings=2048, beta_fast=8, beta_slow=2)
    ours, _ = rope.rope_dynamic_yarn(128, 1e4, trained_len=2048, seq_len=8192, beta_fast=8, beta_slow=2)
    torch.testing.assert_close(ours, inv, rtol=1e-6, atol=0)


def _correction_dim(dim, base, L, n):
    return dim * math.log(L / (n * 2 * math.pi)) / (2 * math.log(base))


def test_yarn_correction_range_clamps_to_the_dimensions():
    # dim 8, base 10, L 1024: cd(32) = 2.8, cd(1) = 8.8 -> (2, 9), high clamped to d-1 = 7
    assert (_correction_dim(8, 10.0, 1024, 32), _correction_dim(8, 10.0, 1024, 1)) == pytest.approx(
        (2.83, 8.85), abs=0.01
    )
    assert rope.yarn_correction_range(8, 10.0, 1024) == (2, 7)
    # L 4: cd(32) = -1.7, cd(1) = -0.2 -> (-2, 0), low clamped to 0
    assert rope.yarn_correction_range(8, 1e4, 4) == (0, 0)
    for fast, slow in [(8, 2), (32, 1), (5, 0.5)]:
        want = (math.floor(_correction_dim(64, 1e4, 512, fast)), math.ceil(_correction_dim(64, 1e4, 512, slow)))
        assert rope.yarn_correction_range(64, 1e4, 512, fast, slow) == want
        assert rope.yarn_correction_range(64, 1e4, 512, beta_fast=fast, beta_slow=slow) == want


def test_ntk_by_parts_with_equal_ends_is_a_step():
    """low == high (both clamped to 0 for L = 4): transformers adds 0.001 to high, so dimension 0
    extrapolates (θ) and every other one interpolates (θ/s)."""
    inv = rope.ntk_by_parts_inv_freq(8, 1e4, 2.0, 4)
    want = _plain(8, 1e4)
    want[1:] /= 2
    torch.testing.assert_close(inv.double(), want, rtol=1e-6, atol=0)


def test_ntk_by_parts_ramp_by_hand():
    """dim 8, base 10, L 1024, s 4: range (2, 7): dims 0-2 kept, then ramp (i-2)/5 toward θ/s."""
    theta = _plain(8, 10.0)
    ramp = torch.tensor([0.0, 0.0, 0.0, 0.2], dtype=torch.float64)
    want = theta / 4 * ramp + theta * (1 - ramp)
    torch.testing.assert_close(rope.ntk_by_parts_inv_freq(8, 10.0, 4.0, 1024).double(), want, rtol=1e-6, atol=0)


@pytest.mark.parametrize("s, m", [(1.0, 1.0), (0.5, 1.0), (math.e, 1.1), (100.0, 1 + 0.1 * math.log(100))])
def test_yarn_mscale_hand_values(s, m):
    assert rope.yarn_mscale(s) == pytest.approx(m, rel=1e-12)


def test_pi_divides_every_frequency_and_ntk_changes_the_base_by_hand():
    inv, f = rope.rope_pi(8, 10.0, scale=4.0)
    torch.testing.assert_close(inv.double(), _plain(8, 10.0) / 4, rtol=1e-6, atol=0)
    assert f == 1.0
    assert rope.ntk_base(8, 10.0, 2.0) == pytest.approx(10 * 2 ** (8 / 6), rel=1e-12)
    inv, f = rope.rope_ntk(8, 10.0, alpha=2.0)
    torch.testing.assert_close(inv.double(), _plain(8, 10 * 2 ** (8 / 6)), rtol=1e-6, atol=0)
    assert f == 1.0


def test_dynamic_ntk_base_by_hand():
    # b · (α·l/L − (α−1))^(d/(d−2)), d 8: α 3, l 40, L 16 -> (7.5 − 2)^(4/3)
    assert rope.dynamic_ntk_base(8, 10.0, 3.0, 40, 16) == pytest.approx(10 * 5.5 ** (8 / 6), rel=1e-12)
    assert rope.dynamic_ntk_base(8, 10.0, 3.0, 16, 16) == 10.0
    assert rope.dynamic_ntk_base(8, 10.0, 3.0, 17, 16) == pytest.approx(10 * (3 * 17 / 16 - 2) ** (8 / 6), rel=1e-12)
    inv, f = rope.rope_dynamic_ntk(8, 10.0, alpha=3.0, seq_len=40, trained_len=16)
    torch.testing.assert_close(inv.double(), _plain(8, 10 * 5.5 ** (8 / 6)), rtol=1e-6, atol=0)
    assert f == 1.0
    assert rope.rope_dynamic_ntk(8, 10.0, alpha=3.0, seq_len=16, trained_len=16) == (None, 1.0)


def test_logn_factor_by_hand():
    f = rope.logn_factor(torch.tensor([[0, 15, 16, 63, 255]]), trained_len=16)
    assert f.dtype == torch.float32 and f.shape == (1, 5)
    want = [1.0, 1.0, math.log(17) / math.log(16), math.log(64) / math.log(16), 2.0]
    assert f[0].tolist() == pytest.approx(want, rel=1e-6)


# --- ALiBi ---


@pytest.mark.parametrize(
    "heads, want",
    [
        (1, [2**-8]),
        (2, [2**-4, 2**-8]),
        (3, [2**-4, 2**-8, 2**-2]),
        (6, [2**-2, 2**-4, 2**-6, 2**-8, 2**-1, 2**-3]),
    ],
)
def test_alibi_slopes_hand_values(heads, want):
    slopes = alibi.alibi_slopes(heads)
    assert slopes.dtype == torch.float32
    assert slopes.tolist() == pytest.approx(want, rel=1e-7)


@pytest.mark.parametrize("heads", [1, 2, 3, 5, 6, 8, 12, 40])
def test_mpt_slopes_by_hand(heads):
    """mosaicml: 2^(-b·h/H') for h = 1..H' (H' the next power of two), odd-indexed first when H < H'."""
    n = 2 ** math.ceil(math.log2(heads))
    series = [2 ** (-8 * h / n) for h in range(1, n + 1)]
    want = series if n == heads else (series[1::2] + series[0::2])[:heads]
    assert alibi.mpt_alibi_slopes(heads).tolist() == pytest.approx(want, rel=1e-6)


def test_mpt_slopes_follow_the_bias_max():
    assert alibi.mpt_alibi_slopes(4, alibi_bias_max=4).tolist() == pytest.approx([2**-1, 2**-2, 2**-3, 2**-4])
    assert alibi.mpt_alibi_slopes(3, alibi_bias_max=16).tolist() == pytest.approx([2**-8, 2**-16, 2**-4])


def test_ntk_alibi_by_hand():
    """slopes 1/2, 1/8, 1/32 (ln equally spaced), a = 4: divisors 1, 2, 4."""
    slopes = torch.tensor([0.5, 0.125, 0.03125])
    torch.testing.assert_close(alibi.ntk_alibi_divisors(slopes, 4.0), torch.tensor([1.0, 2.0, 4.0]))
    torch.testing.assert_close(alibi.ntk_alibi(slopes, 4.0), torch.tensor([0.5, 0.0625, 0.0078125]))
    # order does not matter; equal slopes: every divisor a
    torch.testing.assert_close(alibi.ntk_alibi_divisors(slopes.flip(0), 4.0), torch.tensor([4.0, 2.0, 1.0]))
    torch.testing.assert_close(alibi.ntk_alibi_divisors(torch.tensor([0.25, 0.25]), 3.0), torch.tensor([3.0, 3.0]))
    d = alibi.ntk_alibi_divisors(torch.tensor([0.5]), 3.0)
    assert d.dtype == torch.float32 and d.tolist() == [3.0]


def test_ntk_alibi_index_and_keezen_by_hand():
    torch.testing.assert_close(alibi.ntk_alibi_index_divisors(3, 4.0), torch.tensor([1.0, 2.0, 4.0]))
    assert alibi.ntk_alibi_index_divisors(1, 5.0).tolist() == [5.0]
    assert alibi.ntk_alibi_index_divisors(3, 4.0).dtype == torch.float32
    torch.testing.assert_close(alibi.ntk_alibi_keezen_divisors(3, 4.0), torch.tensor([1.0, 2.0**1, 1.0]))
    torch.testing.assert_close(alibi.ntk_alibi_keezen_divisors(5, 16.0), torch.tensor([1.0, 2.0, 4.0, 8.0, 1.0]))
    slopes = torch.tensor([0.5, 0.25, 0.125])
    torch.testing.assert_close(alibi.ntk_alibi_index(slopes, 4.0), torch.tensor([0.5, 0.125, 0.03125]))
    torch.testing.assert_close(alibi.ntk_alibi_keezen(slopes, 4.0), torch.tensor([0.5, 0.125, 0.125]))
    torch.testing.assert_close(alibi.alibi_interpolate(slopes, 4.0), torch.tensor([0.125, 0.0625, 0.03125]))


# --- survivors of the first mutation run (mutation/REPORT.md), each pinned by a value ---


@pytest.fixture
def float64_default():
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def test_formulas_return_float32_whatever_the_default_dtype(float64_default):
    """The module's promise: float32 frequencies (and slopes), also under a float64 default dtype."""
    outs = [
        rope.default_inv_freq(8, 10.0),
        rope.rope_pi(8, 10.0, 2.0)[0],
        rope.rope_ntk(8, 10.0, 2.0)[0],
        rope.rope_yarn(8, 10.0, 4.0, 1024)[0],
        rope.ntk_by_parts_inv_freq(8, 10.0, 4.0, 1024),
        rope.rope_llama3(8, 10.0, 2.0, 16)[0],
        rope.rope_longrope(8, 10.0, 2.0, 16, (1.0, 1.5, 2.0, 2.5))[0],
        rope.logn_factor(torch.tensor([0, 40]), 16),
        alibi.alibi_slopes(6),
        alibi.mpt_alibi_slopes(6),
        alibi.ntk_alibi_index_divisors(1, 2.0),
        alibi.ntk_alibi_index_divisors(4, 2.0),
        alibi.ntk_alibi_divisors(torch.tensor([0.5]), 2.0),
    ]
    assert [o.dtype for o in outs] == [torch.float32] * len(outs)
    torch.testing.assert_close(
        rope.ntk_by_parts_inv_freq(8, 10.0, 4.0, 1024).double(),
        _plain(8, 10.0) * torch.tensor([1, 1, 1, 0.8 + 0.2 / 4]),
        rtol=1e-6,
        atol=0,
    )
    assert alibi.mpt_alibi_slopes(3).tolist() == pytest.approx([2**-4, 2**-8, 2**-2], rel=1e-7)


def test_ntk_alibi_divisors_of_float64_slopes_are_float32():
    assert alibi.ntk_alibi_divisors(torch.tensor([0.5], dtype=torch.float64), 2.0).dtype == torch.float32
    assert alibi.ntk_alibi_divisors(torch.tensor([0.5, 0.25], dtype=torch.float64), 2.0).dtype == torch.float32


def test_ntk_alibi_two_heads():
    """Two heads (2^-4, 2^-8): the most local one extrapolates (divisor 1), the other interpolates (a)."""
    torch.testing.assert_close(alibi.ntk_alibi_divisors(alibi.alibi_slopes(2), 5.0), torch.tensor([1.0, 5.0]))


@pytest.mark.parametrize("heads, a", [(12, 4.0), (40, 3.0), (64, 7.5)])
def test_ntk_alibi_divisors_are_computed_in_float64_then_rounded_once(heads, a):
    """The exponents in float64 and one rounding to float32 (a float32 computation differs in the last bit)."""
    slopes = torch.tensor([2.0 ** (-8.0 * h / heads) for h in range(1, heads + 1)], dtype=torch.float32)
    logs = torch.log(slopes.double())
    want = (a ** ((logs.max() - logs) / (logs.max() - logs.min()))).float()
    assert torch.equal(alibi.ntk_alibi_divisors(slopes, a), want)
    h = torch.arange(heads, dtype=torch.float64)
    assert torch.equal(alibi.ntk_alibi_index_divisors(heads, a), (a ** (h / (heads - 1))).float())


@pytest.mark.parametrize("alpha, L", [(7.477, 6536), (6.507, 5460), (1.821, 5245)])
def test_dynamic_ntk_base_is_exactly_the_base_at_the_trained_length(alpha, L):
    """At l = L the formula gives b·1 only up to rounding (b·(1 ± 1e-15) for these values): the base itself is kept."""
    assert rope.dynamic_ntk_base(128, 1e4, alpha, L, L) == 1e4
    assert rope.dynamic_ntk_base(128, 1e4, alpha, L - 1, L) == 1e4


def test_ntk_by_parts_defaults_are_yarns_32_and_1():
    inv, _ = _hf("yarn", max_pos=2048 * 4, factor=4, original_max_position_embeddings=2048)  # transformers: 32, 1
    torch.testing.assert_close(rope.ntk_by_parts_inv_freq(128, 1e4, 4.0, 2048), inv, rtol=1e-6, atol=0)
    torch.testing.assert_close(rope.rope_ntk_by_parts(128, 1e4, scale=4.0, trained_len=2048)[0], inv, rtol=1e-6, atol=0)
    torch.testing.assert_close(rope.rope_yarn(128, 1e4, scale=4.0, trained_len=2048)[0], inv, rtol=1e-6, atol=0)
    torch.testing.assert_close(
        rope.rope_dynamic_yarn(128, 1e4, trained_len=2048, seq_len=8192)[0], inv, rtol=1e-6, atol=0
    )


def test_ntk_by_parts_with_both_ends_at_the_last_dimension_keeps_every_frequency():
    """dim 8, base 10, L 15080: cd(32) = 7.5, cd(1) = 13.5 -> low 7, high clamped to 7: low == high != 0;
    transformers makes high 7.001, so dimensions 0-3 (all below 7) extrapolate: θ unchanged."""
    assert rope.yarn_correction_range(8, 10.0, 15080) == (7, 7)
    inv, _ = _hf("yarn", dim=8, theta=10.0, max_pos=15080 * 4, factor=4, original_max_position_embeddings=15080)
    ours = rope.ntk_by_parts_inv_freq(8, 10.0, 4.0, 15080)
    torch.testing.assert_close(ours, inv, rtol=1e-6, atol=0)
    torch.testing.assert_close(ours.double(), _plain(8, 10.0), rtol=1e-6, atol=0)


def test_llama3_wavelength_exactly_at_L_over_low_is_blended_with_gamma_zero():
    """dim 2: θ = 1, λ = 2π (float32). With low = L / λ the wavelength sits exactly on L/low, the edge of
    the blended band (inclusive): γ = 0, so θ/s (not θ, not θ/s²)."""
    lam = float(torch.tensor(2 * math.pi, dtype=torch.float32))
    low = 16 / lam
    inv, _ = rope.rope_llama3(2, 10.0, scale=4.0, trained_len=16, low_freq_factor=low, high_freq_factor=8.0)
    assert inv.tolist() == pytest.approx([0.25], rel=1e-5)
    hf, _ = _hf(
        "llama3",
        dim=2,
        theta=10.0,
        max_pos=64,
        factor=4.0,
        low_freq_factor=low,
        high_freq_factor=8.0,
        original_max_position_embeddings=16,
    )
    torch.testing.assert_close(inv, hf, rtol=1e-6, atol=0)


# --- ALiBi installers: the model's own arithmetic, bit for bit ---


def _mpt(bias_max, heads=4):
    import transformers

    torch.manual_seed(0)
    cfg = transformers.MptConfig(
        vocab_size=96,
        d_model=16 * heads,
        n_layers=2,
        n_heads=heads,
        max_seq_len=64,
        expansion_ratio=2,
        attn_config={"alibi_bias_max": bias_max},
    )
    return transformers.MptForCausalLM(cfg).eval()


@pytest.mark.parametrize("family", ["bloom", "mpt", "falcon-alibi"])
@pytest.mark.parametrize("heads", [4, 6])
def test_alibi_methods_at_factor_one_reproduce_the_model_bit_for_bit(family, heads):
    """The installed builders keep each family's own arithmetic (positions, dtype, order of heads):
    with slopes unchanged (s = 1, α = 1) the logits are exactly the model's own."""
    from conftest import ALIBI_MODELS, ids, logits

    import evalkit

    model = ALIBI_MODELS[family](heads=heads)
    x = ids(40)
    want = logits(model, x)
    for method, params in (("alibi-pi", {"scale": 1.0}), ("ntk-alibi", {"alpha": 1.0})):
        with evalkit.patched(model, method, trained_len=16, **params):
            assert torch.equal(logits(model, x), want), method
    with evalkit.patched(model, "alibi-pi", scale=2.0, trained_len=16):
        assert not torch.allclose(logits(model, x), want)


def test_mpt_slopes_are_those_its_forward_uses_whatever_the_config_says():
    """transformers' MptModel.forward builds its ALiBi with alibi_bias_max 8 whatever attn_config says
    (modeling_mpt: build_mpt_alibi_tensor(num_heads, max_seq_len, device=...)): with a config saying 16,
    evalkit must still start from the bias-max-8 slopes, so alibi-pi at s = 1 is the model itself."""
    from conftest import ids, logits

    import evalkit
    from evalkit.patches import alibi_models

    model = _mpt(16)
    assert alibi_models._mpt_base(model).tolist() == pytest.approx([2**-2, 2**-4, 2**-6, 2**-8], rel=1e-6)
    x = ids(30)
    want = logits(model, x)
    with evalkit.patched(model, "alibi-pi", scale=1.0, trained_len=16):
        assert torch.equal(logits(model, x), want)
    with evalkit.patched(model, "alibi-pi", scale=2.0, trained_len=16):
        assert not torch.allclose(logits(model, x), want)


def test_bloom_patch_keeps_a_given_padding_mask_and_keyword_or_embedding_inputs():
    """The pre-hook adds an all-ones mask only when none is given, for input_ids by keyword or position
    and for inputs_embeds; a given (left-padded) mask is kept."""
    from conftest import ids, tiny_bloom

    import evalkit

    model = tiny_bloom(heads=4)
    x = ids(24, batch=2)
    mask = torch.ones(2, 24, dtype=torch.long)
    mask[0, :5] = 0
    tr = model.transformer
    with torch.no_grad():
        want_masked = model(input_ids=x, attention_mask=mask).logits
        want = tr(input_ids=x).last_hidden_state
        want_embeds = tr(inputs_embeds=tr.word_embeddings(x)).last_hidden_state
        with evalkit.patched(model, "alibi-pi", scale=1.0, trained_len=16):
            assert torch.equal(model(input_ids=x, attention_mask=mask).logits, want_masked)
            assert torch.equal(tr(input_ids=x).last_hidden_state, want)
            assert torch.equal(tr(x).last_hidden_state, want)
            assert torch.equal(tr(inputs_embeds=tr.word_embeddings(x)).last_hidden_state, want_embeds)


# --- the registry's helpers (evalkit.patches), called directly: mutmut swaps a mutant in only after
# import, so what runs at import (the lazy formula wrappers, the ramp checks) needs a direct call ---


def test_lazy_calls_the_named_formula_with_every_argument():
    from evalkit.patches.methods import _lazy

    call = _lazy("rope", "rope_yarn")
    assert call.__name__ == "rope_yarn"
    inv, factor = call(8, 10.0, 4.0, trained_len=1024, beta_fast=32, beta_slow=1)
    torch.testing.assert_close(
        inv.double(), _plain(8, 10.0) * torch.tensor([1, 1, 1, 0.85], dtype=torch.float64), rtol=1e-6, atol=0
    )
    assert factor == pytest.approx(0.1 * math.log(4) + 1)
    assert _lazy("alibi", "alibi_interpolate")(torch.tensor([0.5]), scale=2.0).tolist() == [0.25]


def test_ramp_check_says_when_the_low_end_is_not_below_the_high_end():
    from evalkit.patches.methods import _ramp

    check = _ramp("beta_slow", "beta_fast")
    assert check({"beta_slow": 1.0, "beta_fast": 32.0}) is None
    assert check({"beta_slow": 32.0, "beta_fast": 32.0}) == "beta_slow must be below beta_fast"
    assert check({"beta_slow": 33.0, "beta_fast": 32.0}) == "beta_slow must be below beta_fast"


def test_param_example_names_a_value_the_method_accepts():
    from evalkit.patches import METHODS, Param

    assert (
        METHODS.get("self-extend").param("window").example("self-extend")
        == "e.g. self-extend:window=1024 (its default)"
    )
    assert (
        METHODS.get("dca").param("chunk_size").example("dca") == "omit it for its default (3L/4)"
    )  # derived: no fixed value
    assert Param("x", "h", low=0.5).example("m") == "e.g. m:x=0.5"  # no default: the low end
    assert Param("x", "h").example("m") == "e.g. m:x=1"
    assert Param("x", "h", default=0.0, low=3).example("m") == "e.g. m:x=0 (its default)"  # a default of 0 is a default
    assert Param("x", "h", kind=int, low=1, high=1 << 24).example("m") == "e.g. m:x=1"


def test_param_errors_print_bounds_as_typed_and_hint_an_accepted_value():
    from evalkit.errors import EvalkitError
    from evalkit.patches import METHODS

    window = METHODS.get("streaming-llm").param("recent_size")
    with pytest.raises(EvalkitError) as e:
        window.parse("0", "streaming-llm")
    assert "between 1 and 16777216, got 0" in str(e.value)  # not 1.67772e+07
    with pytest.raises(EvalkitError) as e:
        METHODS.get("dca").param("chunk_size").parse("abc", "dca")
    assert "omit it for its default (3L/4)" in e.value.hint  # not "e.g. dca:chunk_size=2", which is refused


def test_resolved_reads_missing_factors_as_none_and_other_names_as_errors():
    from evalkit.patches import Resolved, parse_call

    r = Resolved(parse_call("self-extend"), 16, {"window": 4, "group": 2})
    assert r.window == 4 and r.scale is None and r.alpha is None
    with pytest.raises(AttributeError, match="^nothing$"):
        r.nothing


@pytest.mark.parametrize(
    "content, want",
    [
        ("[1, 2.5]", (1.0, 2.5)),
        ('{"long_factor": [1.5]}', (1.5,)),
        ('{"rope_scaling": {"long_factor": [2]}}', (2.0,)),
        ('{"rope_parameters": {"long_factor": [3]}}', (3.0,)),
        ('{"rope_scaling": {"type": "su"}, "long_factor": [4]}', (4.0,)),  # the first dict that has them
        ('{"rope_scaling": null, "rope_parameters": {"long_factor": [5]}, "long_factor": [6]}', (5.0,)),
    ],
)
def test_factor_file_reads_every_documented_form(tmp_path, content, want):
    from evalkit.patches.methods import _factor_file

    path = tmp_path / "f.json"
    path.write_text(content, encoding="utf-8")
    assert _factor_file(str(path)) == want


@pytest.mark.parametrize(
    "content",
    [
        "[]",
        "5",
        '{"rope_scaling": {"type": "su"}}',
        "[1, true]",
        "[1, -1]",
        "[0]",
        "[1, NaN]",
        '["1"]',
        "{}",
        '{"long_factor": 2}',
    ],
)
def test_factor_file_refuses_anything_but_a_list_of_positive_numbers(tmp_path, content):
    from evalkit.errors import EvalkitError
    from evalkit.patches.methods import _factor_file

    path = tmp_path / "f.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(EvalkitError, match="holds no list of positive factors"):
        _factor_file(str(path))


def test_factor_file_unreadable_or_not_json(tmp_path):
    from evalkit.errors import EvalkitError
    from evalkit.patches.methods import _factor_file

    with pytest.raises(EvalkitError, match="cannot read the factors file .*absent.json: No such file"):
        _factor_file(str(tmp_path / "absent.json"))
    (tmp_path / "bad.json").write_text("[1,", encoding="utf-8")
    with pytest.raises(EvalkitError, match=r"bad.json is not valid JSON \("):
        _factor_file(str(tmp_path / "bad.json"))


def test_gemma3_shipped_yarn_on_its_full_attention_layers_is_kept_exactly_at_scale_one():
    """Gemma 3's per-type rotary with YaRN shipped on the full-attention layers (attention factor
    0.1·ln 4 + 1 ≠ 1): PI at s = 1 multiplies the shipped frequencies by 1 and keeps the shipped factor, so the
    logits are the model's own, bit for bit (the shipped frequencies come from transformers for that layer type)."""
    from conftest import ids, logits, tiny_gemma3

    import evalkit

    model = tiny_gemma3(rope={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16})
    assert model.model.rotary_emb.full_attention_attention_scaling == pytest.approx(0.1 * math.log(4) + 1)
    x = ids(40)
    want = logits(model, x)
    with evalkit.patched(model, "pi", scale=1.0):
        assert torch.equal(logits(model, x), want)


def test_alibi_adapters_trained_length_type_and_static():
    from conftest import tiny_bloom, tiny_falcon_alibi, tiny_mpt

    from evalkit.patches import find_adapter

    for model, length in ((tiny_bloom(), 2048), (tiny_mpt(max_seq_len=48), 48), (tiny_falcon_alibi(), 64)):
        adapter = find_adapter(model)
        assert adapter.trained_len(model) == length and isinstance(adapter.trained_len(model), int)
        assert adapter.shipped_type(model) == "default"
        assert adapter.length_independent(model) is True


def test_alibi_helpers_model_type_config_len_and_baichuan_detection():
    from types import SimpleNamespace

    from conftest import tiny_bloom

    from evalkit.patches import alibi_models as am

    assert am.model_type(SimpleNamespace(config=SimpleNamespace())) == ""
    assert am.model_type(SimpleNamespace(config=SimpleNamespace(model_type="bloom"))) == "bloom"
    read = am._config_len("model_max_length", "max_position_embeddings")
    m = lambda **kw: SimpleNamespace(config=SimpleNamespace(**kw))  # noqa: E731
    assert read(m(model_max_length=4096, max_position_embeddings=8)) == 4096
    assert read(m(model_max_length=0, max_position_embeddings=8)) == 8
    assert read(m(max_position_embeddings=8)) == 8
    assert read(m()) == 2048
    assert am._is_baichuan_alibi(tiny_bloom()) is False


def test_baichuan_mask_cache_reset():
    from torch import nn

    from evalkit.patches.alibi_models import _baichuan_reset_mask_cache

    base = nn.Module()
    base.register_buffer("future_mask", torch.zeros(1))
    base.first_run, base.max_cache_pos, base.alibi_mask = False, 7, torch.zeros(1)
    _baichuan_reset_mask_cache(base, 4096)
    assert "future_mask" not in base._buffers and not hasattr(base, "future_mask")
    assert base.first_run is True and base.max_cache_pos == 4096 and base.alibi_mask is None
    plain = nn.Module()
    plain.__dict__["future_mask"] = torch.zeros(1)
    _baichuan_reset_mask_cache(plain, 16)
    assert "future_mask" not in plain.__dict__ and not hasattr(plain, "alibi_mask")


def test_falcon_and_bloom_patch_keep_padded_rows_bit_for_bit():
    """Left padding: (cumsum − 1) · mask positions, as the models compute them (padded rows stay finite)."""
    from conftest import ids, tiny_bloom, tiny_falcon_alibi

    import evalkit

    x = ids(24, batch=2)
    mask = torch.ones(2, 24, dtype=torch.long)
    mask[0, :5] = 0
    for model in (tiny_falcon_alibi(), tiny_bloom()):
        with torch.no_grad():
            want = model(input_ids=x, attention_mask=mask).logits
            with evalkit.patched(model, "alibi-pi", scale=1.0, trained_len=16):
                assert torch.equal(model(input_ids=x, attention_mask=mask).logits, want)


def test_mpt_patch_at_the_full_max_seq_len_and_bloom_in_bfloat16():
    from conftest import ids, logits, tiny_bloom, tiny_mpt

    import evalkit

    mpt = tiny_mpt(max_seq_len=32)
    x = ids(32)  # as many keys as the alibi built for max_seq_len
    want = logits(mpt, x)
    with evalkit.patched(mpt, "alibi-pi", scale=1.0, trained_len=16):
        assert torch.equal(logits(mpt, x), want)
    bloom = tiny_bloom().to(torch.bfloat16)
    want = logits(bloom, x)
    with evalkit.patched(bloom, "alibi-pi", scale=1.0, trained_len=16):
        assert torch.equal(logits(bloom, x), want)


# --- the two-region attention's own rotation (evalkit.patches.attention.rotate) ---


def test_rotate_is_rotate_half_rope_on_the_rotary_part_only_times_the_factor():
    """Partial rotary: the first 2·len(θ) dims rotate ((a, b) -> (a cos − b sin, b cos + a sin), times the
    attention factor), the rest pass unchanged; bfloat16 in, bfloat16 out."""
    from evalkit.patches.attention import rotate

    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 2, 3, 6, generator=g)
    pos = torch.tensor([0.0, 1.0, 5.0])
    theta = torch.tensor([1.0, 0.5])
    ang = pos.double()[:, None] * theta.double()[None, :]  # (T, 2)
    a, b = x.double()[..., :2], x.double()[..., 2:4]
    want = torch.cat(
        (1.5 * (a * ang.cos() - b * ang.sin()), 1.5 * (b * ang.cos() + a * ang.sin()), x.double()[..., 4:]), dim=-1
    )
    out = rotate(x, pos, theta, 1.5)
    assert out.shape == x.shape and out.dtype == torch.float32
    torch.testing.assert_close(out.double(), want, rtol=1e-5, atol=1e-6)
    full = rotate(x[..., :4], pos, theta, 1.5)  # no pass-through part
    torch.testing.assert_close(full.double(), want[..., :4], rtol=1e-5, atol=1e-6)
    assert rotate(x.bfloat16(), pos, theta, 1.5).dtype == torch.bfloat16


def _two_region_reference(q, k, v, window, far_q, far_k, theta, factor, scaling, groups):
    """Full-matrix two-region attention in float64: near (0 <= i−j < W) scored at the true positions,
    far (i−j >= W) at the remapped ones, merged per query, causal, one softmax."""
    k, v = k.double().repeat_interleave(groups, 1), v.double().repeat_interleave(groups, 1)
    q = q.double()
    pos = torch.arange(q.shape[2], dtype=torch.float64)

    def rot(x, p):
        ang = p[:, None] * theta.double()[None, :]
        cos, sin = torch.cat((ang.cos(), ang.cos()), -1) * factor, torch.cat((ang.sin(), ang.sin()), -1) * factor
        half = x.shape[-1] // 2
        return x * cos + torch.cat((-x[..., half:], x[..., :half]), -1) * sin

    near = rot(q, pos) @ rot(k, pos).transpose(2, 3) * scaling
    far = rot(q, far_q(pos)) @ rot(k, far_k(pos)).transpose(2, 3) * scaling
    d = pos[:, None] - pos[None, :]
    s = torch.where(d < 0, float("-inf"), torch.where(d < window, near, far))
    return torch.softmax(s, -1) @ v


@pytest.mark.parametrize("n", [5, 13])  # n = W + 1: the first far key exists for the last query only
@pytest.mark.parametrize("budget_rows", [None, 1, 3])
@pytest.mark.parametrize("method", ["self-extend", "rerope", "leaky-rerope"])
def test_two_region_attention_equals_a_full_matrix_reference(monkeypatch, n, budget_rows, method):
    from evalkit.patches import attention

    W, G, K = 4, 2, 2.0
    region, far_q, far_k = {
        "self-extend": (
            attention.self_extend(W, G),
            lambda p: torch.floor(p / G) + W - W / G,
            lambda p: torch.floor(p / G),
        ),
        "rerope": (attention.rerope(W), lambda p: torch.full_like(p, float(W)), lambda p: torch.zeros_like(p)),
        "leaky-rerope": (attention.leaky_rerope(W, K), lambda p: p / K + W - W / K, lambda p: p / K),
    }[method]
    g = torch.Generator().manual_seed(n)
    q = torch.randn(1, 4, n, 8, generator=g)
    k, v = torch.randn(1, 2, n, 8, generator=g), torch.randn(1, 2, n, 8, generator=g)  # 2 query heads per key head
    theta = torch.tensor([1.0, 0.3, 0.1, 0.01])
    if budget_rows:
        monkeypatch.setattr(attention, "SCORE_BUDGET", 4 * n * budget_rows)  # blocks of budget_rows queries
    pos = torch.arange(n, dtype=torch.float64)
    out = attention.two_region_attention(q, k, v, pos, pos, region, theta, 1.2, 0.35, groups=2)
    want = _two_region_reference(q, k, v, W, far_q, far_k, theta, 1.2, 0.35, 2)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), want, rtol=1e-5, atol=1e-5)


def test_two_region_attention_keeps_bfloat16():
    from evalkit.patches import attention

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 9, 8, generator=g).bfloat16() for _ in range(3))
    pos = torch.arange(9, dtype=torch.float64)
    out = attention.two_region_attention(
        q, k, v, pos, pos, attention.rerope(4), torch.tensor([1.0, 0.3, 0.1, 0.01]), 1.0, 0.35
    )
    assert out.dtype == torch.bfloat16
    want = _two_region_reference(
        q.float(),
        k.float(),
        v.float(),
        4,
        lambda p: torch.full_like(p, 4.0),
        lambda p: torch.zeros_like(p),
        torch.tensor([1.0, 0.3, 0.1, 0.01]),
        1.0,
        0.35,
        1,
    )
    torch.testing.assert_close(out.double(), want, rtol=0.05, atol=0.05)
