"""RoPE scaling as pure functions of plain numbers.

Every function takes the rotary dimension ``dim`` (the whole head, or only its
rotated part under partial rotary), the rotary ``base`` and the method's numbers,
and returns ``(inv_freq, attention_factor)``: the inverse frequencies θ_i (a
float32 tensor of ``dim // 2`` values) and the factor that multiplies cos and sin
(1.0 unless the method says otherwise). The installers in this package only put
these tensors into a model; no maths lives there.

RoPE: θ_i = base^(-2i/d), i = 0 .. d/2-1 (Su et al. 2021, RoFormer, eq. 15).
"""

from __future__ import annotations

import math

import torch

from evalkit.errors import EvalkitError


def default_inv_freq(dim: int, base: float) -> torch.Tensor:
    """θ_i = base^(-2i/d), computed as transformers does (float32 exponent)."""
    return 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))


def rope_none(dim: int, base: float, **_) -> tuple[None, float]:
    """Plain extrapolation: the trained frequencies (None: whatever the model holds), unchanged."""
    return None, 1.0


def rope_pi(dim: int, base: float, scale: float, **_) -> tuple[torch.Tensor, float]:
    """Position interpolation, Chen et al. 2023 (arXiv 2306.15595) eq. 4:
    positions m -> m / s, i.e. every frequency divided by s."""
    return default_inv_freq(dim, base) / scale, 1.0


def ntk_base(dim: int, base: float, alpha: float) -> float:
    """NTK-aware base change (bloc97, r/LocalLLaMA 2023): b' = b * α^(d/(d-2))."""
    return base * alpha ** (dim / (dim - 2))


def rope_ntk(dim: int, base: float, alpha: float, **_) -> tuple[torch.Tensor, float]:
    """Fixed NTK-aware scaling: RoPE with the base b·α^(d/(d-2))."""
    return default_inv_freq(dim, ntk_base(dim, base, alpha)), 1.0


def dynamic_ntk_base(dim: int, base: float, alpha: float, seq_len: int, trained_len: int) -> float:
    """Dynamic NTK (emozilla 2023; transformers' ``dynamic`` rope type):
    for l > L, b' = b * ((α·l/L) - (α-1))^(d/(d-2)); the original base for l <= L."""
    if seq_len <= trained_len:
        return base
    return base * ((alpha * seq_len / trained_len) - (alpha - 1)) ** (dim / (dim - 2))


def rope_dynamic_ntk(
    dim: int, base: float, alpha: float, seq_len: int, trained_len: int, **_
) -> tuple[torch.Tensor | None, float]:
    """Dynamic NTK for a sequence of ``seq_len`` tokens; the trained frequencies (None) for l <= L."""
    if seq_len <= trained_len:
        return None, 1.0
    return default_inv_freq(dim, dynamic_ntk_base(dim, base, alpha, seq_len, trained_len)), 1.0


def yarn_mscale(scale: float) -> float:
    """YaRN attention temperature, Peng et al. 2023 (arXiv 2309.00071) eq. 22:
    sqrt(1/t) = 0.1·ln(s) + 1, applied to cos and sin (so to q and k)."""
    return 1.0 if scale <= 1 else 0.1 * math.log(scale) + 1.0


def yarn_correction_range(
    dim: int, base: float, trained_len: int, beta_fast: float = 32, beta_slow: float = 1
) -> tuple[int, int]:
    """Dimensions between which YaRN ramps from interpolation to extrapolation
    (YaRN eq. 17-18): cd(n) = d·ln(L / (2π·n)) / (2·ln b), floored / ceiled and
    clamped to [0, d-1], as in transformers' ``yarn`` rope type."""

    def correction_dim(n_rot: float) -> float:
        return dim * math.log(trained_len / (n_rot * 2 * math.pi)) / (2 * math.log(base))

    low = math.floor(correction_dim(beta_fast))
    high = math.ceil(correction_dim(beta_slow))
    return max(low, 0), min(high, dim - 1)


def ntk_by_parts_inv_freq(
    dim: int, base: float, scale: float, trained_len: int, beta_fast: float = 32, beta_slow: float = 1
) -> torch.Tensor:
    """YaRN's "NTK-by-parts" frequencies (YaRN eq. 19-20): high-frequency dimensions
    (many rotations within L) are kept, low-frequency ones are interpolated by s, with
    a linear ramp between ``low`` and ``high``."""
    inv = default_inv_freq(dim, base)
    low, high = yarn_correction_range(dim, base, trained_len, beta_fast, beta_slow)
    if low == high:
        high += 0.001  # avoid a division by zero, as transformers does
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    extrapolation_weight = 1 - ramp  # 1 for the first (high-frequency) dimensions
    return (inv / scale) * (1 - extrapolation_weight) + inv * extrapolation_weight


