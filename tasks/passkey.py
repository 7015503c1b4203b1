"""Passkey retrieval (Mohtashami & Jaggi 2023; the prompt of the PI paper, LongLoRA, YaRN).

An instruction, filler text, the needle "The pass key is K. Remember it. K is the
pass key." at a depth (fraction 0..1 of the filler), more filler, and the
question. The prompt is assembled from pieces tokenised once, so its length in
the model's own tokens is exact. Greedy decoding of a few tokens with the KV
cache; correct when the first integer of the answer equals the key.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass

import torch

from evalkit import stats
from evalkit.errors import EvalkitError
from evalkit.forward import next_token_logits
from evalkit.tasks import Cell, Metric, register

INSTRUCTION = ("There is an important info hidden inside a lot of irrelevant text. "
               "Find it and memorize them. I will quiz you about the important information there.\n")
FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
NEEDLE = "\nThe pass key is {key}. Remember it. {key} is the pass key.\n"
QUESTION = "\nWhat is the pass key? The pass key is"
NEW_TOKENS = 10
DEFAULT_DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)


def passkey_for(seed: int, sample: int, depth: float) -> int:
    """A 5-digit key fixed by (seed, sample, depth): the same at every length and method."""
    return random.Random(f"passkey/{seed}/{sample}/{depth:.6f}").randint(10000, 99999)


@dataclass
class Pieces:
    """Token ids of the fixed parts, tokenised once per tokenizer."""
    prefix: list[int]  # BOS (if the model uses one) + instruction
    filler: list[int]  # one repetition
    question: list[int]

    @classmethod
    def of(cls, tokenizer) -> "Pieces":
        def enc(text):
            return tokenizer(text, add_special_tokens=False).input_ids
        bos = [tokenizer.bos_token_id] if _adds_bos(tokenizer) else []
        return cls(bos + enc(INSTRUCTION), enc(FILLER), enc(QUESTION))


def _adds_bos(tokenizer) -> bool:
    ids = tokenizer("a").input_ids
    return tokenizer.bos_token_id is not None and len(ids) > 0 and ids[0] == tokenizer.bos_token_id


def needle_ids(ctx, key: int) -> list[int]:
    """The needle for ``key`` in the model's tokens, tokenised once per run (planning checks every
    prompt fits; each trial then reuses it)."""
    return ctx.cached(("passkey-needle", key),
                      lambda: ctx.tokenizer(NEEDLE.format(key=key), add_special_tokens=False).input_ids)


def build_prompt(pieces: Pieces, needle: list[int], length: int, depth: float) -> list[int]:
    """Exactly ``length`` tokens: prefix, filler, needle at ``depth`` of the filler, filler, question."""
    n_filler = length - len(pieces.prefix) - len(needle) - len(pieces.question)
    if n_filler < 0:
        raise EvalkitError(f"passkey length {length} is too short for the prompt",
                           f"use at least {length - n_filler} tokens")
    reps, rest = divmod(n_filler, len(pieces.filler))
    filler = pieces.filler * reps + pieces.filler[:rest]
    # put the needle on a filler-sentence boundary nearest to the requested depth
    at = round(depth * reps) * len(pieces.filler) if reps else 0
    return pieces.prefix + filler[:at] + needle + filler[at:] + pieces.question


@torch.no_grad()
def greedy_answer(model, tokenizer, prompt: list[int], device) -> str:
    """One prefill, then cached decode steps until an integer is complete."""
    ids = torch.tensor([prompt], device=device)
    logits, cache = next_token_logits(model, ids)
    out = []
    for _ in range(NEW_TOKENS):
        if not bool(torch.isfinite(logits).all()):
            raise NonFiniteLogits
        token = int(logits.argmax(-1))
        out.append(token)
        text = tokenizer.decode(out, skip_special_tokens=True)
        if token == tokenizer.eos_token_id or re.search(r"\d+\D", text):
            break
        logits, cache = next_token_logits(model, torch.tensor([[token]], device=device), cache)
    return tokenizer.decode(out, skip_special_tokens=True)


class NonFiniteLogits(Exception):
    """The model produced NaN or inf logits: the trial has no answer to score."""


def score(answer: str, key: int) -> bool:
    """The first integer of the answer equals the key (no substring leniency)."""
    found = re.search(r"\d+", answer)
    return found is not None and int(found.group()) == key


class Passkey:
    name = "passkey"
    identity = ("depth", "seed")  # the seed picks the keys
    min_length = 1  # the real minimum depends on the tokenizer: build_prompt says it
    default = True
    profile = False
    metrics = (Metric("passkey", "passkey", "passkey accuracy", stats.accuracy("correct"), percent=True,
                      relative="difference"),)
    summary = "passkey retrieval: a 5-digit key hidden at a depth in filler text; accuracy"

    def cells(self, ctx, lengths) -> list[Cell]:
        pieces = ctx.cached("passkey-pieces", lambda: Pieces.of(ctx.tokenizer))
        longest_needle = max(len(needle_ids(ctx, passkey_for(ctx.cfg.seed, s, d)))
                             for d in ctx.cfg.depths for s in range(ctx.cfg.samples))
        for length in lengths:  # every prompt must fit, checked before anything is measured or written
            build_prompt(pieces, [0] * longest_needle, length, 0.0)
        return [Cell(self.name, length, sample, depth)
                for length in lengths for depth in ctx.cfg.depths for sample in range(ctx.cfg.samples)]

    def group(self, cell: Cell, prefix_mode: bool):
        return cell  # one prefill per trial

    def measure(self, ctx, cells: list[Cell]) -> list[dict]:
        (cell,) = cells
        pieces = ctx.cached("passkey-pieces", lambda: Pieces.of(ctx.tokenizer))
        key = passkey_for(ctx.cfg.seed, cell.sample, cell.depth)
        prompt = build_prompt(pieces, needle_ids(ctx, key), cell.length, cell.depth)
        try:
            answer = greedy_answer(ctx.model, ctx.tokenizer, prompt, ctx.input_device)
        except NonFiniteLogits:  # a row of its own status, never scored as wrong or right
            return [dict(passkey=key, tokens=len(prompt), status="nan", error="non-finite logits")]
        return [dict(passkey=key, answer=answer.strip(), correct=int(score(answer, key)), tokens=len(prompt))]


register(Passkey())
