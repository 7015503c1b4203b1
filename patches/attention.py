"""Two-region attention: Self-Extend and ReRoPE, and the attention hook every region method uses.

Both methods score a query at position i against a key at position j with ordinary
RoPE when the two are close (i - j < W) and with remapped positions beyond:

- Self-Extend (Jin et al. 2024, arXiv 2401.01325; datamllab/LongLM ``SelfExtend.py``):
  far query at ⌊i/G⌋ + W - W/G, far key at ⌊j/G⌋, so the two regions meet at i - j = W.
- ReRoPE (Su 2023, bojone/rerope ``rerope_patch.py``): far query at W, far key at 0
  (every far distance reads as W).
- Leaky ReRoPE (``leaky_rerope_patch.py``): far query at i/k + W - W/k, far key at j/k
  (far distance W + (i - j - W)/k).

The hook (:func:`two_region_forward`) replaces the forward of each attention module of a
LLaMA-like layout (q/k/v/o projections, optional per-head q/k norms, partial rotary) and
runs a method's regions on :mod:`evalkit.patches.regions` (fused kernels, merged by their
LSE); keys enter the KV cache unrotated, so cached decoding rotates them afresh for each
new query, as the reference code does.

:func:`two_region_attention` is the eager reference the region path is tested against:
scores of the two regions merged per query (a mask, not a sum), then one softmax; query
row blocks keep one block's scores within :data:`SCORE_BUDGET` elements.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from evalkit.errors import EvalkitError
from evalkit.kvcache import cache_in
from evalkit.patches.regions import PLAIN, Layout, Region, region_attention, repeat_kv
from evalkit.patches.regions import rope_at as rotate  # the rotation both paths use

SCORE_BUDGET = 1 << 24  # scores in flight per block (B·H·rows·keys): 64 MiB in fp32 for each of the two regions


@dataclass(frozen=True)
class TwoRegion:
    window: int
    far_query: Callable[[torch.Tensor], torch.Tensor]  # float positions -> positions
    far_key: Callable[[torch.Tensor], torch.Tensor]

    def layout(self) -> Layout:
        """Near (i - j < W, positions as they are) and far (i - j >= W, remapped) regions."""
        return Layout((Region(PLAIN, PLAIN, 0, self.window - 1), Region(self.far_query, self.far_key, self.window)))


def self_extend(window: int, group: int, **_) -> TwoRegion:
    return TwoRegion(
        window, lambda p: torch.floor(p / group) + window - window / group, lambda p: torch.floor(p / group)
    )


def rerope(window: int, **_) -> TwoRegion:
    return TwoRegion(window, lambda p: torch.full_like(p, float(window)), lambda p: torch.zeros_like(p))


def leaky_rerope(window: int, k: float, **_) -> TwoRegion:
    return TwoRegion(window, lambda p: p / k + window - window / k, lambda p: p / k)


def check_supported(attn: nn.Module, method: str = "this method", family: str = "") -> None:
    """Refuse attention modules the hook would compute wrongly, naming the method and the family."""
    where = f"{method} on {family or 'this model'} ({type(attn).__name__})"
    missing = [n for n in ("q_proj", "k_proj", "v_proj", "o_proj") if not isinstance(getattr(attn, n, None), nn.Module)]
    if missing:
        raise EvalkitError(
            f"{where}: the attention replacement needs separate q/k/v/o projections; it has no {', '.join(missing)}",
            "use a method that changes the RoPE frequencies",
        )
    config = getattr(attn, "config", None)
    sliding = getattr(attn, "sliding_window", None) or (
        getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True)
    )
    if getattr(config, "attn_logit_softcapping", None) or sliding:
        raise EvalkitError(
            f"{where}: it caps its logits or attends within a sliding window, which the attention "
            "replacement does not reproduce",
            "use a method that changes the RoPE frequencies",
        )
    if getattr(attn, "q_layernorm", None) is not None:
        raise EvalkitError(
            f"{where}: it normalises its queries in a layout the replacement does not follow",
            "use a method that changes the RoPE frequencies",
        )


def two_region_attention(
    q, k, v, q_pos, k_pos, region: TwoRegion, inv_freq, factor: float, scaling: float, groups: int = 1
):
    """softmax(merge(near, far) + causal) @ v for q (B, H, T, D), k/v (B, H/groups, S, D), positions (T,), (S,).

    Each block of query rows [s, e) is scored only where its result can be nonzero: near keys
    j in [s - W + 1, e) and far keys j < e - W (causal: no key past the block's last query). Keys
    are sorted by position (0 .. S-1), so these are slices."""
    batch, heads, n_q, _ = q.shape
    n_k = k.shape[-2]
    k_near = repeat_kv(rotate(k, k_pos, inv_freq, factor), groups)
    k_far = repeat_kv(rotate(k, region.far_key(k_pos.double()), inv_freq, factor), groups)
    v = repeat_kv(v, groups)
    out = torch.empty(batch, heads, n_q, v.shape[-1], dtype=v.dtype, device=v.device)
    rows = max(1, SCORE_BUDGET // max(1, batch * heads * n_k))
    for start in range(0, n_q, rows):
        p = q_pos[start : start + rows]
        block = q[:, :, start : start + rows]
        end = min(n_k, int(p[-1]) + 1)  # the last key any query of the block sees
        near_lo = max(0, int(p[0]) - region.window + 1)
        far_hi = max(0, min(end, int(p[-1]) - region.window + 1))  # keys j <= i - W for some i of the block
        scores = torch.full((batch, heads, len(p), end), float("-inf"), dtype=q.dtype, device=q.device)
        near = torch.matmul(rotate(block, p, inv_freq, factor), k_near[:, :, near_lo:end].transpose(2, 3)) * scaling
        distance = p[:, None] - k_pos[None, near_lo:end]  # (rows, keys)
        scores[..., near_lo:end] = near.masked_fill((distance < 0) | (distance >= region.window), float("-inf"))
        del near
        if far_hi > 0:
            far = (
                torch.matmul(
                    rotate(block, region.far_query(p.double()), inv_freq, factor), k_far[:, :, :far_hi].transpose(2, 3)
                )
                * scaling
            )
            distance = p[:, None] - k_pos[None, :far_hi]
            scores[..., :far_hi] = torch.where(distance >= region.window, far, scores[..., :far_hi])
            del far
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(v.dtype)
        out[:, :, start : start + rows] = torch.matmul(probs, v[:, :, :end])
    return out


def two_region_forward(attn: nn.Module, region, rotary, trained_len: int | None = None) -> Callable:
    """A forward for ``attn`` (transformers' attention call signature, both lines) computing the
    attention of ``region`` (anything with a ``layout()``: a :class:`TwoRegion`, a method's
    :class:`~evalkit.patches.regions.Layout`) with the frequencies of ``rotary`` (a ScaledRotary:
    the checkpoint's own, or scaled by another method) at the positions it saw in this forward."""
    layout = region.layout()
    chosen: dict = {}  # the temperature chosen at the prefill, kept for the cached decode steps

    def forward(hidden_states, position_embeddings=None, attention_mask=None, **kwargs):
        batch, n_new, _ = hidden_states.shape
        q, k, v = _project(attn, hidden_states)  # (B, H, T, D)
        cache = cache_in(kwargs)
        if cache is not None:  # unrotated keys: every step rotates them for its own queries
            k, v = cache.update(k, v, attn.layer_idx)
        positions = rotary.positions[0]  # (T,): the same positions for every row of the batch
        n_keys = k.shape[-2]
        if int(positions[-1]) != n_keys - 1:
            raise EvalkitError(
                f"{type(attn).__name__}: positions end at {int(positions[-1])} but {n_keys} keys are cached",
                "two-region attention needs positions 0..n-1 without padding",
            )
        if int(positions[0]) == 0 or "temperature" not in chosen:
            chosen["temperature"] = layout.factor(n_keys, trained_len or n_keys)
        inv_freq, factor = rotary.current
        groups = q.shape[1] // k.shape[1]
        out = region_attention(q, k, v, positions, layout.regions, inv_freq, factor * chosen["temperature"],
                               float(attn.scaling), groups)  # fmt: skip
        return attn.o_proj(out.transpose(1, 2).reshape(batch, n_new, -1)), None

    return forward


def _project(attn: nn.Module, hidden_states: torch.Tensor):
    """q, k, v (B, H, T, D) of ``attn``, unrotated (per-head q/k norms applied first)."""
    batch, n_new, _ = hidden_states.shape
    shape = (batch, n_new, -1, attn.head_dim)
    q, k = attn.q_proj(hidden_states).view(shape), attn.k_proj(hidden_states).view(shape)
    v = attn.v_proj(hidden_states).view(shape).transpose(1, 2)
    if isinstance(getattr(attn, "q_norm", None), nn.Module):  # Qwen3, Gemma 3: per-head norms first
        q, k = attn.q_norm(q), attn.k_norm(k)
    return q.transpose(1, 2), k.transpose(1, 2), v
