"""The statistics of a comparison against worked textbook examples, and the properties a verdict needs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats
from statsmodels.formula.api import ols

from cnnbench.evaluation.stats import (
    GREATER,
    LESS,
    MIN_SEEDS,
    UNDECIDED,
    WITHIN,
    accuracy_interval,
    decide,
    flip_variance,
    holm,
    pooled_noise,
    recipe_difference,
    seed_difference,
    seed_variance,
    seeds_needed,
    timing_difference,
    wilson_interval,
)


def recipe(rng, seeds: int, images: int = 400, accuracy: float = 0.9, seed_sd: float = 0.0) -> np.ndarray:
    """(seeds, images) 0/1 outcomes: each seed right on each image with the seed's own accuracy."""
    p = np.clip(accuracy + rng.normal(0, seed_sd, (seeds, 1)), 0, 1)
    return rng.random((seeds, images)) < p


# ------------------------------------------------------------------ textbook examples


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


def test_flip_variance_is_the_residual_mean_square_of_a_two_way_anova():
    """seeds x images without replication: the residual mean square of y ~ seed + image (statsmodels' OLS)."""
    rng = np.random.default_rng(0)
    y = recipe(rng, 4, 30, 0.7, 0.05).astype(float)
    table = pd.DataFrame([(s, i, y[s, i]) for s in range(4) for i in range(30)], columns=["seed", "image", "y"])
    fit = ols("y ~ C(seed) + C(image)", table).fit()
    assert flip_variance(y) == pytest.approx(fit.ssr / fit.df_resid)


def test_holm_matches_the_step_down_by_hand():
    """Holm (1979): sorted p 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1, made monotone: 0.02, 0.03, 0.06, 0.06."""
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert np.isnan(holm([0.01, float("nan")])[1]) and holm([0.01, float("nan")])[0] == 0.01


def test_seed_difference_is_welchs_t():
    """s/epoch of the study's stem3_l3 against stem3 over three seeds each: scipy's Welch test."""
    a, b = [48.0, 49.0, 47.5], [186.0, 190.0, 181.0]
    diff = seed_difference(a, b)
    welch = scipy_stats.ttest_ind(a, b, equal_var=False)
    assert diff.pvalue == pytest.approx(welch.pvalue)
    assert (diff.low, diff.high) == pytest.approx(tuple(welch.confidence_interval(0.95)))
    assert decide(diff) == LESS and decide(diff.flipped()) == GREATER


def test_recipe_difference_without_an_image_term_is_welch_on_per_seed_accuracies():
    """When per-image differences vary no more than flips explain, the test is Welch's t on the seeds' accuracies."""
    rng = np.random.default_rng(3)
    a, b = recipe(rng, 3, 2000, 0.9, 0.01), recipe(rng, 4, 2000, 0.9, 0.01)
    diff = recipe_difference(a, b)
    assert diff.image_var == 0.0  # one accuracy for every image: no difficulty to sample
    welch = scipy_stats.ttest_ind(a.mean(axis=1), b.mean(axis=1), equal_var=False)
    assert diff.pvalue == pytest.approx(welch.pvalue, rel=1e-6)
    assert diff.estimate == pytest.approx(a.mean() - b.mean())


# ------------------------------------------------------------------ properties


def test_fewer_than_three_seeds_a_side_is_undecided_for_every_metric_and_keeps_the_estimate():
    rng = np.random.default_rng(1)
    a, b = recipe(rng, 2, accuracy=0.95), recipe(rng, 3, accuracy=0.60)
    diff = recipe_difference(a, b)
    assert decide(diff) == UNDECIDED and "needs seeds" in diff.undecided and str(MIN_SEEDS) in diff.undecided
    assert diff.estimate == pytest.approx(a.mean() - b.mean()) and np.isnan(diff.low)
    assert decide(seed_difference([1.0, 2.0], [5.0, 6.0, 7.0])) == UNDECIDED
    assert decide(recipe_difference(recipe(rng, 3, accuracy=0.95), b)) == GREATER


