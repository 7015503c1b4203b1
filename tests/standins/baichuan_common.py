"""Building blocks shared by evalkit's Baichuan stand-ins (copied into each stand-in checkpoint).

Written for evalkit's tests; not Baichuan's code. The parts here (norm, MLP,
packed q/k/v, decoder layer, the layer loop and the causal-LM output) are the
same in all four releases; what differs between releases and matters to evalkit
lives in each release's ``modeling_baichuan.py``.
"""

import math

import torch
from torch import nn
from torch.nn import functional as F
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast


class BaichuanConfigBase(PretrainedConfig):
    model_type = "baichuan"

    def __init__(
        self,
        vocab_size=64000,
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        hidden_act="silu",
        rms_norm_eps=1e-6,
        initializer_range=0.02,
        use_cache=True,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
        **kwargs,
    ):
        self.vocab_size, self.hidden_size, self.intermediate_size = vocab_size, hidden_size, intermediate_size
        self.num_hidden_layers, self.num_attention_heads = num_hidden_layers, num_attention_heads
        self.hidden_act, self.rms_norm_eps, self.initializer_range = hidden_act, rms_norm_eps, initializer_range
        self.use_cache = use_cache
        super().__init__(
            pad_token_id=pad_token_id,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )


class RMSNorm(nn.Module):
    def __init__(self, hidden_size, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, x):
        variance = x.float().pow(2).mean(-1, keepdim=True)
        return self.weight * (x.float() * torch.rsqrt(variance + self.eps)).to(self.weight.dtype)


class MLP(nn.Module):
    def __init__(self, hidden_size, intermediate_size):
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def split_packed(proj, num_heads, head_dim):
    """(B, T, 3·H·D) from ``W_pack`` -> q, k, v each (B, H, T, D)."""
    bsz, q_len, _ = proj.shape
    return [t.view(bsz, q_len, num_heads, head_dim).transpose(1, 2) for t in proj.chunk(3, dim=-1)]


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def attend(q, k, v, bias):
    """softmax(q·kᵀ/√d + bias)·v in fp32; bias broadcasts to (B, H, T, S)."""
    scores = q @ k.transpose(2, 3) / math.sqrt(q.shape[-1]) + bias
    out = torch.softmax(scores.float(), dim=-1).to(v.dtype) @ v  # (B, H, T, D)
    return out.transpose(1, 2).reshape(q.shape[0], q.shape[2], -1)


class PackedAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.hidden_size, self.num_heads = config.hidden_size, config.num_attention_heads
        self.head_dim = self.hidden_size // self.num_heads
        self.W_pack = nn.Linear(self.hidden_size, 3 * self.hidden_size, bias=False)
        self.o_proj = nn.Linear(self.hidden_size, self.hidden_size, bias=False)


class DecoderLayer(nn.Module):
    def __init__(self, config, attention_class):
        super().__init__()
        self.self_attn = attention_class(config)
        self.mlp = MLP(config.hidden_size, config.intermediate_size)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, hidden_states, past_key_value=None, use_cache=False, **attention_inputs):
        attn, present = self.self_attn(
            hidden_states=self.input_layernorm(hidden_states),
            past_key_value=past_key_value,
            use_cache=use_cache,
            **attention_inputs,
        )
        hidden_states = hidden_states + attn
        return hidden_states + self.mlp(self.post_attention_layernorm(hidden_states)), present


class BaichuanPreTrainedBase(PreTrainedModel):
    base_model_prefix = "model"
    _no_split_modules = ["DecoderLayer"]

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(mean=0.0, std=self.config.initializer_range)


class BaichuanModelBase(BaichuanPreTrainedBase):
    """Embedding, decoder layers with tuple KV caches, final norm. Each release says
    what its attention gets (positions, or an ALiBi mask) in ``attention_inputs``."""

    attention_class = None

    def __init__(self, config):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.layers = nn.ModuleList(DecoderLayer(config, self.attention_class) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_init()

    def get_input_embeddings(self):
        return self.embed_tokens

    def attention_inputs(self, hidden, past_len, position_ids):
        raise NotImplementedError

    def forward(
        self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None, use_cache=None, **_
    ):
        past_len = past_key_values[0][0].shape[-2] if past_key_values else 0
        hidden = self.embed_tokens(input_ids)
        inputs = self.attention_inputs(hidden, past_len, position_ids)
        presents = []
        for i, layer in enumerate(self.layers):
            hidden, present = layer(
                hidden, past_key_values[i] if past_key_values else None, use_cache=use_cache, **inputs
            )
            presents.append(present)
        return self.norm(hidden), tuple(presents) if use_cache else None


class RopeModelBase(BaichuanModelBase):
    """The RoPE releases: each layer gets positions and an additive causal mask."""

    def attention_inputs(self, hidden, past_len, position_ids):
        if position_ids is None:
            position_ids = torch.arange(past_len, past_len + hidden.shape[1], device=hidden.device)[None]
        return dict(attention_mask=causal_mask(hidden, past_len), position_ids=position_ids)


def causal_mask(hidden, past_len):
    """Additive (1, 1, T, S) mask: 0 where key j <= query i, the dtype's minimum elsewhere."""
    q_len = hidden.shape[1]
    allowed = torch.ones(q_len, past_len + q_len, dtype=torch.bool, device=hidden.device).tril(past_len)
    return torch.zeros(allowed.shape, dtype=hidden.dtype, device=hidden.device).masked_fill(
        ~allowed, torch.finfo(hidden.dtype).min
    )[None, None]


class NormHead(nn.Module):
    """Baichuan2's LM head: rows normalised at forward time (once, in place, in eval mode)."""

    def __init__(self, hidden_size, vocab_size):
        super().__init__()
        self.weight = nn.Parameter(torch.empty((vocab_size, hidden_size)))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.first_flag = True

    def forward(self, hidden_states):
        if self.training:
            norm_weight = F.normalize(self.weight)
            self.first_flag = True
        elif self.first_flag:
            self.first_flag = False
            self.weight.data = F.normalize(self.weight)
            norm_weight = self.weight
        else:
            norm_weight = self.weight
        return F.linear(hidden_states, norm_weight)


class BaichuanCausalLMBase(BaichuanPreTrainedBase):
    model_class = None
    head_class = None  # None: a plain nn.Linear

    def __init__(self, config):
        super().__init__(config)
        self.model = self.model_class(config)
        self.lm_head = (self.head_class or (lambda h, v: nn.Linear(h, v, bias=False)))(
            config.hidden_size, config.vocab_size
        )
        self.post_init()

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def get_output_embeddings(self):
        return self.lm_head

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        past_key_values=None,
        labels=None,
        use_cache=None,
        **_,
    ):
        hidden, presents = self.model(input_ids, attention_mask, position_ids, past_key_values, use_cache)
        logits = self.lm_head(hidden)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), labels[:, 1:].reshape(-1))
        return CausalLMOutputWithPast(loss=loss, logits=logits, past_key_values=presents)
