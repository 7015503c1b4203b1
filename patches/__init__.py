"""Scaling methods: one registry, and ``patched`` to apply any of them to a model.

    with evalkit.patched(model, "ntk", alpha=2.0, trained_len=4096):
        logits = model(ids).logits

The maths is in :mod:`evalkit.patches.rope` and :mod:`evalkit.patches.alibi`;
the installers in :mod:`evalkit.patches.rope_models` and
:mod:`evalkit.patches.alibi_models` put it into each model family and restore
the exact originals when the block exits.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Iterator

from evalkit.errors import EvalkitError
from evalkit.registry import Registry


@dataclass(frozen=True)
class Method:
    name: str
    encoding: str  # "rope", "alibi" or "any" (only "none")
    reads: tuple[str, ...]  # which of "scale", "alpha" the method uses
    static: bool  # True: position i's output does not depend on the sequence length
    summary: str


METHODS: Registry[Method] = Registry("method")
for _m in [
    Method("none", "any", (), True, "no scaling: plain extrapolation past the trained length"),
    Method("pi", "rope", ("scale",), True, "position interpolation: inv_freq / s (Chen et al. 2023)"),
    Method("ntk", "rope", ("alpha",), True, "NTK-aware base change: b * alpha^(d/(d-2))"),
    Method("dynamic-ntk", "rope", ("alpha",), False,
           "dynamic NTK: base from the sequence length, b * (alpha*l/L - (alpha-1))^(d/(d-2)) for l > L"),
    Method("yarn", "rope", ("scale",), True,
           "YaRN: NTK-by-parts ramp + attention temperature 0.1 ln s + 1 (Peng et al. 2023)"),
    Method("logn", "rope", (), True, "log-n scaling of queries past the trained length: q * max(1, ln n / ln L)"),
    Method("ntk-alibi", "alibi", ("alpha",), True,
           "NTK-ALiBi per slope: m_h / alpha^((ln m_max - ln m_h)/(ln m_max - ln m_min)); largest slope kept, "
           "smallest / alpha"),
    Method("ntk-alibi-index", "alibi", ("alpha",), True,
           "NTK-ALiBi by head index: m_h / alpha^((h-1)/(H-1)) in head order (extra heads of non-power-of-two H / ~alpha)"),
    Method("ntk-alibi-keezen", "alibi", ("alpha",), True,
           "NTK-ALiBi as in keezen/ntk_alibi's code: first 2^floor(log2 H) heads by index, extra heads unscaled"),
    Method("alibi-pi", "alibi", ("scale",), True, "ALiBi interpolation: every slope / s"),
]:
    METHODS.add(_m.name, _m)


def methods_for(encoding: str) -> list[str]:
    return [n for n, m in METHODS.items() if m.encoding in (encoding, "any")]


def check_applicable(method: str, encoding: str) -> Method:
    """The method, or a one-line error naming the methods that do apply."""
    m = METHODS.get(method)
    if m.encoding not in (encoding, "any"):
        raise EvalkitError(
            f"method {method!r} is for {m.encoding} models, this model uses {encoding}",
            f"methods for {encoding}: {', '.join(methods_for(encoding))}",
        )
    return m


MAX_FACTOR = 1e6


@dataclass(frozen=True)
class ScalingParams:
    """The numbers a method reads. ``scale`` = target / trained length (>= 1),
    ``alpha`` defaults to ``scale``; ``trained_len`` is L in every formula."""

    scale: float
    alpha: float
    trained_len: int

    def __post_init__(self):
        if self.trained_len <= 0:
            raise EvalkitError(f"trained length must be positive, got {self.trained_len}",
                               "pass --trained-len")
        for name in ("scale", "alpha"):
            value = getattr(self, name)
            if not math.isfinite(value):
                raise EvalkitError(f"{name} must be a finite number, got {value}", "omit it for the default")
            if value < 1:
                raise EvalkitError(f"{name} must be >= 1, got {value}",
                                   "scaling factors below 1 shrink the context; omit it for the default")
            if value > MAX_FACTOR:  # beyond this the formulas overflow float64 (NTK: b·α^(d/(d-2)))
                raise EvalkitError(f"{name} must be at most {MAX_FACTOR:g}, got {value:g}",
                                   "a context of a million times the trained length is not a sane target")


def resolve_params(trained_len: int, target_len: int | None = None,
                   scale: float | None = None, alpha: float | None = None) -> ScalingParams:
    """Fill in the defaults: scale = max(1, target/trained), alpha = scale."""
    if scale is None:
        scale = max(1.0, target_len / trained_len) if target_len else 1.0
    return ScalingParams(float(scale), float(alpha if alpha is not None else scale), int(trained_len))


@contextlib.contextmanager
def patched(model, method: str, *, trained_len: int | None = None, target_len: int | None = None,
            scale: float | None = None, alpha: float | None = None) -> Iterator[ScalingParams]:
    """Apply ``method`` to ``model`` for the duration of the block; restore the
    originals exactly on exit (also on error). Yields the resolved parameters."""
    adapter = find_adapter(model)
    m = check_applicable(method, adapter.encoding)
    if trained_len is None:
        trained_len = adapter.trained_len(model)
    params = resolve_params(trained_len, target_len, scale, alpha)
    with contextlib.ExitStack() as stack:
        if m.name != "none":
            adapter.install(model, m.name, params, stack)
        yield params


def find_adapter(model):
    """The installer for this model, chosen on the model's own facts."""
    from evalkit.patches import alibi_models, rope_models

    for adapter in (*alibi_models.ADAPTERS, *rope_models.ADAPTERS):
        if adapter.matches(model):
            return adapter
    raise EvalkitError(
        f"evalkit cannot patch a {type(model).__name__}: its position encoding is not laid out as in any "
        "supported family",
        "supported: LLaMA-architecture models (Llama, Mistral, Qwen2), Baichuan (7B, 13B, Baichuan2), BLOOM, MPT",
    )
