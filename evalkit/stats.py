"""Confidence intervals for the kinds of table cells evalkit reports.

- Accuracy over n trials (passkey, niah, lines): the Wilson score interval (Wilson 1927), which
  stays inside [0, 1] and is sensible at 0/n and n/n, unlike the normal approximation.
- Token-weighted perplexity over documents: a percentile bootstrap over documents
  (Efron & Tibshirani 1993, ch. 13), resampling whole documents with replacement and
  recomputing exp(Σ nll_d·t_d / Σ t_d); seeded, so the same rows give the same interval.
- Mean fraction recalled (RULER's multi-value scores in [0, 1]): a seeded percentile
  bootstrap over trials.

A cell with one sample has no interval (None): one document or one trial says nothing
about the spread.
"""

from __future__ import annotations

import math

Z95 = 1.959963984540054  # the 97.5% quantile of the standard normal


def wilson(correct: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval for ``correct`` successes out of ``n`` trials (None for n < 2)."""
    if n < 2:
        return None
    p = correct / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, center - half), min(1.0, center + half)


def bootstrap_ppl(
    nll: list[float],
    tokens: list[int],
    resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    log_space: bool = False,
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the token-weighted perplexity (or mean NLL with
    ``log_space``) over documents with per-document mean NLL ``nll`` and ``tokens`` scored."""
    import numpy as np

    if len(nll) < 2:
        return None
    rng = np.random.default_rng(seed)
    weighted = np.asarray(nll, dtype=np.float64) * np.asarray(tokens, dtype=np.float64)
    counts = np.asarray(tokens, dtype=np.float64)
    picks = rng.integers(0, len(nll), size=(resamples, len(nll)))  # (B, D) documents drawn
    means = weighted[picks].sum(axis=1) / counts[picks].sum(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return (float(low), float(high)) if log_space else (math.exp(low), math.exp(high))


def accuracy(column: str):
    """Aggregation: the mean of a 0/1 column, with its Wilson interval."""

    def aggregate(ok):
        return ok[column].mean(), wilson(int(ok[column].sum()), len(ok))

    return aggregate


def token_weighted(nll: str, tokens: str, log_space: bool = False):
    """Aggregation: perplexity exp(Σ nll·tokens / Σ tokens) of the columns ``nll`` (mean NLL per
    document) and ``tokens`` (its predicted tokens), or that mean NLL with ``log_space``, over
    documents, with a bootstrap interval over documents."""

    def aggregate(ok):
        mean_nll = (ok[nll] * ok[tokens]).sum() / ok[tokens].sum()
        interval = bootstrap_ppl(ok[nll].tolist(), ok[tokens].tolist(), log_space=log_space)
        return (mean_nll if log_space else math.exp(mean_nll)), interval

    return aggregate


def bootstrap_mean(
    values: list[float], resamples: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean of per-trial scores (None for fewer than two)."""
    import numpy as np

    if len(values) < 2:
        return None
    rng = np.random.default_rng(seed)
    data = np.asarray(values, dtype=np.float64)
    means = data[rng.integers(0, len(data), size=(resamples, len(data)))].mean(axis=1)  # (B,)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def mean_score(column: str):
    """Aggregation: the mean of per-trial scores in [0, 1] (RULER: the fraction of values recalled).
    When every score is 0 or 1 this is an accuracy and gets the Wilson interval; otherwise a
    seeded bootstrap over trials."""

    def aggregate(ok):
        scores = ok[column].astype(float)
        if scores.isin([0.0, 1.0]).all():
            return scores.mean(), wilson(int(scores.sum()), len(scores))
        return scores.mean(), bootstrap_mean(scores.tolist())

    return aggregate
