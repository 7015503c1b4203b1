"""RULER's niah_multivalue: one key with four values in real prose; all four must be recalled.

The first value's needle sits at the cell's depth, the other three at depths drawn (per
trial, the same at every length) from RULER's 40-point depth grid. Score: the fraction
of the four values in the answer.
"""

from __future__ import annotations

from evalkit.task import register
from evalkit.tasks.niah import ruler_prompt
from evalkit.tasks.retrieval import RULER_DEPTHS, NeedleTask, Trial, number, prose, trial_rng, word_key, words

VALUES = 4  # RULER: num_needle_v = 4


class NiahMultivalue(NeedleTask):
    name = "niah-multivalue"
    summary = "RULER multi-value: four numbers for one key in real prose, all asked; fraction recalled"
    metrics = NeedleTask.metric("niah-multivalue", "multi-value NIAH: values recalled")

    def trial(self, ctx, length, sample, depth) -> Trial:
        rng = trial_rng(self.name, ctx.cfg.seed, sample, depth)
        key = word_key(rng, words(ctx))
        values = list(dict.fromkeys(number(rng) for _ in range(VALUES * 2)))[:VALUES]
        depths = [depth] + rng.sample(RULER_DEPTHS, VALUES - 1)
        needles = [(d, key, v) for d, v in zip(depths, values)]
        return Trial(ruler_prompt(ctx, length, needles, key, "numbers", prose(ctx), self.name), values)


register(NiahMultivalue())
