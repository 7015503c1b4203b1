"""Greedy decoding for the retrieval tasks, with a KV cache carried from trial to trial.

Trials of one group are answered in the order of their prompts (a walk of their prefix tree);
:class:`SharedPrefix` cuts the carried cache back to what the next prompt shares with it and
computes only the rest, so a trial's answer is the one a full prefill gives
(tests/test_shared_prefix.py checks it for every method and family).
"""

from __future__ import annotations

from collections.abc import Callable

from evalkit import forward


class SharedPrefix:
    """One KV cache carried from trial to trial of a group (the prompts in sorted order, a walk of
    their prefix tree): each trial cuts the cache back to the tokens its prompt shares with what
    the cache holds and computes only the rest. Valid only where a position's keys and values do
    not depend on later tokens or on the total length: a static method, and within one length
    unless its factor is length-independent (see ``reuse_mode`` in the sweep)."""

    # The rest of a prompt after a cached prefix is computed with an explicit causal mask (a
    # causal kernel cannot align queries to the end of the keys): every query scores every key,
    # twice the pairs of a causal prefill over the same span. So the cache is taken only when at
    # least an eighth of the prompt is shared, and the rest goes in up to 4 parts (each part's
    # queries score only the keys before its end). Measured on SmolLM2 at 4096 tokens, 2-core
    # CPU, SDPA: 128 tokens shared 13.6 s whole vs 10.6 s in 4 parts (a full prefill 10.2 s);
    # 1024 shared 10.8 vs 8.9 s; 2048 shared 7.0 vs 7.1 s.
    MIN_SHARE, PARTS, MIN_PART = 1 / 8, 4, 512

    def __init__(self):
        self.tokens: list[int] = []  # what the cache holds, position by position
        self.cache = None
        self.reused = 0  # prompt tokens the last trial took from the cache

    def prefill(self, ctx, prompt: list[int]):
        """The last prompt position's logits and the cache holding the whole prompt."""
        import torch

        keep = 0
        if self.cache is not None:
            limit = min(len(self.tokens), len(prompt) - 1)  # at least one token computed: its logits
            keep = next((i for i in range(limit) if self.tokens[i] != prompt[i]), limit)
        if keep < len(prompt) * self.MIN_SHARE:  # too little in common to pay for the masked suffix
            keep, self.cache = 0, None  # the old cache freed before the new prefill
            logits, cache = forward.next_token_logits(ctx.model, torch.tensor([prompt], device=ctx.input_device))
        else:
            forward.crop(self.cache, keep)
            cache, rest = self.cache, prompt[keep:]
            step = max(self.MIN_PART, -(-len(rest) // self.PARTS))
            for start in range(0, len(rest), step):
                logits, cache = forward.next_token_logits(
                    ctx.model, torch.tensor([rest[start : start + step]], device=ctx.input_device), cache
                )
        self.cache = cache if forward.croppable(cache) else None
        self.tokens, self.reused = list(prompt), keep
        return logits, cache

    def fed(self, token: int) -> None:
        self.tokens.append(token)


def generate(
    ctx, prompt: list[int], max_new: int, stop: Callable[[str], bool], shared: SharedPrefix | None = None
) -> str | None:
    """Greedy decoding with the KV cache until EOS, ``stop(text)`` or ``max_new`` tokens, from a
    full prefill or from ``shared``'s cache. None when the logits are not finite (the trial has no
    answer to score)."""
    import torch

    tokenizer = ctx.tokenizer
    with torch.no_grad():
        if shared is None:
            logits, cache = forward.next_token_logits(ctx.model, torch.tensor([prompt], device=ctx.input_device))
        else:
            logits, cache = shared.prefill(ctx, prompt)
        out: list[int] = []
        for _ in range(max_new):
            if not bool(torch.isfinite(logits).all()):
                return None
            token = int(logits.argmax(-1))
            if token == tokenizer.eos_token_id:
                break
            out.append(token)
            if stop(tokenizer.decode(out, skip_special_tokens=True)):
                break
            logits, cache = forward.next_token_logits(
                ctx.model, torch.tensor([[token]], device=ctx.input_device), cache
            )
            if shared is not None:
                shared.fed(token)
    return tokenizer.decode(out, skip_special_tokens=True)
