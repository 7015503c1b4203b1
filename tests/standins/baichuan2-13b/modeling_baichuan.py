"""Stand-in for Baichuan2-13B's ``modeling_baichuan.py`` (evalkit tests; not Baichuan's code).

The facts of Baichuan2-13B's modeling code that matter to evalkit: ``_get_interleave(n)``
as in Baichuan-13B (recursing through its global name); ``_gen_alibi_mask(tensor, n_head,
max_pos)`` with the relative bias slope × (j − i); the same ``future_mask`` / ``first_run``
cache; ``xformers`` imported inside try/except; the ``NormHead`` LM head.
"""
import math
import sys

import torch

from .baichuan_alibi import AlibiModelBase
from .baichuan_common import BaichuanCausalLMBase, NormHead
from .configuration_baichuan import BaichuanConfig

try:
    from xformers import ops as xops
except ImportError:
    xops = None


def _get_interleave(n):
    def power_of_2(n):
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(n).is_integer():
        return power_of_2(n)
    closest = 2 ** math.floor(math.log2(n))
    return power_of_2(closest) + _get_interleave(2 * closest)[0::2][: n - closest]


def _fill_with_neg_inf(t):
    return t.float().fill_(float("-inf")).type_as(t)


def _gen_alibi_mask(tensor, n_head, max_pos):
    slopes = torch.Tensor(_get_interleave(n_head))
    pos = torch.arange(max_pos)
    relative = (pos[None, :] - pos[:, None]).float()  # (P, P): j - i, <= 0 where attended
    alibi = slopes[:, None, None] * relative[None]  # (H, P, P)
    return torch.triu(_fill_with_neg_inf(torch.zeros([max_pos, max_pos])), 1)[None] + alibi


def gen_mask(tensor, n_head, max_pos):
    return _gen_alibi_mask(tensor, n_head, max_pos)


class BaichuanModel(AlibiModelBase):
    config_class = BaichuanConfig
    alibi_functions = sys.modules[__name__]


class BaichuanForCausalLM(BaichuanCausalLMBase):
    config_class = BaichuanConfig
    model_class = BaichuanModel
    head_class = NormHead
