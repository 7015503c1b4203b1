"""A small stand-in for Baichuan-7B's remote modeling code (``modeling_baichuan.py``).

The real code is remote code on the Hugging Face hub and is not available
offline. This stand-in was written for evalkit's tests: it has the same public
names and the same position mechanics that evalkit patches: one
``RotaryEmbedding(dim, max_position_embeddings, base)`` per layer with a
persistent ``inv_freq`` buffer and cos/sin caches rebuilt only when a sequence
is longer than ``max_seq_len_cached``; ``apply_rotary_pos_emb`` indexing the
caches by ``position_ids``; a fused ``W_pack`` q/k/v projection. It is not
Baichuan's code and its weights are random.
"""
from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn
from torch.nn import functional as F


def make_config(**overrides):
    cfg = dict(model_type="baichuan", vocab_size=128, hidden_size=64, num_attention_heads=4,
               num_hidden_layers=2, intermediate_size=128, max_position_embeddings=64, rms_norm_eps=1e-6)
    cfg.update(overrides)
    return SimpleNamespace(**cfg)


class RMSNorm(nn.Module):
    def __init__(self, size, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x):
        var = x.float().pow(2).mean(-1, keepdim=True)
        return (self.weight * (x.float() * torch.rsqrt(var + self.eps))).to(x.dtype)


class RotaryEmbedding(nn.Module):
    def __init__(self, dim, max_position_embeddings=2048, base=10000, device=None):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim))
        self.register_buffer("inv_freq", inv_freq)  # persistent, as upstream
        self._build(max_position_embeddings)

    def _build(self, length):
        self.max_seq_len_cached = length
        t = torch.arange(length, dtype=self.inv_freq.dtype, device=self.inv_freq.device)
        emb = torch.cat([torch.outer(t, self.inv_freq)] * 2, dim=-1)
        self.register_buffer("cos_cached", emb.cos()[None, None], persistent=False)
        self.register_buffer("sin_cached", emb.sin()[None, None], persistent=False)

    def forward(self, x, seq_len=None):
        if seq_len > self.max_seq_len_cached:
            self._build(seq_len)
        return (self.cos_cached[:, :, :seq_len].to(x.dtype), self.sin_cached[:, :, :seq_len].to(x.dtype))


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary_pos_emb(q, k, cos, sin, position_ids):
    cos = cos.squeeze(1).squeeze(0)[position_ids].unsqueeze(1)  # (B, 1, T, d)
    sin = sin.squeeze(1).squeeze(0)[position_ids].unsqueeze(1)
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


def split_packed(proj, num_heads, head_dim):
    """(B, T, 3·H·D) from ``W_pack`` -> q, k, v each (B, H, T, D)."""
    bsz, q_len, _ = proj.shape
    return (t.view(bsz, q_len, num_heads, head_dim).transpose(1, 2) for t in proj.chunk(3, dim=-1))


class Attention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.hidden_size, self.num_heads = config.hidden_size, config.num_attention_heads
        self.head_dim = self.hidden_size // self.num_heads
        self.W_pack = nn.Linear(self.hidden_size, 3 * self.hidden_size, bias=False)
        self.o_proj = nn.Linear(self.hidden_size, self.hidden_size, bias=False)
        self.rotary_emb = RotaryEmbedding(self.head_dim, config.max_position_embeddings)

    def forward(self, hidden_states, position_ids, past_key_value=None):
        bsz, q_len, _ = hidden_states.shape
        q, k, v = split_packed(self.W_pack(hidden_states), self.num_heads, self.head_dim)
        kv_seq_len = q_len + (past_key_value[0].shape[-2] if past_key_value is not None else 0)
        cos, sin = self.rotary_emb(v, seq_len=kv_seq_len)
        q, k = apply_rotary_pos_emb(q, k, cos, sin, position_ids)
        if past_key_value is not None:
            k = torch.cat([past_key_value[0], k], dim=2)
            v = torch.cat([past_key_value[1], v], dim=2)
        causal = torch.ones(q_len, kv_seq_len, dtype=torch.bool).tril(kv_seq_len - q_len)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=causal.to(q.device))
        return self.o_proj(out.transpose(1, 2).reshape(bsz, q_len, -1)), (k, v)


class DecoderLayer(nn.Module):
    attention_class = Attention

    def __init__(self, config):
        super().__init__()
        self.self_attn = self.attention_class(config)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = nn.Sequential(nn.Linear(config.hidden_size, config.intermediate_size, bias=False), nn.SiLU(),
                                 nn.Linear(config.intermediate_size, config.hidden_size, bias=False))

    def forward(self, h, past_key_value=None, **attention_inputs):
        attn, present = self.self_attn(hidden_states=self.input_layernorm(h), past_key_value=past_key_value,
                                       **attention_inputs)
        h = h + attn
        return h + self.mlp(self.post_attention_layernorm(h)), present


class BaichuanModel(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, input_ids, past_key_values=None):
        past = past_key_values[0][0].shape[-2] if past_key_values else 0
        position_ids = torch.arange(past, past + input_ids.shape[1], device=input_ids.device)[None]
        h, presents = self.embed_tokens(input_ids), []
        for i, layer in enumerate(self.layers):
            h, present = layer(h, past_key_values[i] if past_key_values else None, position_ids=position_ids)
            presents.append(present)
        return self.norm(h), tuple(presents)


class BaichuanForCausalLM(nn.Module):
    base_model_class = BaichuanModel

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.model = self.base_model_class(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)

    def get_output_embeddings(self):
        return self.lm_head

    def forward(self, input_ids, past_key_values=None, use_cache=False, **_):
        h, presents = self.model(input_ids, past_key_values)
        return SimpleNamespace(logits=self.lm_head(h), past_key_values=presents if use_cache else None,
                               hidden_states=(h,))
