"""RULER's niah_multiquery: four keys, one value each, in real prose; all four asked at once.

The first key's needle sits at the cell's depth, the other three at depths drawn (per
trial, the same at every length) from RULER's 40-point depth grid. The question lists
the keys as RULER does ("a, b, c, and d"). Score: the fraction of the four values in
the answer.
"""

from __future__ import annotations

from evalkit.task import register
from evalkit.tasks.niah import ruler_prompt
from evalkit.tasks.retrieval import RULER_DEPTHS, NeedleTask, Trial, number, prose, trial_rng, word_key, words

QUERIES = 4  # RULER: num_needle_k = num_needle_q = 4


class NiahMultiquery(NeedleTask):
    name = "niah-multiquery"
    summary = "RULER multi-query: four keys with a number each in real prose, all asked at once; fraction recalled"
    metrics = NeedleTask.metric("niah-multiquery", "multi-query NIAH: values recalled")

    def trial(self, ctx, length, sample, depth) -> Trial:
        rng = trial_rng(self.name, ctx.cfg.seed, sample, depth)
        keys: list[str] = []
        while len(keys) < QUERIES:
            key = word_key(rng, words(ctx))
            keys += [key] if key not in keys else []
        values = [number(rng) for _ in keys]
        depths = [depth] + rng.sample(RULER_DEPTHS, QUERIES - 1)
        query = ", ".join(keys[:-1]) + ", and " + keys[-1]
        needles = list(zip(depths, keys, values))
        return Trial(ruler_prompt(ctx, length, needles, query, "numbers", prose(ctx), self.name), values)


register(NiahMultiquery())
