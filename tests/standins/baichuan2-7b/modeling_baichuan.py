"""Stand-in for Baichuan2-7B's ``modeling_baichuan.py`` (evalkit tests; not Baichuan's code).

The facts of Baichuan2-7B-Base's modeling code that matter to evalkit: classes spelled
``BaichuanForCausalLM`` / ``BaichuanModel``; ``xformers`` imported inside try/except
(optional); a ``RotaryEmbedding`` per layer whose ``inv_freq``, ``cos_cached`` and
``sin_cached`` are PLAIN fp32 attributes, not buffers (transformers 5 leaves them on the
meta device after ``from_pretrained``), moved to the input's device on use; rotation in
fp32; the ``NormHead`` LM head.
"""
import torch
from torch import nn

from .baichuan_common import (BaichuanCausalLMBase, NormHead, PackedAttention, RopeModelBase, attend,
                              rotate_half, split_packed)
from .configuration_baichuan import BaichuanConfig

try:
    from xformers import ops as xops
except ImportError:
    xops = None


class RotaryEmbedding(nn.Module):
    def __init__(self, dim, max_position_embeddings=2048, base=10000, device=None):
        super().__init__()
        self.inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2).float().to(device) / dim))
        self._build(max_position_embeddings)

    def _build(self, length):
        self.max_seq_len_cached = length
        t = torch.arange(length, device=self.inv_freq.device, dtype=torch.float32)
        emb = torch.cat([torch.outer(t, self.inv_freq)] * 2, dim=-1)
        self.cos_cached = emb.cos()[None, None].to(torch.float32)
        self.sin_cached = emb.sin()[None, None].to(torch.float32)

    def forward(self, x, seq_len=None):
        if seq_len > self.max_seq_len_cached:
            self._build(seq_len)
        if self.cos_cached.device != x.device:
            self.cos_cached, self.sin_cached = self.cos_cached.to(x.device), self.sin_cached.to(x.device)
        return self.cos_cached[:, :, :seq_len], self.sin_cached[:, :, :seq_len]


def apply_rotary_pos_emb(q, k, cos, sin, position_ids):
    cos = cos.squeeze(1).squeeze(0)[position_ids].unsqueeze(1)  # (B, 1, T, D)
    sin = sin.squeeze(1).squeeze(0)[position_ids].unsqueeze(1)
    q_embed = q.float() * cos + rotate_half(q.float()) * sin
    k_embed = k.float() * cos + rotate_half(k.float()) * sin
    return q_embed.to(q.dtype), k_embed.to(k.dtype)


class Attention(PackedAttention):
    def __init__(self, config):
        super().__init__(config)
        self.rotary_emb = RotaryEmbedding(self.head_dim, max_position_embeddings=config.max_position_embeddings)

    def forward(self, hidden_states, attention_mask=None, position_ids=None, past_key_value=None, use_cache=False):
        q, k, v = split_packed(self.W_pack(hidden_states), self.num_heads, self.head_dim)
        kv_seq_len = k.shape[-2] + (past_key_value[0].shape[-2] if past_key_value is not None else 0)
        cos, sin = self.rotary_emb(v, seq_len=kv_seq_len)
        q, k = apply_rotary_pos_emb(q, k, cos, sin, position_ids)
        if past_key_value is not None:
            k, v = torch.cat([past_key_value[0], k], dim=2), torch.cat([past_key_value[1], v], dim=2)
        return self.o_proj(attend(q, k, v, attention_mask)), ((k, v) if use_cache else None)


class BaichuanModel(RopeModelBase):
    config_class = BaichuanConfig
    attention_class = Attention


class BaichuanForCausalLM(BaichuanCausalLMBase):
    config_class = BaichuanConfig
    model_class = BaichuanModel
    head_class = NormHead
