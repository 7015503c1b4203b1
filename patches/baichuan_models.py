"""Installer for Baichuan-7B and Baichuan2-7B (remote code: a ``RotaryEmbedding`` in every layer).

Checked against baichuan-inc Baichuan-7B and Baichuan2-7B-Base ``modeling_baichuan.py`` (see
docs/models.md): the per-layer rotary modules are replaced by one :class:`ScaledBaichuanRotary`,
the rotary caches that transformers 5 leaves unmaterialised are rebuilt after loading, and logn
scales the query third of the fused ``W_pack`` projection.
"""

from __future__ import annotations

import inspect
import logging

import torch
from torch import nn

from evalkit.errors import EvalkitError
from evalkit.patches import rope
from evalkit.patches.rope_models import (
    RopeAdapter,
    RopeSchedule,
    ScaledRotary,
    Shipped,
    add_logn_hooks,
    check_frequencies,
    rope_theta,
)
from evalkit.registry import INSTALLERS
from evalkit.swap import swap

logger = logging.getLogger(__name__)


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
            cos, sin = rope.cos_sin(t, inv_freq, factor, x.dtype)  # (L, d) each
            self._cached = (cos[None, None], sin[None, None])  # (1, 1, L, d)
            self.positions = torch.arange(seq_len - q_len, seq_len, device=x.device)[None]
            self._key = key
        return self._cached


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


def _repair_baichuan_rotary(model) -> None:
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
        cos, sin = rope.cos_sin(torch.arange(rot.max_seq_len_cached, dtype=torch.float32), inv)  # (L, d)
        for name, want in (("cos_cached", cos[None, None]), ("sin_cached", sin[None, None])):
            have = getattr(rot, name)
            # exactly the formula: memory left over from another model can be merely close to it
            if have.is_meta or have.shape != want.shape or not torch.equal(have.detach().cpu(), want.to(have.dtype)):
                _set_tensor(rot, name, want.to(device=device, dtype=have.dtype))
                repaired.add(name)
    if repaired:
        logger.info(
            f"evalkit: rebuilt {', '.join(sorted(repaired))} of the layers' {type(rotary).__name__} (left on the "
            "meta device or uninitialised after loading)"
        )


def _install_baichuan(model, method, resolved, stack, rope_reset: bool) -> None:
    layers = baichuan_rope_layers(model)
    rotary = layers[0].self_attn.rotary_emb
    if method.attention:
        raise EvalkitError(
            f"{method.name} replaces the attention, which evalkit does not do for Baichuan's fused W_pack attention",
            "use a method that changes the RoPE frequencies",
        )
    # Baichuan-7B's RotaryEmbedding has base=10000 as a default argument; configs carry none.
    base = rope_theta(model.config) or 10000.0
    dim = 2 * rotary.inv_freq.numel()
    shipped = Shipped(rotary, model.config, dim, base)  # no rope_type: plain RoPE
    check_frequencies(rotary.inv_freq, rope.default_inv_freq(dim, base), "layers[0].self_attn.rotary_emb")
    scaled = ScaledBaichuanRotary(RopeSchedule(method, resolved.values, dim, base, resolved.trained_len, shipped))
    for layer in layers:
        swap(stack, layer.self_attn, "rotary_emb", scaled)
    if method.logn:

        def record_positions(_module, _args, kwargs):  # W_pack runs before the rotary module
            if kwargs.get("position_ids") is None:
                raise EvalkitError(
                    "logn on Baichuan needs position_ids passed to the attention by keyword",
                    "this modeling code does not; use another method",
                )
            scaled.positions = kwargs["position_ids"]

        for layer in layers:
            stack.callback(layer.self_attn.register_forward_pre_hook(record_positions, with_kwargs=True).remove)
        n_query = model.config.hidden_size  # W_pack: [q | k | v] along the columns
        add_logn_hooks(
            stack,
            [(layer.self_attn.W_pack, lambda cols: torch.arange(cols) < n_query) for layer in layers],
            scaled,
            resolved.trained_len,
        )


INSTALLER = RopeAdapter(
    "baichuan-rope", lambda m: baichuan_rope_layers(m) is not None, _install_baichuan, _repair_baichuan_rotary
)
INSTALLERS.add(INSTALLER.name, INSTALLER)
