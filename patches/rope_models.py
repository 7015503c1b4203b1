"""Installers that put RoPE frequencies from :mod:`evalkit.patches.rope` into models.

Each adapter replaces the module that produces cos/sin (what the model reads at
forward time) with a :class:`ScaledRotary` of the same call signature, and puts
the original module back on exit. ``logn`` additionally scales the query
projection through forward hooks.

Dynamic NTK and the KV cache: the frequencies are chosen from the length of the
sequence at its first forward (the prefill, positions starting at 0) and kept for
the cached decode steps that follow, so every key and query of one sequence is
rotated with the same base. (transformers' ``dynamic`` type recomputes the base
at each decode step while the cached keys keep the old rotation: transformers
issue #25104.)
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from evalkit.errors import EvalkitError
from evalkit.family import config_dict, family_of, rope_lengths, stated_length
from evalkit.patches import attention, rope
from evalkit.patches.logn import _learn_token_axes, add_logn_hooks, query_target
from evalkit.registry import INSTALLERS
from evalkit.swap import swap

logger = logging.getLogger(__name__)


def length_dependent(rope_type: str) -> bool:
    """A shipped RoPE type that chooses its frequencies per sequence (transformers: per forward)."""
    return "dynamic" in rope_type or rope_type == "longrope"


class Shipped:
    """The frequencies a checkpoint ships: plain RoPE (``rope_type`` "default"), or its own scaling
    (``llama3``, ``yarn``, ``longrope``, ``linear``, ``dynamic``, ...) computed by transformers'
    own ``ROPE_INIT_FUNCTIONS``. ``rope_reset``: plain RoPE with the checkpoint's base instead.
    ``layer_type``: the layer type of a per-type rotary (Gemma 3's full-attention layers)."""

    def __init__(
        self, rotary: nn.Module, config, dim: int, base: float, rope_reset: bool = False, layer_type: str | None = None
    ):
        self.rope_type = str(getattr(rotary, "rope_type", "default"))
        self.config, self.dim, self.base, self.layer_type = config, dim, base, layer_type
        if rope_reset or self.rope_type == "default":
            self.rope_type = "default"
            self.inv_freq = (
                rope.default_inv_freq(dim, base)
                if rope_reset
                else getattr(rotary, "original_inv_freq", rotary.inv_freq).detach().float().cpu()
            )
            self.factor = 1.0
        else:
            self.inv_freq, self.factor = self._transformers(None)
        self.plain = self.rope_type == "default"
        self.static = not length_dependent(self.rope_type)

    def _transformers(self, seq_len: int | None) -> tuple[torch.Tensor, float]:
        from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

        kwargs = {"layer_type": self.layer_type} if self.layer_type else {}
        inv_freq, factor = ROPE_INIT_FUNCTIONS[self.rope_type](self.config, "cpu", seq_len=seq_len, **kwargs)
        return inv_freq.float().cpu(), float(factor)

    def for_length(self, seq_len: int) -> tuple[torch.Tensor, float]:
        return (self.inv_freq, self.factor) if self.static else self._transformers(seq_len)


def _load_values(method, values: dict) -> dict:
    """Parameter values as the formula reads them (a factors file -> its numbers)."""
    return {k: (method.param(k).load(v) if method.param(k).load else v) for k, v in values.items()}


class RopeSchedule:
    """The (inv_freq, attention factor) a method gives for a sequence length, on top of what the
    checkpoint ships. On plain RoPE that is the method's formula. On a shipped scaling, each
    shipped frequency is multiplied by the factor the method applies to the plain frequency
    (θ'_i · θ^m_i / θ_i; PI: θ'_i / s) and the attention factors multiply; L is the length the
    shipped scaling was made for. A formula's None means "the frequencies as they are"."""

    def __init__(self, method, values: dict, dim: int, base: float, trained_len: int, shipped: Shipped):
        self.method, self.dim, self.base, self.trained_len = method, dim, base, trained_len
        self.values, self.shipped = _load_values(method, values), shipped
        self._static = self._compute(trained_len) if method.static and shipped.static else None

    def _compute(self, seq_len: int) -> tuple[torch.Tensor, float]:
        formula = self.method.rope or rope.rope_none
        inv, factor = formula(
            dim=self.dim, base=self.base, trained_len=self.trained_len, seq_len=seq_len, **self.values
        )
        shipped_inv, shipped_factor = self.shipped.for_length(seq_len)
        if inv is None:
            return shipped_inv, shipped_factor * factor
        if self.shipped.plain:
            return inv, factor
        return shipped_inv * (inv / rope.default_inv_freq(self.dim, self.base)), shipped_factor * factor

    def for_length(self, seq_len: int) -> tuple[torch.Tensor, float]:
        return self._static if self._static is not None else self._compute(seq_len)


class ScaledRotary(nn.Module):
    """Drop-in for transformers' ``*RotaryEmbedding``: ``forward(x, position_ids)``."""

    def __init__(self, schedule: RopeSchedule):
        super().__init__()
        self.schedule = schedule
        self.current = schedule.for_length(schedule.trained_len)
        self.positions: torch.Tensor | None = None  # (B, T) of the last forward, for logn and attention hooks

    def select(self, first_position: int, seq_len: int) -> tuple[torch.Tensor, float]:
        if first_position == 0:  # a new sequence (prefill): choose its frequencies
            self.current = self.schedule.for_length(seq_len)
        return self.current

    def forward(self, x, position_ids, layer_type=None):
        first, last = int(position_ids.min()), int(position_ids.max())
        inv_freq, factor = self.select(first, last + 1)
        self.positions = position_ids
        return rope.cos_sin(position_ids.to(x.device), inv_freq, factor, x.dtype)  # (B, T, d) each


def check_frequencies(inv_freq: torch.Tensor, expected: torch.Tensor, where: str) -> int:
    """The rotary dimension, after checking the model holds the frequencies evalkit computed for it."""
    if inv_freq.numel() != expected.numel() or not torch.allclose(
        inv_freq.detach().float().cpu(), expected, rtol=1e-2, atol=0
    ):  # bf16 buffers round to 3 digits
        raise EvalkitError(
            f"{where} does not hold the RoPE frequencies its config describes",
            "the checkpoint's rotary module was changed after loading, or its config is wrong",
        )
    return 2 * inv_freq.numel()


def check_layout(rotary: nn.Module, where: str, positions: int = 64) -> None:
    """Refuse a rotary module whose cos/sin are not the rotate-half layout that :class:`ScaledRotary`
    produces (Cohere interleaves its frequencies, for one): replacing it would rotate every query
    and key wrongly without any error."""
    inv_freq = rotary.inv_freq.detach().float()
    pos = torch.arange(positions, device=inv_freq.device)[None]
    try:
        cos, sin = rotary(torch.zeros(1, 1, device=inv_freq.device), pos)
    except (TypeError, ValueError, RuntimeError, IndexError) as e:  # not forward(x, position_ids) with (B, T)
        raise EvalkitError(
            f"{where} of {type(rotary).__name__} is not called as forward(x, position_ids)",
            "evalkit patches rotate-half RoPE as in Llama, Mistral and Qwen2",
        ) from e
    factor = float(getattr(rotary, "attention_scaling", 1.0) or 1.0)
    want_cos, want_sin = rope.cos_sin(pos, rotary.inv_freq.detach().float(), factor)
    if cos.shape != want_cos.shape or not (
        torch.allclose(cos.float(), want_cos, atol=1e-4) and torch.allclose(sin.float(), want_sin, atol=1e-4)
    ):
        raise EvalkitError(
            f"{where} ({type(rotary).__name__}) lays out its cos/sin differently from "
            "rotate-half RoPE (interleaved, as in Cohere?); evalkit's replacement would be wrong",
            "evalkit patches rotate-half RoPE as in Llama, Mistral and Qwen2",
        )


def rope_theta(config, layer_type: str | None = None) -> float | None:
    """The RoPE base in transformers 5.x (``rope_parameters``, per layer type where the model has
    several) or 4.x (``rope_theta``)."""
    params = getattr(config, "rope_parameters", None)
    if isinstance(params, dict) and layer_type in params:
        params = params[layer_type]
    if isinstance(params, dict) and "rope_theta" in params:
        return float(params["rope_theta"])
    theta = getattr(config, "rope_theta", None)
    return float(theta) if theta is not None else None


@dataclass(frozen=True)
class RopeAdapter:
    name: str
    matches: Callable[[nn.Module], bool]
    install_fn: Callable
    after_load_fn: Callable | None = None
    encoding: str = "rope"

    def trained_len(self, model, rope_reset: bool = False) -> int:
        """The length the checkpoint (with its shipped scaling) is made for; its pretraining
        length under ``rope_reset`` (see :mod:`evalkit.families`)."""
        config = config_dict(model.config)
        stated = stated_length(config, family_of(model))
        extended, original = rope_lengths(config, int(stated))
        return original if rope_reset else extended

    def shipped_type(self, model) -> str:
        """The RoPE scaling the checkpoint ships ("default" for plain RoPE)."""
        owner = _hf_rotary_owner(model)
        if owner is None:
            return "default"
        kind = getattr(owner.rotary_emb, "rope_type", "default")
        return str(kind[FULL] if isinstance(kind, dict) else kind)

    def length_independent(self, model, rope_reset: bool = False) -> bool:
        """The checkpoint as shipped gives position i the same output at every length."""
        return rope_reset or not length_dependent(self.shipped_type(model))

    def install(self, model, method, resolved, stack: contextlib.ExitStack, rope_reset: bool = False) -> None:
        self.install_fn(model, method, resolved, stack, rope_reset)

    def after_load(self, model) -> None:
        if self.after_load_fn:
            self.after_load_fn(model)

    def ensure_length(self, model, length: int) -> None:
        """RoPE models take any length (their frequencies are computed, not tabled)."""


# --- transformers' RoPE families (one rotary module on the base model) ---


def _hf_rotary_owner(model) -> nn.Module | None:
    """The module holding the model's rotary embedding: its base model (``model``, ``gpt_neox``,
    ``transformer``; Gemma 3 under 4.57 names a prefix it does not use, hence ``model`` too)."""
    for base in (getattr(model, "base_model", model), getattr(model, "model", None)):
        rot = getattr(base, "rotary_emb", None)
        if rot is not None and (hasattr(rot, "inv_freq") or _typed(rot)):
            return base
    return None


FULL = "full_attention"  # the layer type whose rotary a method scales in a per-type rotary


def _typed(rotary) -> bool:
    """A rotary module with frequencies per layer type (Gemma 3 in transformers 5)."""
    return isinstance(getattr(rotary, "rope_type", None), dict) and FULL in rotary.rope_type


class TypedView(nn.Module):
    """One layer type of a per-type rotary, seen as a plain rotary module (for the checks)."""

    def __init__(self, rotary: nn.Module, layer_type: str):
        super().__init__()
        self.__dict__["typed"] = rotary  # not a submodule: the view owns nothing
        self.layer_type, self.rope_type = layer_type, rotary.rope_type[layer_type]
        self.inv_freq = getattr(rotary, f"{layer_type}_inv_freq")
        self.original_inv_freq = getattr(rotary, f"{layer_type}_original_inv_freq", self.inv_freq)
        self.attention_scaling = getattr(rotary, f"{layer_type}_attention_scaling", 1.0)

    def forward(self, x, position_ids):
        return self.typed(x, position_ids, self.layer_type)


class PerTypeRotary(nn.Module):
    """Drop-in for a per-type rotary: the scaled frequencies for the full-attention layers, the
    checkpoint's own for the others (sliding layers never see distances past their window)."""

    def __init__(self, original: nn.Module, scaled: ScaledRotary):
        super().__init__()
        self.original, self.scaled = original, scaled

    def forward(self, x, position_ids, layer_type=None):
        if layer_type == FULL:
            return self.scaled(x, position_ids)
        return self.original(x, position_ids, layer_type)


def hf_attention_modules(owner: nn.Module) -> list[nn.Module]:
    """Each decoder layer's attention module (Llama-like: ``layers[i].self_attn``; GPT-NeoX:
    ``layers[i].attention``; Falcon: ``h[i].self_attention``)."""
    layers = getattr(owner, "layers", None) or getattr(owner, "h", None) or []
    found = [
        next(
            (
                getattr(layer, n)
                for n in ("self_attn", "attention", "self_attention")
                if isinstance(getattr(layer, n, None), nn.Module)
            ),
            None,
        )
        for layer in layers
    ]
    if not found or any(a is None for a in found):
        raise EvalkitError(
            f"evalkit cannot find the attention modules of {type(owner).__name__}",
            "use a method that only changes the RoPE frequencies",
        )
    return found


def _install_hf(model, method, resolved, stack, rope_reset: bool) -> None:

    owner = _hf_rotary_owner(model)
    rotary = owner.rotary_emb
    layer_type = FULL if _typed(rotary) else None
    view = TypedView(rotary, FULL) if layer_type else rotary
    base = rope_theta(model.config, layer_type) or 10000.0
    original = getattr(view, "original_inv_freq", view.inv_freq)
    dim = 2 * original.numel()  # the rotary dimension (partial rotary: part of the head)
    shipped = Shipped(view, model.config, dim, base, layer_type=layer_type)
    # plain RoPE: the buffer must be θ_i of the config's base, which every formula starts from
    stated = rope.default_inv_freq(dim, base) if shipped.plain else shipped.inv_freq
    check_frequencies(original, stated, "model.rotary_emb")
    check_layout(view, "model.rotary_emb")
    if rope_reset:
        shipped = Shipped(view, model.config, dim, base, rope_reset=True, layer_type=layer_type)
    scaled = ScaledRotary(RopeSchedule(method, resolved.values, dim, base, resolved.trained_len, shipped))
    attentions = hf_attention_modules(owner) if (method.logn or method.attention) else []
    model_type = getattr(model.config, "model_type", "")
    targets = [query_target(a, model_type) for a in attentions] if method.logn else []
    if method.attention:
        region = method.attention(trained_len=resolved.trained_len, **resolved.values)
        for a in attentions:
            attention.check_supported(a, method.name, model_type)
    swap(stack, owner, "rotary_emb", PerTypeRotary(rotary, scaled) if layer_type else scaled)
    if method.logn:
        axes = add_logn_hooks(stack, targets, scaled, resolved.trained_len)
        if any(target is getattr(a, "q_norm", None) for a, (target, _) in zip(attentions, targets)):
            _learn_token_axes(model, attentions, axes)
    if method.attention:
        for a in attentions:
            swap(stack, a, "forward", attention.two_region_forward(a, region, scaled, resolved.trained_len))


ADAPTERS = (RopeAdapter("hf-rope", lambda m: _hf_rotary_owner(m) is not None, _install_hf),)
for _installer in ADAPTERS:
    INSTALLERS.add(_installer.name, _installer)
