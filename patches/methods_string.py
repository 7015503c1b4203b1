"""STRING (An et al. 2024, "Why Does the Effective Context Length of LLMs Fall Short?",
arXiv 2410.18745), on the region mechanism (:mod:`evalkit.patches.regions`).

STRING shifts the well-trained small relative positions over the large ones the model rarely
saw: a query at ``i`` attends to keys at distance ``d <= S`` (the window, ``shift`` = S) with
ordinary RoPE, and to keys at ``d >= S`` with its own position moved back by ``S - W``
(``window`` = W, the small local value), so those distances read as ``d - S + W``. The key at
exactly ``d = S`` is in both regions, as in the reference's prefill, whose two flash-attention
calls (``window_size=[S, 0]`` and the shifted causal triangle) are merged by their LSE. The
reference's flash-decoding path counts that key once (cache slices [n − S, n) and [0, n − S));
evalkit keeps the prefill's rule for every forward, so a trial resumed from a shared cache
equals a full prefill.

As justHungryMan/STRING ``string_for_llama.py`` (commit b80b54e; README: shifted_offset
= 0.33 L, small_local_value = 128): defaults shift = int(0.33 L) and window = 128, and cos and
sin of queries and keys alike times ``attention_factor`` = 0.1 ln 2 + 1 ≈ 1.0693 (the
reference's fixed factor, "to recover" the attention map STRING smooths, "similar with YaRN"),
on top of the checkpoint's own factor.
"""

from __future__ import annotations

import math

from evalkit.method import Method, Param, register


def _layout(shift: int, window: int, attention_factor: float, **_):
    from evalkit.patches.regions import PLAIN, Layout, Region  # lazy: torch (listing methods needs none)

    regions = (Region(PLAIN, PLAIN, 0, shift), Region(lambda p: p - shift + window, PLAIN, shift))
    return Layout(regions, temperature=lambda n, trained: attention_factor)


def _check(values: dict) -> str | None:
    if values["window"] > values["shift"]:
        return f"window = {values['window']} must not exceed shift = {values['shift']} (the shifted positions would pass the window's)"
    return None


SHIFT = Param("shift", "S: distances up to S keep their positions; beyond, d - S + W (default 0.33 L)",
              kind=int, low=1, high=1 << 24, derive=lambda v, trained, n: int(0.33 * trained),
              derived_text="0.33L", per_length=False, below_trained=True)  # fmt: skip
WINDOW = Param("window", "W: the smallest shifted distance (the reference's small_local_value)", kind=int,
               default=128, low=0, high=1 << 24)  # fmt: skip
FACTOR = Param("attention_factor", "on cos and sin of queries and keys (the reference's 0.1 ln 2 + 1)",
               default=0.1 * math.log(2) + 1, low=0.01, high=100.0)  # fmt: skip

register(
    Method(
        "string",
        "rope",
        "shifted RoPE: distances past S read as d - S + W; two regions merged by their LSE",
        "An et al. 2024, arXiv 2410.18745; HKUNLP/STRING",
        (SHIFT, WINDOW, FACTOR),
        attention=_layout,
        check=_check,
    )
)
