"""Passkey retrieval (Mohtashami & Jaggi 2023; the prompt of the PI paper, LongLoRA, YaRN).

An instruction, filler text, the needle "The pass key is K. Remember it. K is the
pass key." at a depth (fraction 0..1 of the filler), more filler, and the
question, framed raw or in the chat template (``--chat-template``, see
:mod:`evalkit.tasks.retrieval`). The prompt is assembled from pieces tokenised
once, so its length in the model's own tokens is exact. Greedy decoding of a few
tokens with the KV cache (shared between trials where the method allows, see TrialTask); correct when the first integer of the answer equals the key.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from evalkit import stats
from evalkit.errors import EvalkitError
from evalkit.task import Cell, Metric, register
from evalkit.tasks.retrieval import (
    CHAT_TEMPLATE,
    DEPTHS,
    Attempt,
    Frame,
    TrialTask,
    encode,
    first_integer_is,
    frame,
    integer_complete,
    raw_frame,
)

INSTRUCTION = (
    "There is an important info hidden inside a lot of irrelevant text. "
    "Find it and memorize them. I will quiz you about the important information there.\n"
)
FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
NEEDLE = "\nThe pass key is {key}. Remember it. {key} is the pass key.\n"
QUESTION = "\nWhat is the pass key? The pass key is"
ASK, ANSWER = "\nWhat is the pass key?", " The pass key is"  # the same split around a chat template's tail
NEW_TOKENS = 10
DEFAULT_DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)


def passkey_for(seed: int, sample: int, depth: float) -> int:
    """A 5-digit key fixed by (seed, sample, depth): the same at every length and method."""
    return random.Random(f"passkey/{seed}/{sample}/{depth:.6f}").randint(10000, 99999)


@dataclass
class Pieces:
    """Token ids of the fixed parts, tokenised once per tokenizer."""

    prefix: list[int]  # the frame's head (BOS or the chat template) + instruction
    filler: list[int]  # one repetition
    question: list[int]  # the question; in a chat template: question, the template's tail, answer prefix

    @classmethod
    def of(cls, tokenizer, fr: Frame | None = None) -> Pieces:
        fr = fr or raw_frame(tokenizer)
        question = (
            encode(tokenizer, ASK) + fr.tail + encode(tokenizer, ANSWER) if fr.tail else encode(tokenizer, QUESTION)
        )  # raw: one piece, as evalkit 0.1 tokenised it
        return cls(fr.head + encode(tokenizer, INSTRUCTION), encode(tokenizer, FILLER), question)


def needle_ids(ctx, key: int) -> list[int]:
    """The needle for ``key`` in the model's tokens, tokenised once per run (planning checks every
    prompt fits; each trial then reuses it)."""
    return ctx.cached(
        ("passkey-needle", key), lambda: ctx.tokenizer(NEEDLE.format(key=key), add_special_tokens=False).input_ids
    )


def build_prompt(pieces: Pieces, needle: list[int], length: int, depth: float) -> list[int]:
    """Exactly ``length`` tokens: prefix, filler, needle at ``depth`` of the filler, filler, question."""
    n_filler = length - len(pieces.prefix) - len(needle) - len(pieces.question)
    if n_filler < 0:
        raise EvalkitError(
            f"passkey length {length} is too short for the prompt", f"use at least {length - n_filler} tokens"
        )
    reps, rest = divmod(n_filler, len(pieces.filler))
    filler = pieces.filler * reps + pieces.filler[:rest]
    # put the needle on a filler-sentence boundary nearest to the requested depth
    at = round(depth * reps) * len(pieces.filler) if reps else 0
    return pieces.prefix + filler[:at] + needle + filler[at:] + pieces.question


score = first_integer_is  # correct: the first integer of the answer is the key (no substring leniency)


class Passkey(TrialTask):
    name = "passkey"
    identity = ("depth", "seed", "chat_template")  # the seed picks the keys
    options = (DEPTHS, CHAT_TEMPLATE)
    columns = {"passkey": int, "answer": str, "correct": int, "tokens": int, "reused": int}
    default = True
    metrics = (
        Metric(
            "passkey", "passkey", "passkey accuracy", stats.accuracy("correct"), percent=True, relative="difference"
        ),
    )
    summary = "passkey retrieval: a 5-digit key hidden at a depth in filler text; accuracy"

    def prompt(self, ctx, length: int, sample: int, depth: float) -> tuple[list[int], int]:
        pieces = ctx.cached("passkey-pieces", lambda: Pieces.of(ctx.tokenizer, frame(ctx)))
        key = passkey_for(ctx.cfg.seed, sample, depth)
        return build_prompt(pieces, needle_ids(ctx, key), length, depth), key

    def attempt(self, ctx, cell: Cell) -> Attempt:
        prompt, key = self.prompt(ctx, cell.length, cell.sample, cell.depth)
        return Attempt(
            prompt,
            NEW_TOKENS,
            integer_complete,
            dict(passkey=key, tokens=len(prompt)),
            lambda answer: dict(answer=answer.strip(), correct=int(score(answer, key))),
        )


register(Passkey())
