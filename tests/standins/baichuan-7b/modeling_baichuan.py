"""Stand-in for Baichuan-7B's ``modeling_baichuan.py`` (evalkit tests; not Baichuan's code).

The facts of baichuan-inc/Baichuan-7B ``models/modeling_baichuan.py`` that matter to evalkit:
classes spelled ``BaiChuanForCausalLM`` / ``Model``; ``xformers`` imported at module level
outside any try block (transformers refuses the file without it) and used only in
training mode; one ``RotaryEmbedding(dim, max_position_embeddings, base=10000)`` per layer
with a PERSISTENT ``inv_freq`` buffer and non-persistent cos/sin caches rebuilt only
when a sequence is longer than ``max_seq_len_cached``; the caches indexed by
``position_ids``; a fused ``W_pack`` projection; a plain linear LM head.
"""
import torch
from torch import nn
from xformers import ops as xops

from .baichuan_common import (BaichuanCausalLMBase, PackedAttention, RopeModelBase, attend,
                              rotate_half, split_packed)
from .configuration_baichuan import BaiChuanConfig


class RotaryEmbedding(nn.Module):
    def __init__(self, dim, max_position_embeddings=2048, base=10000, device=None):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2).float().to(device) / dim))
        self.register_buffer("inv_freq", inv_freq)  # persistent: saved in and loaded from the checkpoint
        self._build(max_position_embeddings, self.inv_freq.device)

    def _build(self, length, device):
        self.max_seq_len_cached = length
        t = torch.arange(length, device=device, dtype=self.inv_freq.dtype)
        emb = torch.cat([torch.outer(t, self.inv_freq.to(device))] * 2, dim=-1)
        self.register_buffer("cos_cached", emb.cos()[None, None], persistent=False)
        self.register_buffer("sin_cached", emb.sin()[None, None], persistent=False)

    def forward(self, x, seq_len=None):
        if seq_len > self.max_seq_len_cached:
            self._build(seq_len, x.device)
        return self.cos_cached[:, :, :seq_len].to(x.dtype), self.sin_cached[:, :, :seq_len].to(x.dtype)


def apply_rotary_pos_emb(q, k, cos, sin, position_ids):
    cos = cos.squeeze(1).squeeze(0)[position_ids].unsqueeze(1)  # (B, 1, T, D)
    sin = sin.squeeze(1).squeeze(0)[position_ids].unsqueeze(1)
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


class Attention(PackedAttention):
    def __init__(self, config):
        super().__init__(config)
        self.rotary_emb = RotaryEmbedding(self.head_dim, max_position_embeddings=config.max_position_embeddings)

    def forward(self, hidden_states, attention_mask=None, position_ids=None, past_key_value=None, use_cache=False):
        q, k, v = split_packed(self.W_pack(hidden_states), self.num_heads, self.head_dim)
        kv_seq_len = k.shape[-2] + (past_key_value[0].shape[-2] if past_key_value is not None else 0)
        cos, sin = self.rotary_emb(v, seq_len=kv_seq_len)
        q, k = apply_rotary_pos_emb(q, k, cos, sin, position_ids)
        if self.training:  # the only use of xformers, as upstream
            out = xops.memory_efficient_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                  attn_bias=xops.LowerTriangularMask())
            return self.o_proj(out.reshape(*hidden_states.shape)), None
        if past_key_value is not None:
            k, v = torch.cat([past_key_value[0], k], dim=2), torch.cat([past_key_value[1], v], dim=2)
        return self.o_proj(attend(q, k, v, attention_mask)), ((k, v) if use_cache else None)


class Model(RopeModelBase):
    config_class = BaiChuanConfig
    attention_class = Attention


class BaiChuanForCausalLM(BaichuanCausalLMBase):
    config_class = BaiChuanConfig
    model_class = Model
