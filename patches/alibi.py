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


def alibi_interpolate(slopes: torch.Tensor, a: float) -> torch.Tensor:
    """ALiBi interpolation: every slope divided by a, i.e. distances scaled by 1/a
    (the ALiBi analogue of position interpolation)."""
    return slopes / a


def ntk_alibi_divisors(n_heads: int, a: float) -> torch.Tensor:
    """NTK-ALiBi divisors a^((h-1)/(H-1)) for h = 1..H in head order: head 1 keeps
    its slope, head H is divided by a (the NTK-aware idea applied to slopes:
    high-frequency heads extrapolate, low-frequency heads interpolate)."""
    if n_heads == 1:
        return torch.tensor([a], dtype=torch.float32)
    h = torch.arange(n_heads, dtype=torch.float64)
    return (a ** (h / (n_heads - 1))).to(torch.float32)


def ntk_alibi(slopes: torch.Tensor, a: float) -> torch.Tensor:
    """NTK-ALiBi: m_h / a^((h-1)/(H-1)) for every head, the extra heads of a
    non-power-of-two head count included."""
    return slopes / ntk_alibi_divisors(len(slopes), a)


def mpt_alibi_slopes(n_heads: int, alibi_bias_max: float = 8) -> torch.Tensor:
    """MPT's slopes (mosaicml ``attention.py``), which differ from the paper's for
    non-power-of-two head counts: 2^(-b·h/H') over H' = 2^⌈log2 H⌉ heads, then the
    odd-indexed slopes first and the even ones after, cut to H."""
    n_pow2 = 2 ** math.ceil(math.log2(n_heads))
    h = torch.arange(1, n_pow2 + 1, dtype=torch.float32)
    slopes = 1.0 / torch.pow(2, h * (alibi_bias_max / n_pow2))
    if n_pow2 != n_heads:
        slopes = torch.cat([slopes[1::2], slopes[::2]])[:n_heads]
    return slopes