def test_identical_seed_accuracies_still_give_an_interval_of_width():
    """Three seeds right on 357 of 360 images each, on different images: their accuracies agree exactly,
    yet a fourth seed would not; the seed variance is never below what the flips put there."""
    correct = np.ones((3, 360), dtype=bool)
    for seed, wrong in enumerate(([0, 1, 2], [3, 4, 5], [0, 6, 7])):
        correct[seed, wrong] = False
    assert np.ptp(correct.mean(axis=1)) == 0
    assert seed_variance(correct) == pytest.approx(flip_variance(correct) / 360) and seed_variance(correct) > 0
    interval = accuracy_interval(correct)
    assert interval.low < 357 / 360 < interval.high <= 1.0
    diff = recipe_difference(correct, correct[::-1])
    assert diff.high > diff.low and decide(diff) == WITHIN


def test_a_same_recipe_pair_is_within_noise_and_a_clear_difference_is_decided():
    rng = np.random.default_rng(2)
    same = recipe_difference(recipe(rng, 3, seed_sd=0.01), recipe(rng, 3, seed_sd=0.01))
    assert decide(same) == WITHIN and same.low < 0 < same.high
    clear = recipe_difference(recipe(rng, 3, accuracy=0.95), recipe(rng, 3, accuracy=0.85))
    assert decide(clear) == GREATER and clear.pvalue < 0.01
    flipped = clear.flipped()
    assert (flipped.estimate, flipped.low, flipped.high) == (-clear.estimate, -clear.high, -clear.low)


def test_a_margin_turns_the_same_difference_into_not_worse():
    """A − B = −0.5 points: within noise of 0, yet beyond −3 points (a "not worse by 3 points" claim)."""
    rng = np.random.default_rng(4)
    a, b = recipe(rng, 5, 4000, 0.895, 0.002), recipe(rng, 5, 4000, 0.9, 0.002)
    diff = recipe_difference(a, b)
    assert decide(diff) == WITHIN
    assert decide(diff, threshold=-0.03) == GREATER
    assert diff.pvalue_against(-0.03) < 0.05 < diff.pvalue


def test_seeds_needed_shrink_with_the_difference_and_run_out_where_the_test_set_is_too_small():
    rng = np.random.default_rng(5)
    diff = recipe_difference(recipe(rng, 3, 360, 0.97, 0.008), recipe(rng, 3, 360, 0.97, 0.008))
    few, many = seeds_needed(diff, 0.03), seeds_needed(diff, 0.01)
    assert MIN_SEEDS <= few < many
    assert seeds_needed(diff, 0.0001) is None
    assert diff.detectable() > 0


def test_one_seed_runs_borrow_the_pooled_seed_spread_for_planning_only():
    rng = np.random.default_rng(6)
    noise = pooled_noise([("r", recipe(rng, 3, 360, 0.97, 0.008)), ("one", recipe(rng, 1, 360))])
    assert noise.runs == ("r",)
    diff = recipe_difference(recipe(rng, 1, 360, 0.99), recipe(rng, 1, 360, 0.95), noise)
    assert decide(diff) == UNDECIDED and diff.seed_var_a == noise.seed_var
    assert seeds_needed(diff, diff.estimate) is not None


def test_accuracy_interval_is_wilson_for_one_seed_and_covers_seeds_and_images_over_several():
    one = np.array([[1] * 90 + [0] * 10], dtype=bool)
    assert accuracy_interval(one) == wilson_interval(90, 100)
    rng = np.random.default_rng(7)
    several = recipe(rng, 5, 1000, 0.9, 0.02)
    interval = accuracy_interval(several)
    seeds_only = scipy_stats.t.interval(0.95, 4, several.mean(), scipy_stats.sem(several.mean(axis=1)))
    assert interval.n == 5 and interval.high - interval.low >= seeds_only[1] - seeds_only[0] - 1e-12


def test_latency_is_compared_over_its_timed_calls():
    rng = np.random.default_rng(8)
    fast, slow = rng.normal(3.0, 0.1, 60), rng.normal(3.5, 0.1, 60)
    diff = timing_difference(fast, slow)
    assert diff.source == "timed calls" and diff.high < 0 and decide(diff) == LESS
    assert diff == timing_difference(fast, slow)  # seeded: the same calls give the same report
    assert decide(timing_difference(fast, rng.normal(3.0, 0.1, 60))) == WITHIN
    assert decide(timing_difference(fast[:3], slow)) == UNDECIDED


def test_paired_outcomes_need_the_same_images():
    with pytest.raises(ValueError, match="same non-empty images"):
        recipe_difference(np.ones((3, 4)), np.ones((3, 5)))
