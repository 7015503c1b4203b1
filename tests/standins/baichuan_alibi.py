"""ALiBi parts shared by evalkit's Baichuan-13B and Baichuan2-13B stand-ins (not Baichuan's code).

``get_alibi_mask`` as in both upstream 13B files: in eval mode the mask for
``max_cache_pos`` positions is built on the first run and cached as the buffer
``future_mask`` (``first_run``), rebuilt only for a longer sequence; in training
mode it is built per call and the model caches it in ``alibi_mask`` per length.
The module-level ``_get_interleave`` / ``_gen_alibi_mask`` of each release are
looked up in that release's module (``self.alibi_functions``), as upstream
calls its own module globals.
"""

import torch

from .baichuan_common import BaichuanModelBase, PackedAttention, attend, split_packed


class AlibiAttention(PackedAttention):
    def forward(self, hidden_states, attention_mask=None, past_key_value=None, use_cache=False):
        q, k, v = split_packed(self.W_pack(hidden_states), self.num_heads, self.head_dim)
        if past_key_value is not None:
            k, v = torch.cat([past_key_value[0], k], dim=2), torch.cat([past_key_value[1], v], dim=2)
        bias = attention_mask[:, -q.shape[2] :, :]  # (H, T, S): the queries' rows of the cached mask
        return self.o_proj(attend(q, k, v, bias)), ((k, v) if use_cache else None)


class AlibiModelBase(BaichuanModelBase):
    attention_class = AlibiAttention
    alibi_functions = None  # the release's module: _get_interleave, _gen_alibi_mask, gen_mask(...)

    def __init__(self, config):
        super().__init__(config)
        self.n_head = config.num_attention_heads
        self.max_cache_pos = config.model_max_length
        self.first_run = True
        self.alibi_mask = None

    def get_alibi_mask(self, tensor, seq_length_with_past):
        gen = self.alibi_functions.gen_mask
        if self.training:
            return gen(tensor, self.n_head, seq_length_with_past).to(tensor)
        if self.first_run:
            self.first_run = False
            self.register_buffer(
                "future_mask", gen(tensor, self.n_head, self.max_cache_pos).to(tensor), persistent=False
            )
        if seq_length_with_past > self.max_cache_pos:
            self.max_cache_pos = seq_length_with_past
            self.register_buffer(
                "future_mask", gen(tensor, self.n_head, self.max_cache_pos).to(tensor), persistent=False
            )
        return self.future_mask[: self.n_head, :seq_length_with_past, :seq_length_with_past]

    def attention_inputs(self, hidden, past_len, position_ids):
        length = past_len + hidden.shape[1]
        if self.training:
            if self.alibi_mask is None or self.alibi_mask.shape[-1] != length:
                self.alibi_mask = self.get_alibi_mask(hidden, length)
            return dict(attention_mask=self.alibi_mask)
        return dict(attention_mask=self.get_alibi_mask(hidden, length))
