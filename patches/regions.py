"""Attention over regions: the mechanism every position-remapping method runs on.

A query's keys fall into a few regions (Self-Extend's near / far; DCA's intra-chunk /
successive-chunk / inter-chunk; STRING's window / shifted part). In each region the query
and the keys are rotated at the region's own positions, and each region is an ordinary
attention call; the calls are merged exactly by their log-sum-exp,

    lse = log Σ_r exp(lse_r),    out = Σ_r exp(lse_r − lse) · out_r,

which is one softmax over the union of the regions' keys (a key in two regions, as STRING's
boundary key, counts twice, as in the authors' code). Queries go in blocks of
:data:`BLOCK` rows; a block's call on a region covers only the keys it can see there, split
into a part every row of the block sees (no mask) and the edge rows see partly (a mask of
at most a block × a band). There is never an L × L matrix.

Kernels (:func:`kernel_for`): PyTorch's fused CPU flash kernel (``sdpa``, which returns
the LSE) on the CPU; on CUDA flash-attn's ``flash_attn_func`` (``return_attn_probs``
gives the LSE) for the unmasked calls when installed, else PyTorch's memory-efficient
kernel with ``compute_log_sumexp``; ``eager`` (a matmul, logsumexp and softmax per call)
is the reference the others are tested against.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from evalkit.patches import rope

BLOCK = 1024  # query rows per block: a masked call holds at most BLOCK × (BLOCK + band) mask entries


@dataclass(frozen=True)
class Region:
    """Keys j of query i with ``lo <= i - j <= hi`` (``hi`` None: no upper bound); for a chunked
    region, only keys whose chunk (⌊j / chunk⌋) is the query's chunk minus ``chunk_back``
    (``chunk_back`` None: any chunk before the previous one); with ``keys``, only the first
    ``keys`` keys (j < keys: attention sinks). Query and keys are rotated at ``q_pos(i)`` and
    ``k_pos(j)`` (float positions, vectorised)."""

    q_pos: Callable[[torch.Tensor], torch.Tensor]
    k_pos: Callable[[torch.Tensor], torch.Tensor]
    lo: int = 0
    hi: int | None = None
    chunk: int | None = None  # chunk length for DCA's regions (None: a distance band)
    chunk_back: int | None = None  # 0: the query's own chunk; 1: the one before; None: older ones
    keys: int | None = None  # only keys j < keys (the sink tokens)

    def visible(self, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        """(len(i), len(j)) bool: which keys each query sees in this region (integer positions)."""
        d = i[:, None] - j[None, :]
        seen = d >= self.lo
        if self.hi is not None:
            seen &= d <= self.hi
        if self.chunk is not None:
            back = (
                torch.div(i, self.chunk, rounding_mode="floor")[:, None]
                - torch.div(j, self.chunk, rounding_mode="floor")[None, :]
            )
            seen &= (back == self.chunk_back) if self.chunk_back is not None else (back >= 2)
        if self.keys is not None:
            seen &= (j < self.keys)[None, :]
        return seen

    def key_span(self, s: int, e: int) -> tuple[int, int]:
        """The keys [lo, hi) that may be visible to queries [s, e) (causal: never past e)."""
        first = 0 if self.hi is None else max(0, s - self.hi)
        last = max(0, e - self.lo)
        if self.chunk is not None:
            c0, c1 = s // self.chunk, (e - 1) // self.chunk
            if self.chunk_back is None:
                first, last = 0, max(0, min(last, (c1 - 1) * self.chunk))
            else:
                first = max(first, (c0 - self.chunk_back) * self.chunk)
                last = min(last, (c1 - self.chunk_back + 1) * self.chunk)
        if self.keys is not None:
            last = min(last, self.keys)
        return first, max(first, last)


@dataclass(frozen=True)
class Layout:
    """A method's regions, and ``temperature``: a factor on cos and sin of queries and keys alike
    from (keys, trained length) (DCA's reference code: 0.05 ln(n / L) + 1 past L), or None."""

    regions: tuple[Region, ...]
    temperature: Callable[[int, int], float] | None = None

    def layout(self) -> Layout:
        return self

    def factor(self, n_keys: int, trained_len: int) -> float:
        return self.temperature(n_keys, trained_len) if self.temperature else 1.0


def calls(region: Region, i0: int, i1: int, k_idx: torch.Tensor) -> list:
    """The attention calls of the queries at positions [i0, i1) on ``region``: (key start, key
    end, mask or None). What a query sees in a region is an interval of keys, so the keys every
    row sees form one interval too: one call without a mask; the partly seen keys on either side
    of it (at most a block wide each, for the regions here) go in masked calls."""
    lo, hi = region.key_span(i0, i1)
    if hi <= lo:
        return []
    rows = torch.arange(i0, i1, device=k_idx.device)
    every = region.visible(rows[[0, -1]], k_idx[lo:hi]).all(dim=0)  # the first and the last row: enough
    found = every.nonzero()
    if not len(found):
        return [(lo, hi, region.visible(rows, k_idx[lo:hi]))]
    a, b = lo + int(found[0]), lo + int(found[-1]) + 1
    out = [(a, b, None)]
    if a > lo:
        out.insert(0, (lo, a, region.visible(rows, k_idx[lo:a])))
    if b < hi:
        out.append((b, hi, region.visible(rows, k_idx[b:hi])))
    return out


def repeat_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Grouped KV heads (B, H/groups, S, D) repeated to the query heads (B, H, S, D)."""
    return x if groups == 1 else x.repeat_interleave(groups, dim=1)


def PLAIN(p: torch.Tensor) -> torch.Tensor:  # noqa: N802 (a constant: positions as they are)
    """Positions as they are (a region without remapping)."""
    return p


def blocks(first: int, end: int, regions) -> list[tuple[int, int]]:
    """Query blocks [s, e) of positions first .. end-1: at most BLOCK rows, never across a chunk
    boundary of a chunked region (so its calls need no mask but on the diagonal)."""
    cuts = set(range(first, end, BLOCK)) | {first}
    for r in regions:
        if r.chunk is not None:
            cuts |= set(range((first // r.chunk + 1) * r.chunk, end, r.chunk))
    edges = sorted(cuts) + [end]
    out = []
    for s, e in zip(edges, edges[1:]):
        out += [(x, min(e, x + BLOCK)) for x in range(s, e, BLOCK)]
    return out


def grouped(kernel, groups: int):
    """``kernel`` for queries of ``groups`` heads per KV head without repeating the keys: the
    group's queries stacked along the rows, (B, H, n, D) as (B, H/groups, groups·n, D), the mask
    repeated to match, the output and LSE unstacked again. The same sums, one copy of each key."""
    if groups == 1:
        return kernel

    def call(q, k, v, mask, scale):
        b, h, n, d = q.shape
        stacked = q.reshape(b, h // groups, groups * n, d)
        out, lse = kernel(stacked, k, v, None if mask is None else mask.repeat(groups, 1), scale)
        return out.reshape(b, h, n, out.shape[-1]), lse.reshape(b, h, n)

    return call


def region_attention(q, k, v, q_pos, regions, inv_freq, factor: float, scaling: float, groups: int = 1, kernel=None):
    """Attention of q (B, H, T, D) over k / v (B, H/groups, S, D) through ``regions``: queries at
    the contiguous integer positions ``q_pos`` (T,), keys at 0 .. S-1; the calls merged by LSE.
    Each region's keys are rotated once for all blocks, at their KV heads (never repeated)."""
    kernel = grouped(kernel or kernel_for(q), groups)
    first = int(q_pos[0])
    k_idx = torch.arange(k.shape[-2], device=q.device)
    keys = [rope_at(k, r.k_pos(k_idx.double()), inv_freq, factor) for r in regions]
    out = torch.empty(*q.shape[:-1], v.shape[-1], dtype=v.dtype, device=v.device)
    for i0, i1 in blocks(first, first + q.shape[-2], regions):
        rows = slice(i0 - first, i1 - first)
        positions = torch.arange(i0, i1, device=q.device, dtype=torch.float64)
        acc_out = acc_lse = None
        for region, k_r in zip(regions, keys):
            parts = calls(region, i0, i1, k_idx)
            if parts:
                q_r = rope_at(q[:, :, rows], region.q_pos(positions), inv_freq, factor)
            for lo, hi, mask in parts:
                o, lse = kernel(q_r, k_r[:, :, lo:hi], v[:, :, lo:hi], mask, scaling)
                acc_out, acc_lse = merge(acc_out, acc_lse, o, lse)
        out[:, :, rows] = acc_out.to(v.dtype)
    return out


def merge(acc_out, acc_lse, out, lse):
    """Two partial attentions over disjoint key sets as one (fp32): weights exp(lse_r − lse)."""
    out, lse = out.float(), lse.float()
    if acc_out is None:
        return out, lse
    total = torch.logaddexp(acc_lse, lse)
    a = torch.exp(acc_lse - total).nan_to_num(0.0)[..., None]  # a row with no key yet: weight 0
    b = torch.exp(lse - total).nan_to_num(0.0)[..., None]
    return acc_out * a + out * b, total


def rope_at(x: torch.Tensor, positions: torch.Tensor, inv_freq: torch.Tensor, factor: float) -> torch.Tensor:
    """Rotate-half RoPE of ``x`` (B, H, T, D) at float ``positions`` (T,) on its first
    2·len(inv_freq) dims (partial rotary leaves the rest); cos/sin as transformers builds them."""
    rd = 2 * inv_freq.numel()
    cos, sin = rope.cos_sin(positions.to(x.device), inv_freq, factor, x.dtype)  # (T, rd) each
    x_rot, x_pass = x[..., :rd], x[..., rd:]
    half = rd // 2
    rotated = x_rot * cos + torch.cat((-x_rot[..., half:], x_rot[..., :half]), dim=-1) * sin
    return torch.cat((rotated, x_pass), dim=-1) if x_pass.shape[-1] else rotated


# --- kernels: (q, k, v, mask (rows, keys) bool or None, scale) -> (out (B, H, rows, D), lse (B, H, rows)) ---


def eager(q, k, v, mask, scale):
    """The reference: scores of one call in memory, fp32 softmax."""
    scores = torch.matmul(q.float(), k.float().transpose(2, 3)) * scale
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)
    probs = torch.exp(scores - lse[..., None]).nan_to_num(0.0)
    return torch.matmul(probs, v.float()), lse


