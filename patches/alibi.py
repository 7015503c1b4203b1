"""ALiBi slopes as pure functions of plain numbers.

ALiBi (Press et al. 2022, arXiv 2108.12409, sec. 3) adds ``-m_h · distance`` to
the attention logits of head h. The installers in this package only put the
slopes returned here into a model.
"""

from __future__ import annotations

import math

import torch


def alibi_slopes(n_heads: int) -> torch.Tensor:
    """The ALiBi paper's slopes, in head order (float32, shape ``(n_heads,)``).

    For H a power of two: m_h = 2^(-8h/H), h = 1..H. Otherwise the first
    2^⌊log2 H⌋ heads take that series and the extra heads every other slope of
    the series for 2·2^⌊log2 H⌋ heads (the paper's code, BLOOM, Baichuan).
    """

    def power_of_two_series(n: int) -> list[float]:
        return [2.0 ** (-8.0 * h / n) for h in range(1, n + 1)]

    closest = 2 ** math.floor(math.log2(n_heads))
    slopes = power_of_two_series(closest)
    if closest != n_heads:
        slopes += power_of_two_series(2 * closest)[0::2][: n_heads - closest]
    return torch.tensor(slopes, dtype=torch.float32)


def alibi_interpolate(slopes: torch.Tensor, scale: float) -> torch.Tensor:
    """ALiBi interpolation: every slope divided by s, i.e. distances scaled by 1/s
    (the ALiBi analogue of position interpolation)."""
    return slopes / scale


def ntk_alibi_divisors(slopes: torch.Tensor, a: float) -> torch.Tensor:
    """NTK-ALiBi divisors that follow each head's slope, log-linearly from the largest
    slope (divisor 1: the most local head extrapolates) to the smallest (divisor a: the
    most global head interpolates): a^((ln m_max − ln m_h) / (ln m_max − ln m_min)).

    For a power-of-two head count in the paper's order this is exactly a^((h−1)/(H−1)),
    since ln m_h = −(8h/H)·ln 2 is linear in h. For other head counts the extra heads
    carry the largest slopes (40 heads: 2^(−1/8), 2^(−3/8), …) yet sit last in head
    order; reading h as the head index would divide them by ≈ a, interpolating the
    highest frequencies. Depends only on the slope values, so any head order (BLOOM,
    MPT, Baichuan) gives the same slope its same divisor. One head, or all slopes
    equal: every divisor is a (plain interpolation)."""
    logs = torch.log(slopes.to(torch.float64))
    span = logs.max() - logs.min()
    if len(slopes) == 1 or float(span) == 0.0:
        return torch.full_like(slopes, a, dtype=torch.float32)
    return (a ** ((logs.max() - logs) / span)).to(torch.float32)


def ntk_alibi_index_divisors(n_heads: int, a: float) -> torch.Tensor:
    """The literal head-index reading of NTK-ALiBi (keezen/ntk_alibi README):
    a^((h−1)/(H−1)) for h = 1..H in head order, the extra heads of a
    non-power-of-two H included."""
    if n_heads == 1:
        return torch.tensor([a], dtype=torch.float32)
    h = torch.arange(n_heads, dtype=torch.float64)
    return (a ** (h / (n_heads - 1))).to(torch.float32)


def ntk_alibi_keezen_divisors(n_heads: int, a: float) -> torch.Tensor:
    """The published code's variant (keezen/ntk_alibi, BLOOM ``build_alibi_tensor``):
    the first 2^⌊log₂H⌋ heads divided by a^((h−1)/(H−1)) (H = all heads), the extra
    heads of a non-power-of-two H left unscaled (its "todo")."""
    divisors = ntk_alibi_index_divisors(n_heads, a)
    closest = 2 ** math.floor(math.log2(n_heads))
    divisors[closest:] = 1.0
    return divisors


def ntk_alibi(slopes: torch.Tensor, alpha: float) -> torch.Tensor:
    """NTK-ALiBi, per slope: m_h / a^((ln m_max − ln m_h)/(ln m_max − ln m_min))."""
    return slopes / ntk_alibi_divisors(slopes, alpha)


def ntk_alibi_index(slopes: torch.Tensor, alpha: float) -> torch.Tensor:
    """NTK-ALiBi by head index: m_h / a^((h−1)/(H−1)) in head order."""
    return slopes / ntk_alibi_index_divisors(len(slopes), alpha)


def ntk_alibi_keezen(slopes: torch.Tensor, alpha: float) -> torch.Tensor:
    """NTK-ALiBi as keezen/ntk_alibi's code: the extra heads of a non-power-of-two H unscaled."""
    return slopes / ntk_alibi_keezen_divisors(len(slopes), alpha)


def mpt_alibi_slopes(n_heads: int, alibi_bias_max: float = 8) -> torch.Tensor:
    """MPT's slopes (mosaicml ``attention.py``): 2^(-b·h/H') over H' = 2^⌈log2 H⌉ heads, then
    the odd-indexed slopes first and the even ones after, cut to H. Computed another way
    than the paper's, but equal to :func:`alibi_slopes` in value and order for every H
    from 1 to 128 with b = 8 (checked)."""
    n_pow2 = 2 ** math.ceil(math.log2(n_heads))
    h = torch.arange(1, n_pow2 + 1, dtype=torch.float32)
    slopes = 1.0 / torch.pow(2, h * (alibi_bias_max / n_pow2))
    if n_pow2 != n_heads:
        slopes = torch.cat([slopes[1::2], slopes[::2]])[:n_heads]
    return slopes
