"""The statistics of a comparison: what "A beats B" means, decided by one rule.

The estimand is the difference between two *recipes* (a model trained a given way), over training
seeds and over test images: what a practitioner gets when they train the recipe again and score it
on a fresh draw of test images. Trained twice with different seeds, one and the same recipe
differs by more than test-image sampling explains: every seed carries a run-level effect (its
accuracy moves as a whole) on top of per-image flips. A test that resamples images only is blind to
the first and calls "A beats B" on a same-recipe pair about one time in five (measured on digits,
docs/reading-a-comparison.md). So a difference is modelled as a crossed random-effects design, seeds x images:

    y[r, s, i] = mu_r + a[r, i] (image difficulty) + b[r, s] (seed) + e[r, s, i] (flip)

Its variance, estimated by the method of moments, has three parts: each run's seed variance over
its number of seeds (the spread of per-seed accuracies, never below what flips alone put there) and
the variance the finite test sample adds to the recipes' difference (per-image differences, their
flip part removed). The decision statistic is t = difference / standard error with Satterthwaite's
degrees of freedom: Welch's test on per-seed accuracies, widened by the test-sampling term. A
verdict needs MIN_SEEDS seeds a side (fewer leave the seed variance unmeasured); below it a pair
is "undecided: needs seeds". One-seed accuracies keep Wilson's interval, which covers test
sampling only. Metrics measured once per seed (s/epoch) use the same rule without images; timings
(latency) get an interval from their repeated, interleaved calls, not from seeds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy import stats as scipy_stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

CONFIDENCE = 0.95
ALPHA = 1 - CONFIDENCE
POWER = 0.8            # the power a "detectable difference" and a "seeds needed" are computed for
PROPORTION = (0.0, 1.0)  # the range of an accuracy
# Three seeds a side is the fewest that measures a seed variance at all usefully: with two, each
# run's spread rests on one degree of freedom, the t quantile is 12.7, and one lucky seed decides.
MIN_SEEDS = 3
MAX_SEEDS_PLANNED = 100  # "seeds needed" beyond this is reported as "more than 100"
MIN_CALLS = 5          # timed calls a side for a latency interval
# Between separate processes (evaluate's stages, at separate moments), the standard deviation of the log of one
# model's median batch-1 CPU latency: the machine's state moves a median by more than its own calls vary.
# Measured by bench/latency_moments.py (docs/reading-a-comparison.md has the figures and the command).
MOMENT_SIGMA = 0.25
BOOTSTRAP_RESAMPLES = 9999
BOOTSTRAP_SEED = 0     # a fixed seed: the same timings always render the same report


@dataclass(frozen=True)
class Interval:
    """An estimate with its two-sided interval, and n: images (Wilson) or seeds (over seeds)."""

    estimate: float
    low: float
    high: float
    n: int


@dataclass(frozen=True)
class Difference:
    """A − B with the interval and test of the one rule; `undecided` says why there is no verdict.

    The variance parts are kept so that power and seeds needed follow from the same model:
    seed_var_x is the variance of one seed's value of run x, image_var the variance the test-image
    sample adds to the difference (0 for metrics measured once per seed or per call)."""

    estimate: float
    low: float              # NaN when undecided
    high: float
    se: float               # standard error of the estimate (NaN when undecided)
    df: float               # Satterthwaite's degrees of freedom
    pvalue: float           # two-sided, against a difference of 0 (NaN when undecided)
    seeds_a: int
    seeds_b: int
    images: int             # test images compared; 0 for a per-run metric
    seed_var_a: float = math.nan
    seed_var_b: float = math.nan
    image_var: float = 0.0
    source: str = "seeds and test images"   # where the interval's width comes from
    undecided: str = ""     # the reason no verdict is given, e.g. "needs seeds"

    @property
    def decided(self) -> bool:
        return not self.undecided

    def flipped(self) -> Difference:
        """B − A: the same comparison read the other way."""
        return replace(self, estimate=-self.estimate, low=-self.high, high=-self.low, seeds_a=self.seeds_b,
                       seeds_b=self.seeds_a, seed_var_a=self.seed_var_b, seed_var_b=self.seed_var_a)

    def pvalue_against(self, threshold: float) -> float:
        """The two-sided p-value of "A − B = threshold" (a margin for "not worse", 0 for "differs")."""
        if not self.decided:
            return math.nan
        if threshold == 0.0:
            return self.pvalue
        if self.source == "timed calls":  # a bootstrap interval: decided by where it lies
            return 0.0 if self.low > threshold or self.high < threshold else 1.0
        t = (self.estimate - threshold) / self.se
        return float(2 * scipy_stats.t.sf(abs(t), self.df))

    def detectable(self, power: float = POWER) -> float:
        """The smallest |A − B| these seeds and images detect with `power` (two-sided, at ALPHA)."""
        if not self.decided or self.source == "timed calls":
            return math.nan
        return _detectable(self.se, self.df, power)


# ------------------------------------------------------------------ the verdict


GREATER, LESS, WITHIN, UNDECIDED = "greater", "less", "within noise", "undecided"


def decide(diff: Difference, threshold: float = 0.0, pvalue: float | None = None) -> str:
    """The one verdict rule: GREATER or LESS when A − B lies beyond `threshold` at ALPHA, else WITHIN;
    UNDECIDED when the difference has no test. `pvalue` replaces the difference's own where a family
    of tests is corrected (Holm's adjusted p-value over a table's pairs)."""
    if not diff.decided:
        return UNDECIDED
    p = diff.pvalue_against(threshold) if pvalue is None else pvalue
    if not p < ALPHA:
        return WITHIN
    return GREATER if diff.estimate > threshold else LESS


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (Holm 1979); NaN (undecided) entries stay NaN and do not count."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(len(p), np.nan)
    tested = ~np.isnan(p)
    if tested.any():
        out[tested] = multipletests(p[tested], alpha=ALPHA, method="holm")[1]
    return [float(v) for v in out]


# ------------------------------------------------------------------ per-image outcomes


@dataclass(frozen=True)
class SeedNoise:
    """How much a run's seeds move its accuracy on one test set: what power and seeds-needed assume."""

    seed_var: float       # variance of one seed's accuracy
    flip_var: float       # per-image flip variance (residual of seeds x images)
    runs: tuple[str, ...]  # the runs it was measured on


