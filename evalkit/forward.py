"""Forward passes that never hold all L × vocabulary logits.

The model's LM head is swapped for a module that only records the final hidden
states; the real head is then applied to chunks of positions, and the loss is
taken per chunk in fp32. At 16k tokens the full fp32 logits of SmolLM2 (vocab
49152) would be 3.2 GB; here the peak is one chunk's worth.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from evalkit.patches._swap import swap

CHUNK = 1024  # positions per LM-head chunk


class _Capture(nn.Module):
    """Stands in for the LM head: keeps its input, returns empty logits."""

    def __init__(self):
        super().__init__()
        self.hidden = None

    def forward(self, hidden):
        self.hidden = hidden
        return hidden[..., :0]


def _head_name(model) -> str:
    head = model.get_output_embeddings()
    for name, child in model.named_children():
        if child is head:
            return name
    raise RuntimeError(f"cannot find the LM head of {type(model).__name__}")


@torch.no_grad()
def hidden_states(model, input_ids, past_key_values=None, use_cache=False):
    """Final hidden states (B, T, H) and the cache, without computing logits."""
    capture = _Capture()
    with contextlib.ExitStack() as stack:
        swap(stack, model, _head_name(model), capture)
        kwargs = {"use_cache": use_cache}
        if past_key_values is not None:
            kwargs["past_key_values"] = past_key_values
        out = model(input_ids=input_ids, **kwargs)
    return capture.hidden, getattr(out, "past_key_values", None)


@torch.no_grad()
def token_nll(model, input_ids: torch.Tensor, chunk: int = CHUNK) -> torch.Tensor:
    """NLL (fp32, nats) of every predicted token of one sequence: shape (T-1,)."""
    hidden, _ = hidden_states(model, input_ids)  # (1, T, H)
    head = model.get_output_embeddings()
    targets = input_ids[0, 1:].to(hidden.device)
    out = torch.empty(targets.numel(), dtype=torch.float32, device=hidden.device)
    for start in range(0, targets.numel(), chunk):
        end = min(start + chunk, targets.numel())
        logits = head(hidden[0, start:end]).float()  # (chunk, V)
        out[start:end] = torch.nn.functional.cross_entropy(logits, targets[start:end], reduction="none")
    return out


@torch.no_grad()
def next_token_logits(model, input_ids, past_key_values=None):
    """Logits of the last position only, and the updated KV cache."""
    hidden, cache = hidden_states(model, input_ids, past_key_values, use_cache=True)
    return model.get_output_embeddings()(hidden[:, -1]).float(), cache
