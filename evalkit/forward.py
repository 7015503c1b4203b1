"""Forward passes that never hold all L × vocabulary logits.

The model's LM head is swapped for a module that only records the final hidden
states; the real head is then applied to chunks of positions, and the loss is
taken per chunk in fp32. At 16k tokens the full fp32 logits of SmolLM2 (vocab
49152) would be 3.2 GB; here the peak is one chunk's worth.

Some families change the head's output before returning logits: softcapping
(Gemma 2 and later), a multiplier (Cohere) or a divisor (Granite). Those are
read from the config and applied here too, and the first call on each model
checks on a few tokens that these logits equal the model's own; a model that
does something else to its logits is refused rather than scored wrongly.
"""

from __future__ import annotations

import contextlib
import functools
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

from evalkit.errors import EvalkitError
from evalkit.kvcache import cache_arg, cache_out
from evalkit.swap import swap

if TYPE_CHECKING:
    import torch

CHUNK = 1024  # positions per LM-head chunk
PROBE = 8  # tokens of the one-off check against the model's own logits
_checked: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _no_grad(fn):
    """``torch.no_grad()`` around ``fn``, torch imported at the call (importing this module stays cheap)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import torch

        with torch.no_grad():
            return fn(*args, **kwargs)

    return wrapper


@functools.cache
def _capture_class():
    from torch import nn

    class Capture(nn.Module):
        """Stands in for the LM head: keeps its input, returns empty logits."""

        def __init__(self):
            super().__init__()
            self.hidden = None

        def forward(self, hidden):
            self.hidden = hidden
            return hidden[..., :0]

    return Capture


def _head_name(model) -> str:
    head = model.get_output_embeddings()
    for name, child in model.named_children():
        if child is head:
            return name
    raise RuntimeError(f"cannot find the LM head of {type(model).__name__}")


def logits_transform(model) -> Callable[[torch.Tensor], torch.Tensor]:
    """What the model does to its LM head's output before returning it as logits."""
    import torch

    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    steps = []
    cap = getattr(config, "final_logit_softcapping", None)
    if isinstance(cap, (int, float)) and cap > 0:  # Gemma 2+: cap · tanh(logits / cap)
        steps.append(lambda x: torch.tanh(x / cap) * cap)
    mult = getattr(config, "logit_scale", None)
    if isinstance(mult, (int, float)) and mult != 1:  # Cohere
        steps.append(lambda x: x * mult)
    div = getattr(config, "logits_scaling", None)
    if isinstance(div, (int, float)) and div != 1:  # Granite
        steps.append(lambda x: x / div)

    def apply(logits):
        for step in steps:
            logits = step(logits)
        return logits

    return apply


@_no_grad
def head_fn(model, input_ids: torch.Tensor | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """hidden (N, H) → fp32 logits (N, V) as the model computes them. Checked once per model
    against ``model(input_ids[:, :PROBE]).logits`` (not when ``input_ids`` is None)."""
    import torch

    head, transform = model.get_output_embeddings(), logits_transform(model)

    def logits_of(hidden):
        return transform(head(hidden).float())

    if input_ids is None or model in _checked:
        return logits_of
    probe = input_ids[:, :PROBE]
    want = model(input_ids=probe, use_cache=False).logits
    hidden, _ = hidden_states(model, probe)
    got = logits_of(hidden[0])
    if want is None or want.shape[-2:] != got.shape:
        raise EvalkitError(
            f"{type(model).__name__} returned no per-position logits to check evalkit's LM head against",
            "evalkit needs a causal LM whose forward returns .logits",
        )
    want = want[0].float()
    tol = 1e-4 if head.weight.dtype == torch.float32 else 3e-2  # half-precision heads round differently
    err = float((got - want).abs().max())
    if err > tol * max(1.0, float(want.abs().max())):
        raise EvalkitError(
            f"{type(model).__name__} changes its logits after the LM head in a way evalkit does not "
            f"reproduce (largest difference {err:.3g} on {probe.shape[1]} tokens); its losses would "
            "be wrong",
            "supported: plain heads, softcapping, logit_scale, logits_scaling",
        )
    _checked[model] = True
    return logits_of


@_no_grad
def hidden_states(model, input_ids, past_key_values=None, use_cache=False):
    """Final hidden states (B, T, H) and the cache, without computing logits."""
    capture = _capture_class()()
    with contextlib.ExitStack() as stack:
        swap(stack, model, _head_name(model), capture)
        kwargs = {"use_cache": use_cache}
        if past_key_values is not None:
            kwargs[cache_arg(model)] = past_key_values
        out = model(input_ids=input_ids, **kwargs)
    return capture.hidden, cache_out(out)


@_no_grad
def token_nll(model, input_ids: torch.Tensor, chunk: int = CHUNK) -> torch.Tensor:
    """NLL (fp32, nats) of every predicted token of one sequence: shape (T-1,)."""
    import torch

    logits_of = head_fn(model, input_ids)
    hidden, _ = hidden_states(model, input_ids)  # (1, T, H)
    targets = input_ids[0, 1:].to(hidden.device)
    out = torch.empty(targets.numel(), dtype=torch.float32, device=hidden.device)
    for start in range(0, targets.numel(), chunk):
        end = min(start + chunk, targets.numel())
        logits = logits_of(hidden[0, start:end])  # (chunk, V)
        out[start:end] = torch.nn.functional.cross_entropy(logits, targets[start:end], reduction="none")
    return out


@_no_grad
def next_token_logits(model, input_ids, past_key_values=None):
    """Logits of the last position only, and the updated KV cache."""
    logits_of = head_fn(model, input_ids if past_key_values is None else None)  # checked at the prefill
    hidden, cache = hidden_states(model, input_ids, past_key_values, use_cache=True)
    return logits_of(hidden[:, -1]), cache


def croppable(cache) -> bool:
    """Whether ``cache`` can be cut back to its first n positions exactly: a transformers
    DynamicCache of full-attention layers only (a sliding-window layer keeps only its window,
    a legacy tuple or a remote-code cache has no crop)."""
    try:
        from transformers.cache_utils import DynamicCache, DynamicLayer
    except ImportError:  # transformers without layered caches
        return False
    layers = getattr(cache, "layers", None)
    return isinstance(cache, DynamicCache) and bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


def crop(cache, keep: int) -> None:
    """Cut ``cache`` back to its first ``keep`` positions (a negative count removes that many
    tokens from the end on both transformers lines: 4.57 reads a positive one as the size to keep,
    5.x refuses it)."""
    drop = cache.get_seq_length() - keep
    if drop > 0:
        cache.crop(-drop)