def flip_variance(correct: np.ndarray) -> float:
    """The residual mean square of a (seeds, images) 0/1 array after seed and image effects: the
    variance of per-image flips between seeds (two-way ANOVA without replication); NaN for one seed."""
    y = np.atleast_2d(correct).astype(float)
    k, n = y.shape
    if k < 2 or n < 2:
        return math.nan
    resid = y - y.mean(axis=1, keepdims=True) - y.mean(axis=0, keepdims=True) + y.mean()
    return float((resid ** 2).sum() / ((k - 1) * (n - 1)))


def seed_variance(correct: np.ndarray) -> float:
    """Variance of one seed's accuracy, never below the part per-image flips alone put there (flip / n):
    two or three seeds can agree by chance, and a zero would make a zero-width interval."""
    y = np.atleast_2d(correct).astype(float)
    if len(y) < 2:
        return math.nan
    return max(float(np.var(y.mean(axis=1), ddof=1)), flip_variance(y) / y.shape[1])


def pooled_noise(named: Sequence[tuple[str, np.ndarray]]) -> SeedNoise | None:
    """Seed and flip variances pooled over runs with several seeds on one test set (weighted by their
    degrees of freedom); None when no run has two seeds."""
    weights, seed_vars, flips, runs = [], [], [], []
    for run, correct in named:
        if len(np.atleast_2d(correct)) < 2:
            continue
        weights.append(len(correct) - 1)
        seed_vars.append(seed_variance(correct))
        flips.append(flip_variance(correct))
        runs.append(run)
    if not runs:
        return None
    w = np.asarray(weights, dtype=float)
    return SeedNoise(float(np.dot(w, seed_vars) / w.sum()), float(np.dot(w, flips) / w.sum()), tuple(runs))


