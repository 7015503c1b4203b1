"""logn attention: queries × max(1, ln n / ln L) past the trained length, through forward hooks on
each layer's query projection (or the query part of a fused one)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from evalkit.errors import EvalkitError
from evalkit.patches import rope


def query_target(attn: nn.Module, model_type: str) -> tuple[nn.Module, Callable | None]:
    """Where an attention module's queries can be scaled before their dot products: the module
    whose output holds them and, for a fused projection, which of its columns are queries.
    A query norm (Qwen3, Gemma 3: ``q_norm``) comes after the projection and would undo a scale
    applied there, so the norm's output is scaled instead."""
    norm = getattr(attn, "q_norm", None)
    if isinstance(norm, nn.Module):
        return norm, None
    if isinstance(getattr(attn, "q_layernorm", None), nn.Module):
        raise EvalkitError(
            "logn: this model normalises its queries after a transposition evalkit does not follow (q_layernorm)",
            "use another method for this model",
        )
    if isinstance(getattr(attn, "q_proj", None), nn.Module):
        return attn.q_proj, None
    heads = attn.config.num_attention_heads
    head_dim = getattr(attn, "head_dim", None) or attn.head_size
    if isinstance(getattr(attn, "qkv_proj", None), nn.Module):  # Phi-3: [q | k | v] along the columns
        return attn.qkv_proj, lambda cols: torch.arange(cols) < heads * head_dim
    if model_type == "gpt_neox":  # per head [q | k | v], head_size columns each
        return attn.query_key_value, lambda cols: torch.arange(cols) % (3 * head_dim) < head_dim
    raise EvalkitError(
        f"logn: evalkit does not know which columns of {type(attn).__name__}'s projection are queries",
        "use another method for this model",
    )


def add_logn_hooks(
    stack, targets: list[tuple[nn.Module, Callable | None]], rotary: nn.Module, trained_len: int
) -> Callable[[], None]:
    """Multiply the queries in each target's output by max(1, ln n / ln L), n the 1-based position.
    Projections give (batch, tokens, columns); a query norm gives per-head queries with the tokens
    on axis 1 (Qwen3 normalises before transposing) or 2 (Gemma 3, after): the axis is the one of
    the token count, learned per module on the first call where it is unambiguous. Returns a
    function that makes such a call (a short forward) so that nothing is left to guess later."""

    axes: dict = {}

    def token_axis(module, output, n_tokens: int) -> int:
        candidates = [a for a in (1, 2)[: output.dim() - 2] if output.shape[a] == n_tokens]
        if len(candidates) == 1:
            axes[module] = candidates[0]
        if module not in axes:
            raise EvalkitError(
                f"logn: cannot tell which axis of {type(module).__name__}'s output holds the tokens",
                "use another method for this model",
            )
        return axes[module]

    def hook(module, _inputs, output):
        positions = rotary.positions  # (B or 1, T)
        axis = token_axis(module, output, positions.shape[-1])
        factor = rope.logn_factor(positions, trained_len).to(output.device, output.dtype)  # (B or 1, T)
        shape = [1] * output.dim()
        shape[0], shape[axis] = factor.shape[0], factor.shape[1]
        factor = factor.reshape(shape)
        columns = masks.get(module)
        if columns is None:
            return output * factor
        mask = columns(output.shape[-1]).to(output.device)
        return torch.where(mask, output * factor, output)

    masks = {}
    for module, columns in targets:
        masks[module] = columns
        stack.callback(module.register_forward_hook(hook).remove)
    return axes


@torch.no_grad()
def _learn_token_axes(model, attentions, axes: dict) -> None:
    """One short forward whose token count differs from the head count and head size, so each
    query norm's hook learns where the tokens are (see :func:`add_logn_hooks`)."""
    config = model.config
    n = max(config.num_attention_heads, getattr(attentions[0], "head_dim", 0) or 0) + 1
    device = model.get_input_embeddings().weight.device
    model(input_ids=torch.zeros(1, n, dtype=torch.long, device=device), use_cache=False)
