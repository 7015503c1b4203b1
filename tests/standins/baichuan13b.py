"""A small stand-in for Baichuan-13B's remote modeling code (``modeling_baichuan.py``).

Written for evalkit's tests (the real code is remote code, unavailable
offline), with the same public names and ALiBi mechanics: module functions
``_get_interleave(n)`` (recursing through its own global name) and
``_gen_alibi_mask(n_head, max_pos)``, and ``BaichuanModel.get_alibi_mask``,
which builds ``future_mask`` on the first run and caches it (``first_run``,
``max_cache_pos``). It is not Baichuan's code and its weights are random.
"""
from __future__ import annotations

import math
from types import SimpleNamespace

import torch
from torch import nn

from tests.standins import baichuan7b


def make_config(**overrides):
    cfg = dict(model_type="baichuan", vocab_size=128, hidden_size=80, num_attention_heads=5,
               num_hidden_layers=2, intermediate_size=128, model_max_length=64, rms_norm_eps=1e-6)
    cfg.update(overrides)
    return SimpleNamespace(**cfg)


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
    future = torch.triu(_fill_with_neg_inf(torch.zeros([max_pos, max_pos])), 1)  # (P, P)
    return future[None] + alibi  # (H, P, P)


class BaichuanAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.hidden_size, self.num_heads = config.hidden_size, config.num_attention_heads
        self.head_dim = self.hidden_size // self.num_heads
        self.W_pack = nn.Linear(self.hidden_size, 3 * self.hidden_size, bias=False)
        self.o_proj = nn.Linear(self.hidden_size, self.hidden_size, bias=False)

    def forward(self, hidden_states, attention_mask, past_key_value=None):
        bsz, q_len, _ = hidden_states.shape
        q, k, v = baichuan7b.split_packed(self.W_pack(hidden_states), self.num_heads, self.head_dim)
        if past_key_value is not None:
            k = torch.cat([past_key_value[0], k], dim=2)
            v = torch.cat([past_key_value[1], v], dim=2)
        scores = q @ k.transpose(2, 3) / math.sqrt(self.head_dim)  # (B, H, T, S)
        scores = scores + attention_mask[:, -q_len:, :]
        out = torch.softmax(scores.float(), dim=-1).to(v.dtype) @ v
        return self.o_proj(out.transpose(1, 2).reshape(bsz, q_len, -1)), (k, v)


class BaichuanLayer(baichuan7b.DecoderLayer):
    attention_class = BaichuanAttention


class BaichuanModel(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.n_head = config.num_attention_heads
        self.max_cache_pos = config.model_max_length
        self.first_run = True
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(BaichuanLayer(config) for _ in range(config.num_hidden_layers))
        self.norm = baichuan7b.RMSNorm(config.hidden_size, config.rms_norm_eps)

    def get_alibi_mask(self, tensor, seq_length_with_past):
        if self.first_run:
            self.first_run = False
            self.register_buffer("future_mask", _gen_alibi_mask(self.n_head, self.max_cache_pos).to(tensor),
                                 persistent=False)
        if seq_length_with_past > self.max_cache_pos:
            self.max_cache_pos = seq_length_with_past
            self.register_buffer("future_mask", _gen_alibi_mask(self.n_head, self.max_cache_pos).to(tensor),
                                 persistent=False)
        return self.future_mask[: self.n_head, :seq_length_with_past, :seq_length_with_past]

    def forward(self, input_ids, past_key_values=None):
        past = past_key_values[0][0].shape[-2] if past_key_values else 0
        h = self.embed_tokens(input_ids)
        mask = self.get_alibi_mask(h, past + input_ids.shape[1])
        presents = []
        for i, layer in enumerate(self.layers):
            h, present = layer(h, past_key_values[i] if past_key_values else None, attention_mask=mask)
            presents.append(present)
        return self.norm(h), tuple(presents)


class BaichuanForCausalLM(baichuan7b.BaichuanForCausalLM):
    """Same head and output as the 7B stand-in; the ALiBi base model above."""

    base_model_class = BaichuanModel
