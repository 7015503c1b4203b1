"""Dual Chunk Attention (DCA; An et al. 2024, "Training-Free Long-Context Scaling of Large Language
Models", arXiv 2402.17463), on the region mechanism (:mod:`evalkit.patches.regions`).

The sequence is cut into chunks of ``c = chunk_size - local_window`` tokens; every key sits at its
position within its chunk, ``j mod c``. A query at ``i`` sees three regions:

- intra-chunk (keys of its own chunk, causal): the query at ``i mod c``;
- successive-chunk (the chunk before): the query at ``min(i mod c + c, chunk_size)``;
- inter-chunk (every older chunk): the query at ``min(2c - 1, chunk_size)``.

As HKUNLP/ChunkLlama ``chunkllama_attn_replace.py`` (commit 2add4d7): defaults chunk_size
= 3L/4 and local_window = L/8 of the trained length L, and cos and sin of queries and keys
times 0.05 ln(n / L) + 1 for a sequence of n > L tokens (so the method is not static: that
factor follows the length; it is chosen at the prefill and kept for cached decoding).
"""

from __future__ import annotations

import math

from evalkit.method import Method, Param, register


def _layout(chunk_size: int, local_window: int, **_):
    import torch

    from evalkit.patches.regions import Layout, Region  # lazy: torch (listing methods needs none)

    c = chunk_size - local_window
    within = lambda p: torch.remainder(p, c)  # noqa: E731
    return Layout(
        (
            Region(within, within, chunk=c, chunk_back=0),
            Region(lambda p: torch.clamp(torch.remainder(p, c) + c, max=chunk_size), within, chunk=c, chunk_back=1),
            Region(lambda p: torch.full_like(p, float(min(2 * c - 1, chunk_size))), within, chunk=c, chunk_back=None),
        ),
        temperature=lambda n, trained: 0.05 * math.log(n / trained) + 1.0 if n > trained else 1.0,
    )


def _check(values: dict) -> str | None:
    if values["local_window"] >= values["chunk_size"]:
        return (
            f"local_window = {values['local_window']} must be smaller than chunk_size = {values['chunk_size']} "
            "(the chunk would hold no token)"
        )
    return None


CHUNK = Param("chunk_size", "tokens per chunk, below the trained length (default 3L/4)", kind=int, low=2,
              high=1 << 24, derive=lambda v, trained, n: trained * 3 // 4, derived_text="3L/4", per_length=False,
              below_trained=True)  # fmt: skip
WINDOW = Param("local_window", "tokens the chunk gives up at its start (default L/8)", kind=int, low=0,
               high=1 << 24, derive=lambda v, trained, n: trained // 8, derived_text="L/8", per_length=False)  # fmt: skip

register(
    Method(
        "dca",
        "rope",
        "dual chunk attention: positions within chunks; intra / successive / inter-chunk regions",
        "An et al. 2024, arXiv 2402.17463; HKUNLP/ChunkLlama",
        (CHUNK, WINDOW),
        static=False,
        attention=_layout,
        check=_check,
    )
)
