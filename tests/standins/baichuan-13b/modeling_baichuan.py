"""Stand-in for Baichuan-13B's ``modeling_baichuan.py`` (evalkit tests; not Baichuan's code).

The facts of baichuan-inc/Baichuan-13B-Base's modeling code that matter to evalkit:
``_get_interleave(n)`` giving the ALiBi paper's slopes and recursing through its own
module-global name for non-power-of-two n; ``_gen_alibi_mask(n_head, max_pos)`` with the
bias slope × key position; the ``future_mask`` / ``first_run`` / ``max_cache_pos`` cache
of ``BaichuanModel.get_alibi_mask`` and the per-length ``alibi_mask`` cache in training;
a function-level import of ``transformers_stream_generator`` (chat streaming only) that
transformers still demands at load time; a plain linear LM head.
"""
import math
import sys

import torch

from .baichuan_alibi import AlibiModelBase
from .baichuan_common import BaichuanCausalLMBase
from .configuration_baichuan import BaichuanConfig


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


def _gen_alibi_mask(n_head, max_pos):
    slopes = torch.Tensor(_get_interleave(n_head))
    alibi = slopes[:, None, None] * torch.arange(max_pos)[None, None, :]  # (H, 1, P)
    return torch.triu(_fill_with_neg_inf(torch.zeros([max_pos, max_pos])), 1)[None] + alibi  # (H, P, P)


def gen_mask(tensor, n_head, max_pos):
    return _gen_alibi_mask(n_head, max_pos)


class BaichuanModel(AlibiModelBase):
    config_class = BaichuanConfig
    alibi_functions = sys.modules[__name__]


class BaichuanForCausalLM(BaichuanCausalLMBase):
    config_class = BaichuanConfig
    model_class = BaichuanModel

    def chat(self, tokenizer, messages, stream=False):
        if stream:
            from transformers_stream_generator.main import NewGenerationMixin  # noqa: F401
        raise NotImplementedError("the stand-in has no chat")
