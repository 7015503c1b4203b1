"""Needle in a haystack over real prose, RULER's single-needle task (Hsieh et al. 2024, "RULER",
niah_single_2: essay haystack, word key, 7-digit number value).

The needle "One of the special magic numbers for {key} is: {value}." sits at the cell's
depth (the sentence boundary nearest to it) inside ``--haystack`` prose; key and value
are fixed by (seed, sample, depth), so every length and method sees the same needle at
the same depth. The prompt is exactly the requested length. Scored as RULER scores: the
fraction of expected values found in the greedy answer (here one: 0 or 1).
"""

from __future__ import annotations

from evalkit.task import register
from evalkit.tasks.retrieval import NeedleTask, Trial, haystack_prompt, number, prose, trial_rng, word_key, words

# RULER's templates (scripts/data/synthetic/constants.py and niah.py), {kind}: numbers or uuids
INSTRUCTION = (
    "Some special magic {kind} are hidden within the following text. Make sure to memorize it. "
    "I will quiz you about the {kind} afterwards.\n"
)
NEEDLE = "One of the special magic {kind} for {key} is: {value}."
QUESTION = "\nWhat are all the special magic {kind} for {query} mentioned in the provided text?"
ANSWER = " The special magic {kind} for {query} mentioned in the provided text are"


def ruler_prompt(ctx, length, needles, query, kind, hay, what) -> list[int]:
    """A RULER NIAH prompt of exactly ``length`` tokens; ``needles``: (depth, key, value)."""
    return haystack_prompt(
        ctx,
        length,
        INSTRUCTION.format(kind=kind),
        QUESTION.format(kind=kind, query=query),
        ANSWER.format(kind=kind, query=query),
        [(d, NEEDLE.format(kind=kind, key=k, value=v)) for d, k, v in needles],
        hay,
        what,
    )


class Niah(NeedleTask):
    name = "niah"
    summary = "needle in a haystack: a 7-digit number for a word key at a depth in real prose; RULER scoring"
    metrics = NeedleTask.metric("niah", "needle-in-a-haystack accuracy")

    def trial(self, ctx, length, sample, depth) -> Trial:
        rng = trial_rng(self.name, ctx.cfg.seed, sample, depth)
        key, value = word_key(rng, words(ctx)), number(rng)
        return Trial(ruler_prompt(ctx, length, [(depth, key, value)], key, "numbers", prose(ctx), self.name), [value])


register(Niah())
