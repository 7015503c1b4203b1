"""RULER's niah_multikey: the asked needle among needles with other keys.

``--multikey-variant`` picks RULER's three configurations:
- ``1`` (niah_multikey_1): real prose with the asked needle at the cell's depth and three
  distractor needles (other word keys, other numbers) at depths drawn from RULER's
  40-point grid;
- ``2`` (niah_multikey_2): the haystack is made of needles: "One of the special magic
  numbers for {key} is: {value}." with other word keys, the asked one at the depth;
- ``3`` (niah_multikey_3): as 2 with UUID keys and UUID values.
Distractors are drawn per trial (the same at every length: longer prompts hold more of
the same sequence). Score: the asked value found in the answer (0 or 1).
"""

from __future__ import annotations

from evalkit.errors import EvalkitError
from evalkit.task import Option, register
from evalkit.tasks.niah import NEEDLE, ruler_prompt
from evalkit.tasks.retrieval import (
    RULER_DEPTHS,
    NeedleTask,
    SentenceTokens,
    Trial,
    number,
    prose,
    trial_rng,
    uuid4,
    word_key,
    words,
)

DISTRACTORS = 3  # RULER: num_needle_k = 4 for niah_multikey_1


def _check_variant(value: int) -> None:
    if value not in (1, 2, 3):
        raise EvalkitError(
            f"--multikey-variant must be 1, 2 or 3, got {value}",
            "1: prose + 3 distractors; 2: a haystack of needles; 3: the same with UUIDs",
        )


VARIANT = Option(
    "multikey_variant",
    "niah-multikey as RULER's niah_multikey_1 (prose + 3 distractor needles), "
    "_2 (a haystack of needles) or _3 (needles with UUID keys and values). Default: 1.",
    default=1,
    parse=int,
    check=_check_variant,
    metavar="1|2|3",
)


class NiahMultikey(NeedleTask):
    name = "niah-multikey"
    summary = "RULER multi-key: the asked needle among distractor needles (--multikey-variant 1, 2, 3); accuracy"
    identity = NeedleTask.identity + ("multikey_variant",)
    options = NeedleTask.options + (VARIANT,)
    metrics = NeedleTask.metric("niah-multikey", "multi-key NIAH accuracy")

    def trial(self, ctx, length, sample, depth) -> Trial:
        variant = ctx.cfg.opt("multikey_variant")
        rng = trial_rng(self.name, ctx.cfg.seed, sample, depth, variant)
        kind = "uuids" if variant == 3 else "numbers"
        new_key = (lambda: uuid4(rng)) if variant == 3 else (lambda: word_key(rng, words(ctx)))
        new_value = (lambda: uuid4(rng)) if variant == 3 else (lambda: number(rng))
        key, value = new_key(), new_value()
        if variant == 1:
            others = [k for k in dict.fromkeys(new_key() for _ in range(DISTRACTORS * 2)) if k != key][:DISTRACTORS]
            needles = [(depth, key, value)] + [
                (d, k, new_value()) for d, k in zip(rng.sample(RULER_DEPTHS, DISTRACTORS), others)
            ]
            return Trial(ruler_prompt(ctx, length, needles, key, kind, prose(ctx), self.name), [value])

        def distractors():  # the haystack: an endless sequence of needles with other keys
            while True:
                k = new_key()
                if k != key:
                    yield NEEDLE.format(kind=kind, key=k, value=new_value())

        hay = SentenceTokens(ctx.tokenizer, distractors())  # the trial's rng: the same needles at every call
        return Trial(ruler_prompt(ctx, length, [(depth, key, value)], key, kind, hay, self.name), [value])


register(NiahMultikey())
