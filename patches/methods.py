"""The built-in scaling methods: one :class:`~evalkit.method.Method` each, with its formula
(referenced lazily: listing methods needs no torch), parameters, summary and source.

The maths is in :mod:`evalkit.patches.rope`, :mod:`evalkit.patches.alibi` and
:mod:`evalkit.patches.attention`; the installers in :mod:`evalkit.patches.rope_models` and
:mod:`evalkit.patches.alibi_models` put it into each model family.
"""

from __future__ import annotations

import importlib
import json
import math
from collections.abc import Callable
from pathlib import Path

from evalkit.errors import EvalkitError
from evalkit.method import MAX_FACTOR, Method, Param, register


def _lazy(module: str, name: str) -> Callable:
    """``evalkit.patches.<module>.<name>``, imported when first called: the registry is read by
    listings and validation that should not wait for torch."""

    def call(*args, **kwargs):
        return getattr(importlib.import_module(f"evalkit.patches.{module}"), name)(*args, **kwargs)

    call.__name__ = name
    return call


def _factor_file(text: str) -> tuple[float, ...]:
    """Per-dimension factors from a JSON file: a list of numbers, an object with ``long_factor``,
    or a checkpoint's config.json (``rope_scaling`` / ``rope_parameters`` holding ``long_factor``)."""
    path = Path(text).expanduser()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise EvalkitError(
            f"cannot read the factors file {text}: {e.strerror}",
            "give a JSON list of factors, or a config.json with rope_scaling.long_factor",
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EvalkitError(f"{text} is not valid JSON ({e})", "give a JSON list of per-dimension factors") from None
    if isinstance(data, dict):
        data = next(
            (
                d
                for d in (data.get("rope_scaling"), data.get("rope_parameters"), data)
                if isinstance(d, dict) and "long_factor" in d
            ),
            {},
        ).get("long_factor")
    if (
        not isinstance(data, list)
        or not data
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in data)
    ):
        raise EvalkitError(
            f"{text} holds no list of positive factors",
            'a JSON list, {"long_factor": [...]}, or a config.json with rope_scaling.long_factor',
        )
    return tuple(float(v) for v in data)


SCALE = Param(
    "scale",
    "s = target / trained length (>= 1)",
    low=1,
    high=MAX_FACTOR,
    derive=lambda v, trained, n: max(1.0, n / trained),
    derived_text="length/L",
    column=True,
)
ALPHA = Param(
    "alpha",
    "NTK factor alpha (>= 1); defaults to the scale",
    low=1,
    high=MAX_FACTOR,
    derive=lambda v, trained, n: v.get("scale", max(1.0, n / trained)),
    derived_text="scale",
    column=True,
    follows="scale",
)
BETA_FAST = Param(
    "beta_fast", "YaRN: rotations within L above which a dimension is kept", default=32.0, low=1e-3, high=1e6
)
BETA_SLOW = Param(
    "beta_slow", "YaRN: rotations within L below which a dimension is interpolated", default=1.0, low=1e-3, high=1e6
)


def _ramp(low: str, high: str) -> Callable[[dict], str | None]:
    """A check that parameter ``low`` stays below ``high`` (the two ends of a ramp)."""
    return lambda v: f"{low} must be below {high}" if v[low] >= v[high] else None


_YARN_RAMP = _ramp("beta_slow", "beta_fast")

