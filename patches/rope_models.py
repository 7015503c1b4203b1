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
import inspect
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from evalkit.errors import EvalkitError
from evalkit.patches import rope
from evalkit.patches._swap import swap

FORMULAS = {
    "pi": rope.rope_pi,
    "ntk": rope.rope_ntk,
    "dynamic-ntk": rope.rope_dynamic_ntk,
    "yarn": rope.rope_yarn,
    "logn": rope.rope_none,
}


class RopeSchedule:
    """The (inv_freq, attention factor) a method gives for a sequence length."""

    def __init__(self, method: str, dim: int, base: float, params, original_inv_freq: torch.Tensor):
        self.method, self.dim, self.base, self.params = method, dim, base, params
        self.original = original_inv_freq.detach().float().cpu()
        self._static = None if method == "dynamic-ntk" else self._compute(params.trained_len)

    def _compute(self, seq_len: int) -> tuple[torch.Tensor, float]:
        p = self.params
        return FORMULAS[self.method](dim=self.dim, base=self.base, scale=p.scale, alpha=p.alpha,
                                     trained_len=p.trained_len, seq_len=seq_len)

    def for_length(self, seq_len: int) -> tuple[torch.Tensor, float]:
        if self._static is not None:
            return self._static
        if seq_len <= self.params.trained_len:
            return self.original, 1.0  # dynamic NTK: the trained frequencies, bit for bit
        return self._compute(seq_len)


class ScaledRotary(nn.Module):
    """Drop-in for transformers' ``*RotaryEmbedding``: ``forward(x, position_ids)``."""

    def __init__(self, schedule: RopeSchedule):
        super().__init__()
        self.schedule = schedule
        self.current = schedule.for_length(schedule.params.trained_len)
        self.positions: torch.Tensor | None = None  # (B, T) of the last forward, for logn

    def select(self, first_position: int, seq_len: int) -> tuple[torch.Tensor, float]:
        if first_position == 0:  # a new sequence (prefill): choose its frequencies
            self.current = self.schedule.for_length(seq_len)
        return self.current

    def forward(self, x, position_ids, *args, **kwargs):
        first, last = int(position_ids.min()), int(position_ids.max())
        inv_freq, factor = self.select(first, last + 1)
        self.positions = position_ids
        freqs = position_ids[..., None].float() * inv_freq.to(x.device)  # (B, T, d/2)
        emb = torch.cat((freqs, freqs), dim=-1)  # (B, T, d)
        return (emb.cos() * factor).to(x.dtype), (emb.sin() * factor).to(x.dtype)


class ScaledBaichuanRotary(ScaledRotary):
    """Drop-in for Baichuan-7B's per-layer ``RotaryEmbedding``: ``forward(x, seq_len)``
    returns cos/sin of shape (1, 1, seq_len, d) for positions 0 .. seq_len-1.
    One instance serves every layer and reuses its result within a forward."""

    def forward(self, x, seq_len=None):
        q_len = x.shape[-2]
        seq_len = int(seq_len if seq_len is not None else q_len)
        key = (seq_len, q_len, x.device, x.dtype)
        if getattr(self, "_key", None) != key:
            inv_freq, factor = self.select(seq_len - q_len, seq_len)
            t = torch.arange(seq_len, device=x.device, dtype=torch.float32)
            freqs = torch.outer(t, inv_freq.to(x.device))
            emb = torch.cat((freqs, freqs), dim=-1)[None, None]  # (1, 1, L, d)
            self._cached = ((emb.cos() * factor).to(x.dtype), (emb.sin() * factor).to(x.dtype))
            self.positions = torch.arange(seq_len - q_len, seq_len, device=x.device)[None]
            self._key = key
        return self._cached


def add_logn_hooks(stack, projections: list[nn.Module], rotary: ScaledRotary, n_query_cols: int | None,
                   trained_len: int) -> None:
    """Multiply the query part of each projection's output by max(1, ln n / ln L)."""

    def hook(_module, _inputs, output):
        factor = rope.logn_factor(rotary.positions, trained_len).to(output.device, output.dtype)
        factor = factor.reshape(-1, output.shape[-2], 1)  # (B or 1, T, 1)
        if n_query_cols is None:
            return output * factor
        out = output.clone()
        out[..., :n_query_cols] *= factor
        return out

    for proj in projections:
        stack.callback(proj.register_forward_hook(hook).remove)


