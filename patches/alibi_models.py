"""Installers that put ALiBi slopes from :mod:`evalkit.patches.alibi` into models.

The base slopes are read from each model's own code (so a family's quirks, such
as MPT's ordering for non-power-of-two head counts, are kept), scaled by the
method, and installed where the model reads them at forward time:

- BLOOM: the instance's ``build_alibi_tensor`` (transformers 4.57 and 5.x); in
  5.x a forward without an attention mask builds slopes inline, so an all-ones
  mask is passed in (the same computation, through the patched builder).
- MPT: the instance's ``build_mpt_alibi_tensor``.
- Baichuan-13B / Baichuan2-13B (remote code): the module function
  ``_get_interleave`` is replaced by a self-contained one (wrapping it would
  scale the extra heads twice, since it recurses through its global name), and
  the cached ``future_mask`` is invalidated on entry and on exit.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from evalkit.kvcache import cache_in
from evalkit.registry import INSTALLERS
from evalkit.swap import swap


@dataclass(frozen=True)
class AlibiAdapter:
    name: str
    matches: Callable[[nn.Module], bool]
    base_slopes: Callable[[nn.Module], torch.Tensor]
    install_slopes: Callable
    trained_len_fn: Callable[[nn.Module], int]
    ensure_length_fn: Callable[[nn.Module, int], None] | None = None
    encoding: str = "alibi"

    def after_load(self, model) -> None:
        pass

    def trained_len(self, model, rope_reset: bool = False) -> int:
        return int(self.trained_len_fn(model))

    def shipped_type(self, model) -> str:
        return "default"

    def length_independent(self, model, rope_reset: bool = False) -> bool:
        return True

    def ensure_length(self, model, length: int) -> None:
        """Let the model take ``length`` tokens where its code caps the input (MPT's max_seq_len)."""
        if self.ensure_length_fn:
            self.ensure_length_fn(model, length)

    def install(self, model, method, resolved, stack: contextlib.ExitStack, rope_reset: bool = False) -> None:
        if method.slopes is None:
            return  # none: the model's own slopes
        slopes = method.slopes(self.base_slopes(model).float(), **resolved.values)
        self.install_slopes(model, slopes, stack)


def model_type(model) -> str:
    return getattr(model.config, "model_type", "")


# --- BLOOM ---


def _modeling_module(model):
    """The modeling module of a BLOOM or Falcon model (where its ``build_alibi_tensor`` lives)."""
    return sys.modules[type(model.transformer).__module__]


def _bloom_base(model) -> torch.Tensor:
    heads = model.transformer.num_heads
    built = _modeling_module(model).build_alibi_tensor(torch.ones(1, 2), heads, torch.float32)
    return built.reshape(heads, 2)[:, 1]  # slope × distance 1


def _bloom_install(model, slopes, stack) -> None:
    tr = model.transformer

    def build_alibi_tensor(attention_mask, num_heads, dtype):
        batch, length = attention_mask.shape
        positions = ((attention_mask.cumsum(dim=-1) - 1) * attention_mask)[:, None, :]  # (B, 1, T)
        bias = slopes.to(attention_mask.device)[None, :, None] * positions  # (B, H, T)
        return bias.reshape(batch * num_heads, 1, length).to(dtype)

    def pass_a_mask(_module, args, kwargs):
        if kwargs.get("attention_mask") is not None:
            return None
        ids = kwargs.get("input_ids", args[0] if args else None)
        embeds = kwargs.get("inputs_embeds")
        ref = ids if ids is not None else embeds
        cache = cache_in(kwargs)
        past = cache.get_seq_length() if cache is not None and hasattr(cache, "get_seq_length") else 0
        kwargs["attention_mask"] = torch.ones(ref.shape[0], past + ref.shape[1], dtype=torch.long, device=ref.device)
        return args, kwargs

    swap(stack, tr, "build_alibi_tensor", build_alibi_tensor)
    stack.callback(tr.register_forward_pre_hook(pass_a_mask, with_kwargs=True).remove)


# --- Falcon with ALiBi (the RW releases) ---


def _falcon_base(model) -> torch.Tensor:
    heads = model.transformer.num_heads
    built = _modeling_module(model).build_alibi_tensor(torch.ones(1, 2, dtype=torch.long), heads, torch.float32)
    return built.reshape(heads, 2)[:, 1]  # slope × distance 1 (bf16-rounded, as Falcon multiplies)


def _falcon_install(model, slopes, stack) -> None:
    """Falcon calls its module-level ``build_alibi_tensor`` by name: replaced for the block,
    keeping Falcon's own arithmetic (slopes in bf16 times the positions)."""

    def build_alibi_tensor(attention_mask, num_heads, dtype):
        batch, length = attention_mask.shape
        positions = ((attention_mask.cumsum(dim=-1) - 1) * attention_mask)[:, None, :]  # (B, 1, T)
        bias = slopes.to(attention_mask.device)[..., None].bfloat16() * positions  # (H, 1) x (B, 1, T)
        return bias.reshape(batch * num_heads, 1, length).to(dtype)

    swap(stack, _modeling_module(model), "build_alibi_tensor", build_alibi_tensor)


# --- MPT ---


def _mpt_base(model) -> torch.Tensor:
    # built as MptModel.forward builds it: transformers passes no alibi_bias_max there (so 8), whatever
    # the config's attn_config says; the slopes to scale are those the model really uses
    built = model.transformer.build_mpt_alibi_tensor(model.transformer.num_heads, 2)
    return -built[:, 0, 0].float()  # distance -1 at the first of two positions


def _mpt_install(model, slopes, stack) -> None:
    def build_mpt_alibi_tensor(num_heads, sequence_length, alibi_bias_max=8, device=None):
        distance = torch.arange(1 - sequence_length, 1, device=device, dtype=torch.float32)
        return slopes.to(device)[:, None, None] * distance[None, None, :]  # (H, 1, S)

    swap(stack, model.transformer, "build_mpt_alibi_tensor", build_mpt_alibi_tensor)


# --- Baichuan-13B / Baichuan2-13B (remote code) ---


def _baichuan_module(model):
    return sys.modules[type(model).__module__]


def _is_baichuan_alibi(model) -> bool:
    """Built as Baichuan's ALiBi releases are (13B, Baichuan2-13B): module functions
    ``_get_interleave`` and ``_gen_alibi_mask`` beside the model class, and a base model
    that caches its mask (``get_alibi_mask``, ``first_run``, ``max_cache_pos``)."""
    module, base = _baichuan_module(model), getattr(model, "model", None)
    return (
        callable(getattr(module, "_get_interleave", None))
        and callable(getattr(module, "_gen_alibi_mask", None))
        and all(hasattr(base, a) for a in ("get_alibi_mask", "first_run", "max_cache_pos"))
    )


def _baichuan_base(model) -> torch.Tensor:
    return torch.tensor(_baichuan_module(model)._get_interleave(model.config.num_attention_heads), dtype=torch.float32)


def _baichuan_reset_mask_cache(base_model, max_cache_pos) -> None:
    base_model.first_run = True
    base_model.max_cache_pos = max_cache_pos
    base_model.__dict__.pop("future_mask", None)
    base_model._buffers.pop("future_mask", None)
    if hasattr(base_model, "alibi_mask"):  # the per-length cache of training mode
        base_model.alibi_mask = None


def _baichuan_install(model, slopes, stack) -> None:
    module, base_model = _baichuan_module(model), model.model
    n_heads = len(slopes)
    values = slopes.tolist()

    def _get_interleave(n):  # self-contained: no recursion through the module global
        if n != n_heads:
            raise ValueError(f"evalkit patched ALiBi slopes for {n_heads} heads, asked for {n}")
        return list(values)

    swap(stack, module, "_get_interleave", _get_interleave)
    cache_pos = base_model.max_cache_pos
    _baichuan_reset_mask_cache(base_model, cache_pos)
    stack.callback(_baichuan_reset_mask_cache, base_model, cache_pos)


def _config_len(*names):
    def read(model):
        for name in names:
            value = getattr(model.config, name, None)
            if value:
                return value
        return 2048  # BLOOM's training context; its config states none

    return read


def _mpt_raise_max_seq_len(model, length: int) -> None:
    """MPT refuses inputs longer than ``config.max_seq_len``: raise it (its ALiBi needs no table)."""
    if model.config.max_seq_len < length:
        model.config.max_seq_len = length


ADAPTERS = (
    AlibiAdapter(
        "baichuan-alibi",
        _is_baichuan_alibi,
        _baichuan_base,
        _baichuan_install,
        _config_len("model_max_length", "max_position_embeddings"),
    ),
    AlibiAdapter(
        "falcon-alibi",
        lambda m: model_type(m) == "falcon" and bool(getattr(m.config, "alibi", False)),
        _falcon_base,
        _falcon_install,
        _config_len("max_position_embeddings"),
    ),
    AlibiAdapter("bloom", lambda m: model_type(m) == "bloom", _bloom_base, _bloom_install, _config_len("seq_length")),
    AlibiAdapter(
        "mpt",
        lambda m: model_type(m) == "mpt",
        _mpt_base,
        _mpt_install,
        _config_len("max_seq_len"),
        _mpt_raise_max_seq_len,
    ),
)
for _installer in ADAPTERS:
    INSTALLERS.add(_installer.name, _installer)
