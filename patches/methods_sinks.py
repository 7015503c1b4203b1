"""Attention sinks: LM-Infinite's Λ-shaped attention and StreamingLLM, on the region mechanism
(:mod:`evalkit.patches.regions`). Both keep a local window of recent keys with ordinary RoPE
and the first few tokens of the sequence (the "sinks" the softmax leans on) at a bounded
distance; every key between them is dropped.

- ``lm-infinite`` (Han et al. 2024, "LM-Infinite: Zero-Shot Extreme Length Generalization for
  Large Language Models", arXiv 2308.16137; Glaciohound/LM-Infinite ``models/lambda_attention.py``
  and ``models/llama.py``, commit a0ce64c): keys at distance d < ``local_branch`` as they are;
  the first ``global_branch`` keys at d >= ``local_branch`` with the key unrotated and the query
  at ``limit_distance`` (every such distance reads as the limit). Defaults: local branch and
  limit L, global branch 10 (the README's ``convert_llama_model(model, 4096, 10)``).
- ``streaming-llm`` (Xiao et al. 2024, "Efficient Streaming Language Models with Attention
  Sinks", arXiv 2309.17453; mit-han-lab/streaming-llm ``kv_cache.py`` and
  ``pos_shift/modify_llama.py``, commit 2e50426): the cache keeps ``start_size`` sinks and the
  ``recent_size`` latest tokens, and positions are positions in the cache. Read per query i,
  that is: keys at d <= recent_size as they are (relative distances survive the shift), the
  first ``start_size`` keys beyond with the query at min(i, start_size + recent_size).
  Defaults 4 and 2000 (``run_streaming_llama.py``). One forward computes what their token-by-
  token evaluation (``eval_long_ppl.py`` with ``--enable_pos_shift``) computes.
"""

from __future__ import annotations

from evalkit.method import Method, Param, register


def _lambda(local_branch: int, global_branch: int, limit_distance: int, **_):
    import torch

    from evalkit.patches.regions import PLAIN, Layout, Region  # lazy: torch (listing methods needs none)

    return Layout(
        (
            Region(PLAIN, PLAIN, 0, local_branch - 1),
            Region(lambda p: torch.full_like(p, float(limit_distance)), torch.zeros_like, local_branch,
                   keys=global_branch),
        )
    )  # fmt: skip


def _streaming(start_size: int, recent_size: int, **_):
    import torch

    from evalkit.patches.regions import PLAIN, Layout, Region  # lazy: torch (listing methods needs none)

    full = float(start_size + recent_size)
    return Layout(
        (
            Region(PLAIN, PLAIN, 0, recent_size),
            Region(lambda p: torch.clamp(p, max=full), PLAIN, recent_size + 1, keys=start_size),
        )
    )


def _check_lambda(values: dict) -> str | None:
    if values["limit_distance"] > values["local_branch"]:
        return (
            f"limit_distance = {values['limit_distance']} must not exceed local_branch = {values['local_branch']} "
            "(the sinks would read nearer than the window's edge)"
        )
    return None


register(
    Method(
        "lm-infinite",
        "rope",
        "Λ-shaped attention: a local window as is, the first tokens at a capped distance",
        "Han et al. 2024, arXiv 2308.16137; Glaciohound/LM-Infinite",
        (
            Param("local_branch", "keys at distance below this: ordinary RoPE (default L)", kind=int, low=1,
                  high=1 << 24, derive=lambda v, trained, n: trained, derived_text="L", per_length=False),
            Param("global_branch", "the first tokens every query also sees (the sinks)", kind=int, default=10,
                  low=0, high=1 << 24),
            Param("limit_distance", "the distance the sinks read as (default L)", kind=int, low=0, high=1 << 24,
                  derive=lambda v, trained, n: trained, derived_text="L", per_length=False),
        ),
        attention=_lambda,
        check=_check_lambda,
    )
)  # fmt: skip

register(
    Method(
        "streaming-llm",
        "rope",
        "attention sinks: the first tokens and a recent window, positions within that cache",
        "Xiao et al. 2024, arXiv 2309.17453; mit-han-lab/streaming-llm",
        (
            Param("start_size", "sink tokens kept at the start", kind=int, default=4, low=0, high=1 << 24),
            Param("recent_size", "recent tokens kept (the window holds these and the query)", kind=int,
                  default=2000, low=1, high=1 << 24),
        ),
        attention=_streaming,
    )
)  # fmt: skip