def check_frequencies(inv_freq: torch.Tensor, base: float, where: str) -> int:
    """The head dim, after checking the model's frequencies are plain RoPE with ``base``."""
    dim = 2 * inv_freq.numel()
    expected = rope.default_inv_freq(dim, base)
    if not torch.allclose(inv_freq.detach().float().cpu(), expected, rtol=1e-2, atol=0):  # bf16 buffers round to 3 digits
        raise EvalkitError(
            f"{where} does not hold plain RoPE frequencies for base {base:g}",
            "the checkpoint already uses a RoPE scaling; load it without rope_scaling to compare methods",
        )
    return dim


def check_layout(rotary: nn.Module, where: str, positions: int = 64) -> None:
    """Refuse a rotary module whose cos/sin are not the rotate-half layout that :class:`ScaledRotary`
    produces (Cohere interleaves its frequencies, for one): replacing it would rotate every query
    and key wrongly without any error."""
    inv_freq = rotary.inv_freq.detach().float()
    pos = torch.arange(positions, device=inv_freq.device)[None]
    try:
        cos, sin = rotary(torch.zeros(1, 1, device=inv_freq.device), pos)
    except (TypeError, ValueError, RuntimeError, IndexError) as e:  # not forward(x, position_ids) with (B, T)
        raise EvalkitError(f"{where} of {type(rotary).__name__} is not called as forward(x, position_ids)",
                           "evalkit patches rotate-half RoPE as in Llama, Mistral and Qwen2") from e
    freqs = pos[..., None].float() * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)
    if cos.shape != emb.shape or not (torch.allclose(cos.float(), emb.cos(), atol=1e-4)
                                      and torch.allclose(sin.float(), emb.sin(), atol=1e-4)):
        raise EvalkitError(f"{where} ({type(rotary).__name__}) lays out its cos/sin differently from "
                           "rotate-half RoPE (interleaved, as in Cohere?); evalkit's replacement would be wrong",
                           "evalkit patches rotate-half RoPE as in Llama, Mistral and Qwen2")


def rope_theta(config) -> float | None:
    """The RoPE base in transformers 5.x (``rope_parameters``) or 4.x (``rope_theta``)."""
    params = getattr(config, "rope_parameters", None)
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

    def trained_len(self, model) -> int:
        return int(getattr(model.config, "max_position_embeddings", None)
                   or getattr(model.config, "model_max_length"))

    def install(self, model, method, params, stack: contextlib.ExitStack) -> None:
        self.install_fn(model, method, params, stack)

    def after_load(self, model, log=print) -> None:
        if self.after_load_fn:
            self.after_load_fn(model, log)


# --- LLaMA architecture in transformers (one rotary module on the base model) ---

def _hf_rotary_owner(model) -> nn.Module | None:
    base = getattr(model, "model", model)
    rot = getattr(base, "rotary_emb", None)
    return base if rot is not None and hasattr(rot, "inv_freq") else None


def _install_hf(model, method, params, stack) -> None:
    owner = _hf_rotary_owner(model)
    rotary = owner.rotary_emb
    rope_type = getattr(rotary, "rope_type", "default")
    if rope_type != "default":
        raise EvalkitError(f"the checkpoint already uses RoPE scaling {rope_type!r}",
                           "load it without rope_scaling to compare methods")
    original = getattr(rotary, "original_inv_freq", rotary.inv_freq)
    base = rope_theta(model.config) or 10000.0
    dim = check_frequencies(original, base, "model.rotary_emb")
    check_layout(rotary, "model.rotary_emb")
    scaled = ScaledRotary(RopeSchedule(method, dim, base, params, original))
    if method == "logn":
        attentions = [layer.self_attn for layer in owner.layers]
        if not all(isinstance(getattr(a, "q_proj", None), nn.Module) for a in attentions):
            raise EvalkitError(f"logn scales the queries through q_proj, which {type(model).__name__}'s attention "
                               "does not have (a fused qkv projection?)", "use another method for this model")
    swap(stack, owner, "rotary_emb", scaled)
    if method == "logn":
        add_logn_hooks(stack, [a.q_proj for a in attentions], scaled, None, params.trained_len)


# --- Baichuan-7B / Baichuan2-7B remote code (a RotaryEmbedding per layer) ---