def rope_ntk_by_parts(
    dim: int, base: float, scale: float, trained_len: int, beta_fast: float = 32, beta_slow: float = 1, **_
) -> tuple[torch.Tensor, float]:
    """NTK-by-parts alone: YaRN without its attention temperature (YaRN sec. 3.2)."""
    return ntk_by_parts_inv_freq(dim, base, scale, trained_len, beta_fast, beta_slow), 1.0


def rope_yarn(
    dim: int, base: float, scale: float, trained_len: int, beta_fast: float = 32, beta_slow: float = 1, **_
) -> tuple[torch.Tensor, float]:
    """YaRN: NTK-by-parts (eq. 19-20) plus the attention temperature (eq. 22)."""
    return ntk_by_parts_inv_freq(dim, base, scale, trained_len, beta_fast, beta_slow), yarn_mscale(scale)


def rope_dynamic_yarn(
    dim: int, base: float, trained_len: int, seq_len: int, beta_fast: float = 32, beta_slow: float = 1, **_
) -> tuple[torch.Tensor | None, float]:
    """Dynamic YaRN (jquesnelle/yarn ``LlamaDynamicYaRNScaledRotaryEmbedding``): YaRN with
    s = l / L for a sequence of l > L tokens; the trained frequencies (None) for l <= L."""
    if seq_len <= trained_len:
        return None, 1.0
    return rope_yarn(dim, base, seq_len / trained_len, trained_len, beta_fast, beta_slow)


def rope_llama3(
    dim: int, base: float, scale: float, trained_len: int, low_freq_factor: float = 1, high_freq_factor: float = 4, **_
) -> tuple[torch.Tensor, float]:
    """Meta's Llama 3.1 frequency bands (transformers ``_compute_llama3_parameters``): with
    wavelength λ_i = 2π/θ_i, keep θ_i where λ_i < L/high, use θ_i/s where λ_i > L/low, and
    in between blend (1-γ)·θ_i/s + γ·θ_i with γ = (L/λ_i - low)/(high - low)."""
    inv = default_inv_freq(dim, base)
    wavelen = 2 * math.pi / inv
    low_wavelen, high_wavelen = trained_len / low_freq_factor, trained_len / high_freq_factor
    scaled = torch.where(wavelen > low_wavelen, inv / scale, inv)
    gamma = (trained_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed = (1 - gamma) * scaled / scale + gamma * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return torch.where(medium, smoothed, scaled), 1.0


def longrope_attention_factor(scale: float, trained_len: int) -> float:
    """LongRoPE's attention factor (Ding et al. 2024; transformers ``longrope``):
    sqrt(1 + ln s / ln L), 1 for s <= 1."""
    return 1.0 if scale <= 1 else math.sqrt(1 + math.log(scale) / math.log(trained_len))


def rope_longrope(
    dim: int, base: float, scale: float, trained_len: int, factors: tuple[float, ...], **_
) -> tuple[torch.Tensor, float]:
    """LongRoPE with given per-dimension factors λ_i (Ding et al. 2024, arXiv 2402.13753):
    θ_i / λ_i, cos and sin times sqrt(1 + ln s / ln L)."""
    if len(factors) != dim // 2:
        raise EvalkitError(
            f"longrope needs {dim // 2} factors (one per rotary frequency), the file gives {len(factors)}",
            "give the factors searched for this model's rotary dimension",
        )
    ext = torch.tensor(factors, dtype=torch.float32)
    return 1.0 / (ext * base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim)), longrope_attention_factor(
        scale, trained_len
    )


def logn_factor(position: torch.Tensor, trained_len: int) -> torch.Tensor:
    """Log-n attention scaling (Chiang & Cholak 2022; Su 2023; Qwen ``use_logn_attn``):
    the query at 1-based position n is multiplied by max(1, ln n / ln L)."""
    n = position.to(torch.float32) + 1
    return torch.clamp(torch.log(n) / math.log(trained_len), min=1.0)


def cos_sin(positions: torch.Tensor, inv_freq: torch.Tensor, factor: float = 1.0, dtype=None):
    """cos and sin (..., T, d) of rotate-half RoPE at ``positions`` (..., T), as transformers builds
    them: the frequencies over both halves, times the attention factor, then cast to ``dtype``."""
    freqs = positions.float()[..., None] * inv_freq.to(positions.device)  # (..., T, d/2)
    emb = torch.cat((freqs, freqs), dim=-1)  # (..., T, d)
    cos, sin = emb.cos() * factor, emb.sin() * factor
    return (cos, sin) if dtype is None else (cos.to(dtype), sin.to(dtype))
