"""The statistics of a comparison: intervals on accuracies and paired tests between two models.

The formulas are statsmodels' and scipy's, not ours: Wilson's interval for one accuracy, Student's t
across seeds, Welch's t for a per-run metric measured once per seed, the exact McNemar test and a
percentile bootstrap over test images for two models scored on the same images. Correctness
arrays are 0/1 per test image, shaped (seeds, images); several seeds of one run are pooled by
averaging each image's correctness over them. Every interval is two-sided, 95 % by default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats as scipy_stats
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.proportion import proportion_confint

CONFIDENCE = 0.95
PROPORTION = (0.0, 1.0)  # the range of an accuracy
BOOTSTRAP_RESAMPLES = 9999
BOOTSTRAP_SEED = 0  # a fixed seed: the same predictions always render the same report


@dataclass(frozen=True)
class Interval:
    """An estimate with its two-sided interval, and n: images (Wilson, bootstrap) or seeds (t)."""

    estimate: float
    low: float
    high: float
    n: int

    def excludes(self, value: float) -> bool:
        """Whether `value` lies outside the interval (a difference excluding 0 is beyond noise)."""
        return self.low > value or self.high < value


@dataclass(frozen=True)
class McNemar:
    """The exact McNemar test of two models on the same images: the discordant counts and the p-value."""

    only_a: int   # images model A gets right and B wrong
    only_b: int   # images model B gets right and A wrong
    pvalue: float


def wilson_interval(correct: int, total: int, confidence: float = CONFIDENCE) -> Interval:
    """The accuracy correct/total with its Wilson score interval (Wilson 1927; Newcombe 1998)."""
    if total <= 0:
        raise ValueError("an accuracy needs at least one image")
    low, high = proportion_confint(correct, total, alpha=1 - confidence, method="wilson")
    return Interval(correct / total, float(low), float(high), total)


def seed_interval(values: Sequence[float], confidence: float = CONFIDENCE,
                  bounds: tuple[float, float] | None = None) -> Interval | None:
    """The mean over seeds with Student's t interval (n-1 degrees of freedom); None under two seeds.

    `bounds` is the range the metric cannot leave (PROPORTION for an accuracy). The t interval knows
    none, so with a few seeds near 100 % it reaches past 1; the impossible part is cut off, which
    keeps the coverage: the cut interval holds the true mean whenever the whole one did."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return None
    mean = float(values.mean())
    sem = float(scipy_stats.sem(values))
    if sem == 0:  # identical seeds: scipy's interval would be NaN
        return Interval(mean, mean, mean, len(values))
    low, high = scipy_stats.t.interval(confidence, len(values) - 1, loc=mean, scale=sem)
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return Interval(mean, float(low), float(high), len(values))


def accuracy_interval(correct: np.ndarray, confidence: float = CONFIDENCE) -> Interval:
    """Accuracy from a (seeds, images) 0/1 array: Wilson for one seed, the t interval over several."""
    correct = np.atleast_2d(correct)
    if len(correct) == 1:
        return wilson_interval(int(correct.sum()), correct.shape[1], confidence)
    return seed_interval(correct.mean(axis=1), confidence, bounds=PROPORTION)


def welch_interval(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> Interval | None:
    """mean(a) - mean(b) for a metric measured once per seed, with Welch's t interval; None under 2 seeds each."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2 or len(b) < 2:
        return None
    diff = float(a.mean() - b.mean())
    if a.std() == 0 and b.std() == 0:
        return Interval(diff, diff, diff, min(len(a), len(b)))
    ci = scipy_stats.ttest_ind(a, b, equal_var=False).confidence_interval(confidence)
    return Interval(diff, float(ci.low), float(ci.high), min(len(a), len(b)))


def mcnemar_exact(a_correct: np.ndarray, b_correct: np.ndarray) -> McNemar:
    """Exact (binomial) McNemar test on the per-image correctness of two models (Dietterich 1998)."""
    a, b = np.asarray(a_correct, dtype=bool), np.asarray(b_correct, dtype=bool)
    _check_paired(a, b)
    table = [[int(np.sum(a & b)), int(np.sum(a & ~b))], [int(np.sum(~a & b)), int(np.sum(~a & ~b))]]
    result = mcnemar(table, exact=True)
    return McNemar(table[0][1], table[1][0], float(result.pvalue))


def paired_bootstrap(a_correct: np.ndarray, b_correct: np.ndarray, confidence: float = CONFIDENCE,
                     resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> Interval:
    """Accuracy of A minus accuracy of B on the same images, with a percentile bootstrap interval.

    Test images are resampled with replacement, the same images for both models, so what the two
    share cancels out. Each model's seeds are pooled first (per-image correctness averaged over its
    seeds): the interval is over test images, for these trained models; seed spread enters only
    through that average.
    """
    a, b = np.atleast_2d(a_correct).astype(float), np.atleast_2d(b_correct).astype(float)
    _check_paired(a[0], b[0])
    per_image = a.mean(axis=0) - b.mean(axis=0)
    estimate = float(per_image.mean())
    if np.all(per_image == per_image[0]):  # nothing to resample (identical models): a zero-width interval
        return Interval(estimate, estimate, estimate, len(per_image))
    result = scipy_stats.bootstrap((per_image,), np.mean, n_resamples=resamples, confidence_level=confidence,
                                   method="percentile", vectorized=True, rng=np.random.default_rng(seed),
                                   batch=_batch(len(per_image)))
    ci = result.confidence_interval
    return Interval(estimate, float(ci.low), float(ci.high), len(per_image))


def _batch(n_images: int) -> int:
    """Resamples drawn at once: about 4 million indices (32 MB), whatever the test set's size."""
    return max(1, min(BOOTSTRAP_RESAMPLES, (1 << 22) // max(1, n_images)))


def _check_paired(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape or a.ndim != 1 or not len(a):
        raise ValueError(f"paired outcomes need the same non-empty images, not shapes {a.shape} and {b.shape}")