def baichuan_rope_layers(model) -> nn.ModuleList | None:
    """The decoder layers of a model built as Baichuan's RoPE releases are (whatever its class
    is called: Baichuan-7B spells it ``BaiChuanForCausalLM``): no model-level rotary module,
    a ``rotary_emb`` with its own ``inv_freq`` in every layer's attention, a fused ``W_pack``."""
    base = getattr(model, "model", None)
    layers = getattr(base, "layers", None)
    if base is None or not layers or getattr(base, "rotary_emb", None) is not None:
        return None
    attn = getattr(layers[0], "self_attn", None)
    rotary = getattr(attn, "rotary_emb", None)
    return layers if hasattr(attn, "W_pack") and hasattr(rotary, "inv_freq") else None


def _set_tensor(module: nn.Module, name: str, value: torch.Tensor) -> None:
    """Replace a buffer (keeping it a buffer, persistent or not) or a plain tensor attribute."""
    if name in module._buffers:
        module._buffers[name] = value
    else:
        setattr(module, name, value)


def _repair_baichuan_rotary(model, log) -> None:
    """Make every layer's rotary caches what the module's own ``__init__`` computes.

    Under transformers 5, ``from_pretrained`` builds the model on the meta device and
    materialises only what the checkpoint holds: Baichuan2-7B's plain-attribute
    ``inv_freq`` / ``cos_cached`` / ``sin_cached`` stay on the meta device (its forward
    fails), and Baichuan-7B's non-persistent ``cos_cached`` / ``sin_cached`` buffers come
    back as uninitialised memory (its forward runs and silently computes garbage). The
    caches are rebuilt here from the RoPE formula with the module's own base (its
    ``base`` default, or the config's rope_theta), in the dtype each had."""
    repaired: set[str] = set()
    layers = baichuan_rope_layers(model)
    rotary = layers[0].self_attn.rotary_emb
    default = inspect.signature(type(rotary).__init__).parameters.get("base")
    base = rope_theta(model.config) or (default.default if default is not None else 10000.0)
    inv = rope.default_inv_freq(2 * rotary.inv_freq.numel(), base)  # float32, as the module computes it
    for layer in layers:
        rot, device = layer.self_attn.rotary_emb, layer.self_attn.W_pack.weight.device
        if rot.inv_freq.is_meta:
            _set_tensor(rot, "inv_freq", inv.to(device))
            repaired.add("inv_freq")
        t = torch.arange(rot.max_seq_len_cached, dtype=torch.float32)
        emb = torch.cat([torch.outer(t, inv)] * 2, dim=-1)[None, None]  # (1, 1, L, d)
        for name, want in (("cos_cached", emb.cos()), ("sin_cached", emb.sin())):
            have = getattr(rot, name)
            # exactly the formula: memory left over from another model can be merely close to it
            if have.is_meta or have.shape != want.shape or not torch.equal(have.detach().cpu(), want.to(have.dtype)):
                _set_tensor(rot, name, want.to(device=device, dtype=have.dtype))
                repaired.add(name)
    if repaired:
        log(f"evalkit: rebuilt {', '.join(sorted(repaired))} of the layers' {type(rotary).__name__} (left on the "
            "meta device or uninitialised after loading)")


def _install_baichuan(model, method, params, stack) -> None:
    layers = baichuan_rope_layers(model)
    original = layers[0].self_attn.rotary_emb.inv_freq
    # Baichuan-7B's RotaryEmbedding has base=10000 as a default argument; configs carry none.
    base = rope_theta(model.config) or 10000.0
    dim = check_frequencies(original, base, "layers[0].self_attn.rotary_emb")
    scaled = ScaledBaichuanRotary(RopeSchedule(method, dim, base, params, original))
    for layer in layers:
        swap(stack, layer.self_attn, "rotary_emb", scaled)
    if method == "logn":
        def record_positions(_module, _args, kwargs):  # W_pack runs before the rotary module
            if kwargs.get("position_ids") is None:
                raise EvalkitError("logn on Baichuan needs position_ids passed to the attention by keyword",
                                   "this modeling code does not; use another method")
            scaled.positions = kwargs["position_ids"]

        for layer in layers:
            stack.callback(layer.self_attn.register_forward_pre_hook(record_positions, with_kwargs=True).remove)
        add_logn_hooks(stack, [layer.self_attn.W_pack for layer in layers], scaled,
                       model.config.hidden_size, params.trained_len)


ADAPTERS = (
    RopeAdapter("baichuan-rope", lambda m: baichuan_rope_layers(m) is not None, _install_baichuan,
                _repair_baichuan_rotary),
    RopeAdapter("hf-rope", lambda m: _hf_rotary_owner(m) is not None, _install_hf),
)
