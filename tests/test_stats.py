"""The statistics of a comparison against worked textbook examples, and the properties a comparison needs."""

from __future__ import annotations

import numpy as np
import pytest

from cnnbench.stats import (
    accuracy_interval,
    mcnemar_exact,
    paired_bootstrap,
    seed_interval,
    welch_interval,
    wilson_interval,
)


def paired(both: int, only_a: int, only_b: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-image 0/1 outcomes of two models with the given 2x2 table."""
    a = np.repeat([1, 1, 0, 0], [both, only_a, only_b, neither]).astype(bool)
    b = np.repeat([1, 0, 1, 0], [both, only_a, only_b, neither]).astype(bool)
    return a, b


# ------------------------------------------------------------------ textbook examples


def test_exact_mcnemar_matches_the_published_example():
    """Fagerland, Lydersen & Laake (2013), "The McNemar test for binary matched-pairs data: mid-p and
    asymptotic are better than exact conditional", BMC Med. Res. Methodol. 13:91, Table 1 (airway
    hyper-responsiveness before and after stem cell transplantation in 21 children, Bentur et al.):
    1 yes/yes, 1 yes/no, 7 no/yes, 12 no/no; the paper gives the exact conditional p-value 0.070,
    which is 2 * P(X <= 1) for X ~ Binomial(8, 1/2) = 18/256.
    """
    before, after = paired(both=1, only_a=1, only_b=7, neither=12)
    result = mcnemar_exact(before, after)
    assert (result.only_a, result.only_b) == (1, 7)
    assert round(result.pvalue, 3) == 0.070
    assert result.pvalue == pytest.approx(18 / 256)


@pytest.mark.parametrize("correct, total, low, high", [
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0, 0.1611),
    (1, 29, 0.0061, 0.1718),
])
def test_wilson_interval_matches_the_published_bounds(correct, total, low, high):
    """Newcombe (1998), "Two-sided confidence intervals for the single proportion: comparison of seven
    methods", Statistics in Medicine 17:857-872, Table I, method 3 (score method without continuity
    correction, i.e. Wilson's), 95 % bounds given to four decimals.
    """
    interval = wilson_interval(correct, total)
    assert interval.estimate == pytest.approx(correct / total)
    assert (round(interval.low, 4), round(interval.high, 4)) == (low, high)
    assert interval.n == total


def test_t_interval_over_seeds_uses_the_t_table_value():
    """Three seeds at 90, 92 and 91 %: mean 91 %, s = 1 point, and Student's t table gives
    t(0.975, 2 df) = 4.303, so the interval is 91 ± 4.303 / sqrt(3) points.
    """
    interval = seed_interval([0.90, 0.92, 0.91])
    assert interval.estimate == pytest.approx(0.91)
    assert (interval.high - interval.low) / 2 == pytest.approx(4.303 * 0.01 / np.sqrt(3), rel=1e-3)
    assert interval.n == 3


def test_an_accuracy_interval_over_seeds_stops_at_100_percent():
    """The offline suite's three seeds of digits-resnet18_stem1_l3 (357, 357 and 354 of 360 right):
    t's interval reaches 100.08 %, an accuracy no model can have; the accuracy's interval stops at 1."""
    seeds = [357 / 360, 357 / 360, 354 / 360]
    unbounded, bounded = seed_interval(seeds), seed_interval(seeds, bounds=(0.0, 1.0))
    assert unbounded.high > 1.0
    assert bounded.high == 1.0 and bounded.low == unbounded.low and bounded.estimate == unbounded.estimate
    correct = np.zeros((3, 360), dtype=bool)
    for row, right in zip(correct, (357, 357, 354)):
        row[:right] = True
    assert accuracy_interval(correct) == bounded


# ------------------------------------------------------------------ properties


def test_identical_models_differ_by_zero_with_p_one():
    rng = np.random.default_rng(0)
    correct = rng.random((3, 500)) < 0.8
    diff = paired_bootstrap(correct, correct)
    assert (diff.estimate, diff.low, diff.high) == (0.0, 0.0, 0.0)
    assert not diff.excludes(0.0)
    assert mcnemar_exact(correct[0], correct[0]).pvalue == 1.0


def test_bootstrap_is_seeded_antisymmetric_and_agrees_with_the_normal_approximation():
    rng = np.random.default_rng(1)
    a, b = rng.random(2000) < 0.9, rng.random(2000) < 0.85
    ab, ba = paired_bootstrap(a, b), paired_bootstrap(b, a)
    assert ab == paired_bootstrap(a, b)
    assert ab.estimate == pytest.approx(a.mean() - b.mean())
    assert (ba.low, ba.high) == pytest.approx((-ab.high, -ab.low), abs=0.003)
    d = a.astype(float) - b
    normal = 1.96 * d.std(ddof=1) / np.sqrt(len(d))  # the paired difference's standard error
    assert (ab.high - ab.low) / 2 == pytest.approx(normal, rel=0.1)
    assert ab.excludes(0.0)


def test_bootstrap_pools_seeds_by_averaging_each_image():
    a = np.array([[1, 1, 0, 0], [1, 0, 0, 0]], dtype=bool)   # two seeds: 0.5 and 0.25
    b = np.array([[1, 0, 1, 0]], dtype=bool)
    assert paired_bootstrap(a, b).estimate == pytest.approx(0.375 - 0.5)
    with pytest.raises(ValueError, match="same non-empty images"):
        paired_bootstrap(a, b[:, :3])


def test_accuracy_interval_is_wilson_for_one_seed_and_t_over_several():
    one = np.array([[1] * 90 + [0] * 10], dtype=bool)
    assert accuracy_interval(one) == wilson_interval(90, 100)
    three = np.vstack([one, np.roll(one, 5), np.array([[1] * 80 + [0] * 20], dtype=bool)])
    assert accuracy_interval(three) == seed_interval([0.9, 0.9, 0.8], bounds=(0.0, 1.0))
    assert seed_interval([0.9]) is None


def test_welch_interval_needs_two_seeds_each_and_contains_the_difference():
    assert welch_interval([40.0], [186.0, 190.0]) is None
    interval = welch_interval([48.0, 49.0, 47.5], [186.0, 190.0, 181.0])
    assert interval.estimate == pytest.approx(48.1667 - 185.6667, abs=1e-3)
    assert interval.low < interval.estimate < interval.high < 0
    assert welch_interval([1.0, 1.0], [2.0, 2.0]).estimate == -1.0