def recipe_difference(a_correct: np.ndarray, b_correct: np.ndarray, noise: SeedNoise | None = None,
                      confidence: float = CONFIDENCE) -> Difference:
    """Accuracy of recipe A minus recipe B from (seeds, images) 0/1 arrays on the same test images.

    Decided with MIN_SEEDS seeds a side (see the module's docstring for the model). With fewer, the
    estimate is kept and the verdict is "needs seeds"; `noise` (the dataset's pooled seed spread)
    then stands in for the unmeasured seed variances, so that power and seeds needed can still be told.
    """
    a, b = np.atleast_2d(a_correct).astype(float), np.atleast_2d(b_correct).astype(float)
    if a.shape[1] != b.shape[1] or not a.shape[1]:
        raise ValueError(f"paired outcomes need the same non-empty images, not {a.shape[1]} and {b.shape[1]}")
    (k_a, n), k_b = a.shape, len(b)
    estimate = float(a.mean() - b.mean())
    flip_a, flip_b = (flip_variance(y) if len(y) > 1 else (noise.flip_var if noise else math.nan) for y in (a, b))
    var_a, var_b = (seed_variance(y) if len(y) > 1 else (noise.seed_var if noise else math.nan) for y in (a, b))
    per_image = a.mean(axis=0) - b.mean(axis=0)
    image_var = max(0.0, float(np.var(per_image, ddof=1)) - flip_a / k_a - flip_b / k_b) / n \
        if n > 1 and not math.isnan(flip_a + flip_b) else 0.0
    base = dict(estimate=estimate, seeds_a=k_a, seeds_b=k_b, images=n, seed_var_a=var_a, seed_var_b=var_b,
                image_var=image_var)
    if min(k_a, k_b) < MIN_SEEDS:
        return _undecided(base, f"needs seeds: {k_a} and {k_b}, at least {MIN_SEEDS} a side")
    terms = [(var_a / k_a, k_a - 1), (var_b / k_b, k_b - 1), (image_var, n - 1)]
    return _t_difference(base, terms, confidence)


def accuracy_interval(correct: np.ndarray, confidence: float = CONFIDENCE) -> Interval:
    """A recipe's accuracy from (seeds, images) 0/1: Wilson's interval for one seed (test sampling only);
    over several, a t interval whose width holds both the seed spread and the test-image sample."""
    y = np.atleast_2d(correct).astype(float)
    k, n = y.shape
    if k == 1:
        return wilson_interval(int(y.sum()), n, confidence)
    flip = flip_variance(y)
    image_var = max(0.0, float(np.var(y.mean(axis=0), ddof=1)) - flip / k) / n
    terms = [(seed_variance(y) / k, k - 1), (image_var, n - 1)]
    se, df = _satterthwaite(terms)
    mean = float(y.mean())
    half = float(scipy_stats.t.ppf(0.5 + confidence / 2, df)) * se
    return Interval(mean, max(PROPORTION[0], mean - half), min(PROPORTION[1], mean + half), k)


def wilson_interval(correct: int, total: int, confidence: float = CONFIDENCE) -> Interval:
    """The accuracy correct/total with its Wilson score interval (Wilson 1927; Newcombe 1998)."""
    if total <= 0:
        raise ValueError("an accuracy needs at least one image")
    low, high = proportion_confint(correct, total, alpha=1 - confidence, method="wilson")
    return Interval(correct / total, float(low), float(high), total)


# ------------------------------------------------------------------ per-seed and per-call metrics


def seed_difference(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> Difference:
    """mean(a) − mean(b) for a metric measured once per seed (s/epoch, best validation accuracy):
    Welch's t, under the same MIN_SEEDS rule as accuracy."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    var_a, var_b = (float(np.var(x, ddof=1)) if len(x) > 1 else math.nan for x in (a, b))
    base = dict(estimate=float(a.mean() - b.mean()), seeds_a=len(a), seeds_b=len(b), images=0, seed_var_a=var_a,
                seed_var_b=var_b, source="seeds")
    if min(len(a), len(b)) < MIN_SEEDS:
        return _undecided(base, f"needs seeds: {len(a)} and {len(b)}, at least {MIN_SEEDS} a side")
    if var_a == 0 and var_b == 0:
        return _undecided(base, "every seed gave the same value: no spread to measure")
    return _t_difference(base, [(var_a / len(a), len(a) - 1), (var_b / len(b), len(b) - 1)], confidence)


def timing_difference(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE,
                      resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                      moment_sigma: float = 0.0) -> Difference:
    """median(a) − median(b) of repeated timed calls (latency): the noise of a timing is the machine's, not
    the training seed's.

    With moment_sigma 0 (the two sides timed in turns, in one process), a percentile bootstrap that resamples
    each side's calls. Timed in separate processes at separate moments (evaluate's stages), each median also
    moves with the machine's state by a factor exp(N(0, moment_sigma²)) that no resampling of its own calls
    sees: that variance, (moment_sigma · median)² a side, is added to the bootstrap's, and the interval and
    p-value are the normal ones on the total."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    estimate = float(np.median(a) - np.median(b)) if len(a) and len(b) else math.nan
    base = dict(estimate=estimate, seeds_a=len(a), seeds_b=len(b), images=0, source="timed calls")
    if min(len(a), len(b)) < MIN_CALLS:
        return _undecided(base, f"needs timed calls: {len(a)} and {len(b)}, at least {MIN_CALLS} a side")
    result = scipy_stats.bootstrap((a, b), lambda x, y, axis: np.median(x, axis=axis) - np.median(y, axis=axis),
                                   n_resamples=resamples, confidence_level=confidence, method="percentile",
                                   vectorized=True, rng=np.random.default_rng(seed))
    if moment_sigma > 0:
        moments = moment_sigma ** 2 * (np.median(a) ** 2 + np.median(b) ** 2)
        se = math.sqrt(float(result.standard_error) ** 2 + moments)
        z = scipy_stats.norm.ppf(0.5 + confidence / 2)
        pvalue = float(2 * scipy_stats.norm.sf(abs(estimate) / se))
        return Difference(se=se, df=math.inf, pvalue=pvalue, low=estimate - z * se, high=estimate + z * se,
                          **{**base, "source": "timed calls and the moments they were timed at"})
    ci = result.confidence_interval
    dist = result.bootstrap_distribution
    pvalue = float(min(1.0, 2 * min(np.mean(dist <= 0), np.mean(dist >= 0))))
    return Difference(se=float(result.standard_error), df=math.inf, pvalue=pvalue, low=float(ci.low),
                      high=float(ci.high), **base)


