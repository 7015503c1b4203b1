"""The scaling formulas against closed-form values and transformers' own rope types."""

import math

import pytest
import torch
from conftest import llama_config
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from evalkit.patches import alibi, rope


@pytest.mark.parametrize("alpha, expected", [(2, 20221.26), (4, 40889.94), (8, 82684.62)])
def test_ntk_base_reference_values(alpha, expected):
    assert rope.ntk_base(128, 1e4, alpha) == pytest.approx(expected, abs=0.01)


def test_dynamic_ntk_base_reference_value_and_reset():
    assert rope.dynamic_ntk_base(128, 1e4, 2, 8192, 2048) == pytest.approx(72195.86, abs=0.01)
    assert rope.dynamic_ntk_base(128, 1e4, 2, 2048, 2048) == 1e4


@pytest.mark.parametrize("L, low, high", [(2048, 16, 41), (4096, 20, 46)])
def test_yarn_correction_range(L, low, high):
    assert rope.yarn_correction_range(128, 1e4, L) == (low, high)


@pytest.mark.parametrize("s, m", [(2, 1.0693), (4, 1.1386), (8, 1.2079), (16, 1.2773), (32, 1.3466)])
def test_yarn_attention_factor(s, m):
    assert rope.yarn_mscale(s) == pytest.approx(m, abs=1e-4)


def _transformers(rope_type, theta=1e4, max_pos=2048, seq_len=None, heads=4, hidden=512, **params):
    cfg = llama_config(
        theta=theta, max_pos=max_pos, heads=heads, hidden=hidden, rope={"rope_type": rope_type, **params}
    )
    return ROPE_INIT_FUNCTIONS[rope_type](cfg, "cpu", seq_len=seq_len)


@pytest.mark.parametrize("s", [2, 4.5, 8])
def test_pi_equals_transformers_linear(s):
    inv, factor = _transformers("linear", factor=s)
    ours, our_factor = rope.rope_pi(128, 1e4, scale=s)
    torch.testing.assert_close(ours, inv, rtol=0, atol=0)
    assert our_factor == factor == 1.0


@pytest.mark.parametrize("alpha, seq_len", [(2, 4096), (2, 8192), (4, 3000), (1.5, 2049)])
def test_dynamic_ntk_equals_transformers_dynamic(alpha, seq_len):
    inv, _ = _transformers("dynamic", factor=alpha, seq_len=seq_len)
    ours, _ = rope.rope_dynamic_ntk(128, 1e4, alpha=alpha, seq_len=seq_len, trained_len=2048)
    torch.testing.assert_close(ours, inv, rtol=1e-6, atol=0)


@pytest.mark.parametrize("s, L, theta", [(2, 2048, 1e4), (4, 4096, 1e4), (16, 8192, 1e5)])
def test_yarn_equals_transformers_yarn(s, L, theta):
    inv, factor = _transformers("yarn", theta=theta, max_pos=L * s, factor=s, original_max_position_embeddings=L)
    ours, our_factor = rope.rope_yarn(128, theta, scale=s, trained_len=L)
    torch.testing.assert_close(ours, inv, rtol=1e-6, atol=0)
    assert our_factor == pytest.approx(factor, rel=1e-12)


def test_ntk_is_rope_with_the_new_base():
    ours, _ = rope.rope_ntk(128, 1e4, alpha=2)
    expected = 1.0 / (20221.26 ** (torch.arange(0, 128, 2).double() / 128))
    torch.testing.assert_close(ours.double(), expected, rtol=1e-6, atol=0)


def test_scale_one_is_identity_for_every_rope_formula():
    plain = 1.0 / (1e4 ** (torch.arange(0, 64, 2).float() / 64))
    for fn in (
        rope.rope_pi,
        rope.rope_ntk,
        rope.rope_yarn,
        rope.rope_ntk_by_parts,
        rope.rope_llama3,
        rope.rope_dynamic_ntk,
        rope.rope_dynamic_yarn,
    ):
        inv, factor = fn(dim=64, base=1e4, scale=1.0, alpha=1.0, trained_len=2048, seq_len=2048)
        if inv is not None:  # None: "the frequencies as they are" (dynamic methods within L)
            torch.testing.assert_close(inv, plain)
        assert factor == 1.0
    assert rope.rope_none(64, 1e4) == (None, 1.0)


