"""Confidence intervals against published values and hand-checkable properties."""

import math

import pytest

from evalkit.stats import bootstrap_ppl, wilson


@pytest.mark.parametrize(
    "k, n, low, high",
    [
        (8, 10, 0.4902, 0.9433),  # Newcombe 1998, Table I style values for the Wilson interval
        (0, 10, 0.0, 0.2775),
        (10, 10, 0.7225, 1.0),
        (15, 148, 0.0624, 0.1605),  # Newcombe 1998 (Stat Med 17:857), example (iii): 15/148
    ],
)
def test_wilson_matches_published_values(k, n, low, high):
    got = wilson(k, n)
    assert got[0] == pytest.approx(low, abs=1e-4) and got[1] == pytest.approx(high, abs=1e-4)


def test_one_sample_has_no_interval():
    assert wilson(1, 1) is None and bootstrap_ppl([2.0], [100]) is None


def test_bootstrap_is_reproducible_contains_the_estimate_and_collapses_for_equal_documents():
    nll, tokens = [2.0, 2.5, 1.8, 3.1], [100, 400, 250, 50]
    a, b = bootstrap_ppl(nll, tokens, seed=3), bootstrap_ppl(nll, tokens, seed=3)
    assert a == b
    point = math.exp(sum(x * t for x, t in zip(nll, tokens)) / sum(tokens))
    assert a[0] < point < a[1]
    same = bootstrap_ppl([2.0, 2.0, 2.0], [10, 20, 30])
    assert same == pytest.approx((math.exp(2.0), math.exp(2.0)))
    assert bootstrap_ppl(nll, tokens, log_space=True)[0] == pytest.approx(math.log(bootstrap_ppl(nll, tokens)[0]))