def timing_ratio(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE,
                 resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> tuple[float, float, float]:
    """median(a) / median(b) of repeated timed calls with its percentile-bootstrap interval (each side's calls
    resampled): (estimate, low, high); NaN bounds with fewer than MIN_CALLS calls a side."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    estimate = float(np.median(a) / np.median(b)) if len(a) and len(b) else math.nan
    if min(len(a), len(b)) < MIN_CALLS:
        return estimate, math.nan, math.nan
    ci = scipy_stats.bootstrap((a, b), lambda x, y, axis: np.median(x, axis=axis) / np.median(y, axis=axis),
                               n_resamples=resamples, confidence_level=confidence, method="percentile",
                               vectorized=True, rng=np.random.default_rng(seed)).confidence_interval
    return estimate, float(ci.low), float(ci.high)


# ------------------------------------------------------------------ planning


def seeds_needed(diff: Difference, target: float, power: float = POWER) -> int | None:
    """Seeds a side that would detect |target| with `power` under the difference's own variance parts
    (its seeds' spread, or the dataset's pooled one); None when no number would (the test-image term
    alone is too wide, or the variances are unknown)."""
    if diff.images == 0 and diff.source != "seeds" or math.isnan(diff.seed_var_a + diff.seed_var_b) or not target:
        return None
    for k in range(MIN_SEEDS, MAX_SEEDS_PLANNED + 1):
        terms = [(diff.seed_var_a / k, k - 1), (diff.seed_var_b / k, k - 1)]
        if diff.images:
            terms.append((diff.image_var, diff.images - 1))
        se, df = _satterthwaite(terms)
        if _detectable(se, df, power) <= abs(target):
            return k
    return None


def _detectable(se: float, df: float, power: float) -> float:
    return float((scipy_stats.t.ppf(1 - ALPHA / 2, df) + scipy_stats.t.ppf(power, df)) * se)


def _satterthwaite(terms: list[tuple[float, int]]) -> tuple[float, float]:
    """(standard error, degrees of freedom) of a sum of independent variance estimates (variance, df)."""
    total = sum(v for v, _ in terms)
    denominator = sum(v * v / df for v, df in terms if df > 0 and v > 0)
    return math.sqrt(total), (total * total / denominator if denominator > 0 else math.inf)


def _t_difference(base: dict, terms: list[tuple[float, int]], confidence: float) -> Difference:
    se, df = _satterthwaite(terms)
    if se == 0:
        return _undecided(base, "no spread between seeds or images to measure")
    half = float(scipy_stats.t.ppf(0.5 + confidence / 2, df)) * se
    pvalue = float(2 * scipy_stats.t.sf(abs(base["estimate"]) / se, df))
    return Difference(low=base["estimate"] - half, high=base["estimate"] + half, se=se, df=df, pvalue=pvalue, **base)


def _undecided(base: dict, reason: str) -> Difference:
    return Difference(low=math.nan, high=math.nan, se=math.nan, df=math.nan, pvalue=math.nan, undecided=reason,
                      **base)