def _bias(mask, q):
    """A bool mask as the additive bias the fused kernels take (0 where seen, −inf elsewhere)."""
    if mask is None:
        return None
    return torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill(~mask, float("-inf"))


def sdpa_cpu(q, k, v, mask, scale):
    """PyTorch's fused CPU flash kernel (it returns the LSE); a row no key is visible to gets
    LSE −inf (the kernel reports 0)."""
    bias = _bias(mask, q)
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, False, attn_mask=bias,
                                                                         scale=scale)  # fmt: skip
    if mask is not None:
        lse = lse.masked_fill(~mask.any(dim=-1), float("-inf"))
    return out, lse


def sdpa_cuda(q, k, v, mask, scale):
    """flash-attn when installed and the call has no mask, else PyTorch's memory-efficient kernel."""
    if mask is None:
        try:
            from flash_attn import flash_attn_func
        except ImportError:
            flash_attn_func = None
        if flash_attn_func is not None and q.dtype in (torch.float16, torch.bfloat16):
            out, lse, _ = flash_attn_func(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), softmax_scale=scale, return_attn_probs=True
            )
            return out.transpose(1, 2), lse
    bias = None
    if mask is not None:  # rows of the bias 16-aligned, as PyTorch's own SDPA pads them for this kernel
        rows, keys = mask.shape
        bias = torch.full((rows, -(-keys // 16) * 16), float("-inf"), dtype=q.dtype, device=q.device)[:, :keys]
        bias.masked_fill_(mask, 0.0)  # in place: the padded row stride stays
        bias = bias[None, None].expand(q.shape[0], q.shape[1], -1, -1)
    out, lse = torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, bias, True, scale=scale)[:2]
    lse = lse[..., : q.shape[-2]]
    if mask is not None:
        empty = ~mask.any(dim=-1)
        lse = lse.masked_fill(empty, float("-inf"))
        out = out.masked_fill(empty[:, None], 0.0)  # a row that sees nothing: 0, not NaN (merge weights it 0)
    return out, lse


KERNELS = {"eager": eager, "sdpa-cpu": sdpa_cpu, "sdpa-cuda": sdpa_cuda}
FORCED: list[str] = []  # tests and benchmarks: FORCED[:] = ["eager"] runs every call on that kernel


def kernel_for(x: torch.Tensor):
    """The fastest kernel for ``x``'s device that returns the LSE (or the one forced)."""
    if FORCED:
        return KERNELS[FORCED[0]]
    return sdpa_cuda if x.is_cuda else sdpa_cpu if x.device.type == "cpu" else eager