for _m in [
    Method(
        "none", "any", "no scaling: the checkpoint as shipped (plain extrapolation past its length)", "-", default=True
    ),
    Method(
        "pi",
        "rope",
        "position interpolation: θ_i / s",
        "Chen et al. 2023, arXiv 2306.15595, eq. 4",
        (SCALE,),
        rope=_lazy("rope", "rope_pi"),
    ),
    Method(
        "ntk",
        "rope",
        "NTK-aware base change: b · α^(d/(d-2))",
        "bloc97, r/LocalLLaMA 2023",
        (ALPHA,),
        rope=_lazy("rope", "rope_ntk"),
        default=True,
    ),
    Method(
        "dynamic-ntk",
        "rope",
        "NTK base from the sequence length l > L: b · (α·l/L - (α-1))^(d/(d-2))",
        "emozilla 2023; transformers `dynamic`",
        (ALPHA,),
        static=False,
        rope=_lazy("rope", "rope_dynamic_ntk"),
    ),
    Method(
        "yarn",
        "rope",
        "NTK-by-parts ramp + attention temperature 0.1 ln s + 1",
        "Peng et al. 2023, arXiv 2309.00071, eq. 17-22",
        (SCALE, BETA_FAST, BETA_SLOW),
        rope=_lazy("rope", "rope_yarn"),
        check=_YARN_RAMP,
    ),
    Method(
        "ntk-by-parts",
        "rope",
        "YaRN's NTK-by-parts ramp without the temperature",
        "Peng et al. 2023, arXiv 2309.00071, sec. 3.2",
        (SCALE, BETA_FAST, BETA_SLOW),
        rope=_lazy("rope", "rope_ntk_by_parts"),
        check=_YARN_RAMP,
    ),
    Method(
        "dynamic-yarn",
        "rope",
        "YaRN with s = l/L from the sequence length l > L",
        "jquesnelle/yarn LlamaDynamicYaRNScaledRotaryEmbedding",
        (BETA_FAST, BETA_SLOW),
        static=False,
        rope=_lazy("rope", "rope_dynamic_yarn"),
        check=_YARN_RAMP,
    ),
    Method(
        "llama3",
        "rope",
        "Meta's frequency bands: θ_i kept (λ < L/high), θ_i/s (λ > L/low), blended between",
        "Llama 3.1; transformers `llama3`",
        (
            SCALE,
            Param("low_freq_factor", "wavelengths above L/low are interpolated", default=1.0, low=1e-3, high=1e6),
            Param("high_freq_factor", "wavelengths below L/high are kept", default=4.0, low=1e-3, high=1e6),
        ),
        rope=_lazy("rope", "rope_llama3"),
        check=_ramp("low_freq_factor", "high_freq_factor"),
    ),
    Method(
        "longrope",
        "rope",
        "per-dimension factors: θ_i / λ_i, cos/sin × sqrt(1 + ln s / ln L)",
        "Ding et al. 2024, arXiv 2402.13753; transformers `longrope`",
        (
            SCALE,
            Param(
                "factors",
                "JSON file of the d/2 factors (a list, long_factor, or a config.json)",
                kind=str,
                load=_factor_file,
            ),
        ),
        rope=_lazy("rope", "rope_longrope"),
    ),
    Method(
        "logn",
        "rope",
        "queries × max(1, ln n / ln L) past the trained length",
        "Chiang & Cholak 2022; Su 2023; Qwen use_logn_attn",
        rope=_lazy("rope", "rope_none"),
        logn=True,
    ),
    Method(
        "self-extend",
        "rope",
        "neighbour attention within W, grouped positions ⌊p/G⌋ beyond, merged per query",
        "Jin et al. 2024, arXiv 2401.01325; datamllab/LongLM",
        (
            Param("window", "W: neighbour window in tokens", kind=int, default=1024, low=1, high=1 << 24),
            Param("group", "G: group size of the far positions", kind=int, default=8, low=1, high=1 << 20),
        ),
        attention=_lazy("attention", "self_extend"),
        check=lambda v: (
            "group must not exceed window (the regions would not meet)" if v["group"] > v["window"] else None
        ),
    ),
    Method(
        "rerope",
        "rope",
        "relative positions clipped at W (two QK products) + logn",
        "Su 2023, bojone/rerope",
        (Param("window", "W: window of exact positions", kind=int, default=512, low=1, high=1 << 24),),
        attention=_lazy("attention", "rerope"),
        logn=True,
    ),
    Method(
        "leaky-rerope",
        "rope",
        "relative positions past W grow at 1/k: W + (i-j-W)/k, + logn",
        "Su 2023, bojone/rerope leaky_rerope_patch",
        (
            Param("window", "W: window of exact positions", kind=int, default=512, low=1, high=1 << 24),
            Param("k", "slope divisor beyond the window", default=16.0, low=1, high=1e6),
        ),
        attention=_lazy("attention", "leaky_rerope"),
        logn=True,
    ),
    Method(
        "ntk-alibi",
        "alibi",
        "per slope: m_h / α^((ln m_max - ln m_h)/(ln m_max - ln m_min))",
        "keezen/ntk_alibi (by slope value)",
        (ALPHA,),
        slopes=_lazy("alibi", "ntk_alibi"),
    ),
    Method(
        "ntk-alibi-index",
        "alibi",
        "by head index: m_h / α^((h-1)/(H-1)) in head order",
        "keezen/ntk_alibi README",
        (ALPHA,),
        slopes=_lazy("alibi", "ntk_alibi_index"),
    ),
    Method(
        "ntk-alibi-keezen",
        "alibi",
        "as keezen/ntk_alibi's code: first 2^⌊log2 H⌋ heads by index, extra heads unscaled",
        "keezen/ntk_alibi code",
        (ALPHA,),
        slopes=_lazy("alibi", "ntk_alibi_keezen"),
    ),
    Method(
        "alibi-pi",
        "alibi",
        "ALiBi interpolation: every slope / s",
        "ALiBi analogue of PI",
        (SCALE,),
        slopes=_lazy("alibi", "alibi_interpolate"),
    ),
]:
    register(_m)