def test_logn_factor():
    f = rope.logn_factor(torch.tensor([0, 99, 1023, 4095]), trained_len=1024)
    assert f[:3].tolist() == [1.0, 1.0, 1.0]
    assert f[3].item() == pytest.approx(math.log(4096) / math.log(1024))


def test_alibi_paper_slopes():
    assert alibi.alibi_slopes(8).tolist() == [1 / 2**h for h in range(1, 9)]
    torch.testing.assert_close(alibi.alibi_slopes(16), torch.tensor([2 ** (-h / 2) for h in range(1, 17)]))


def test_alibi_non_power_of_two_takes_every_other_slope_of_the_doubled_series():
    twelve = alibi.alibi_slopes(12)
    torch.testing.assert_close(twelve[:8], alibi.alibi_slopes(8))
    torch.testing.assert_close(twelve[8:], alibi.alibi_slopes(16)[0::2][:4])


@pytest.mark.parametrize("heads", [8, 16, 32])
def test_ntk_alibi_per_slope_equals_the_head_index_formula_for_power_of_two_heads(heads):
    base = alibi.alibi_slopes(heads)
    h = torch.arange(heads, dtype=torch.float64)  # h - 1
    want = base.double() / 4.0 ** (h / (heads - 1))  # m_h / a^((h-1)/(H-1)), the published formula
    torch.testing.assert_close(alibi.ntk_alibi(base, 4.0).double(), want, rtol=1e-6, atol=0)
    torch.testing.assert_close(alibi.ntk_alibi_index_divisors(heads, 4.0).double(), 4.0 ** (h / (heads - 1)))


@pytest.mark.parametrize("heads", [12, 40])
def test_ntk_alibi_divisors_follow_the_slope_for_other_head_counts(heads):
    slopes = alibi.alibi_slopes(heads)
    divisors = alibi.ntk_alibi_divisors(slopes, 4.0)
    order = torch.argsort(slopes, descending=True)
    assert torch.all(divisors[order][1:] >= divisors[order][:-1])  # smaller slope, larger divisor
    assert divisors[slopes.argmax()] == 1.0 and divisors[slopes.argmin()].item() == pytest.approx(4.0)
    # the extra heads (last in head order) carry the largest slopes: divided by little, not by ~a
    closest = 2 ** int(math.log2(heads))
    assert torch.all(divisors[closest:] < 4.0**0.5)
    assert torch.all(alibi.ntk_alibi_index_divisors(heads, 4.0)[closest:] > 4.0**0.7)  # the literal reading


@pytest.mark.parametrize("heads", [6, 12, 40])
def test_ntk_alibi_per_slope_does_not_depend_on_head_order(heads):
    bloom, mpt = alibi.alibi_slopes(heads), alibi.mpt_alibi_slopes(heads)
    perm = torch.randperm(heads, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(alibi.ntk_alibi(bloom[perm], 3.0), alibi.ntk_alibi(bloom, 3.0)[perm])
    for m, scaled in zip(mpt.tolist(), alibi.ntk_alibi(mpt, 3.0).tolist()):  # same slope, same result
        i = min(range(heads), key=lambda j: abs(bloom[j].item() - m))
        assert scaled == pytest.approx(alibi.ntk_alibi(bloom, 3.0)[i].item(), rel=1e-6)


def test_ntk_alibi_keezen_variant_leaves_the_extra_heads_unscaled():
    divisors = alibi.ntk_alibi_keezen_divisors(40, 2.0)
    assert divisors[32:].tolist() == [1.0] * 8
    torch.testing.assert_close(divisors[:32].double(), 2.0 ** (torch.arange(32, dtype=torch.float64) / 39))
    torch.testing.assert_close(alibi.ntk_alibi_keezen_divisors(8, 2.0), alibi.ntk_alibi_index_divisors(8, 2.0))


def test_ntk_alibi_one_head_is_plain_interpolation():
    assert alibi.ntk_alibi(torch.tensor([0.5]), 3.0).item() == pytest.approx(0.5 / 3)


def test_alibi_interpolation_divides_every_slope():
    torch.testing.assert_close(alibi.alibi_interpolate(alibi.alibi_slopes(8), 2), alibi.alibi_slopes(8) / 2)
