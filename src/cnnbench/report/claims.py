"""The study's claims, re-tested: each `claims:` entry of params.yaml against what the suite measured.

Each claim is declared in advance and is its own test (no correction across claims), decided by the
one rule of cnnbench.evaluation.stats on the claimed side's advantage: *confirmed* when it lies beyond the
claim's threshold (0, or minus the margin for "not worse") at 5 %, *refuted* when it lies beyond it
on the other side, *within noise* otherwise, *undecided* below the seeds a verdict needs. Accuracy
is the recipes' difference over seeds and test images, read from the report's Comparisons (the same
numbers as the dataset's table; for a dataset and the same one minus some classes, on the shared
classes' test images); a metric measured once per seed (s/epoch) is compared over seeds; a latency
over its repeated timed calls.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

import pandas as pd

from cnnbench.evaluation.stats import (
    GREATER,
    LESS,
    MAX_SEEDS_PLANNED,
    MOMENT_SIGMA,
    UNDECIDED,
    WITHIN,
    Difference,
    decide,
    seed_difference,
    seeds_needed,
    timing_difference,
)
from cnnbench.params.config import ClaimConfig, DatasetConfig
from cnnbench.report.compare import VERDICT_RULE_DOC, Comparisons
from cnnbench.report.pairs import dropped_classes, shared_class_comparison, shared_differences
from cnnbench.report.runs import RunsData
from cnnbench.report.tables import MINUS, fmt, points

PER_IMAGE = ("test_top1",)  # metrics whose per-image outcomes predictions.csv holds
PERCENT = ("test_top1", "test_top5", "test_top1_tta", "best_val_acc", "final_val_acc")  # fractions shown in %
UNITS = {"sec_per_epoch": "s/epoch"}
VERDICTS = {GREATER: "confirmed", LESS: "refuted"}


@dataclass
class ClaimResult:
    """One row of the claims table, as text."""

    claim: ClaimConfig
    study: str
    ours: str
    difference: str
    detectable: str
    verdict: str


def evaluate_claims(claims: tuple[ClaimConfig, ...], data: RunsData, datasets: Mapping[str, DatasetConfig],
                    reference: Mapping[str, Mapping[str, float]], book: Comparisons) -> list[ClaimResult]:
    """Each claim with the study's figures, ours, the difference with its interval and a verdict."""
    return [_evaluate(c, data, datasets, reference, book) for c in claims]


def _evaluate(claim: ClaimConfig, data: RunsData, datasets, reference, book: Comparisons) -> ClaimResult:
    study = _study(claim, reference)
    values = {r: _values(data.runs, r, claim.metric) for r in (claim.run_a, claim.run_b)}
    if any(not len(v) for v in values.values()):
        missing = [r for r, v in values.items() if not len(v)]
        return ClaimResult(claim, study, f"no {claim.metric} for `{'`, `'.join(missing)}` yet", "", "", "not run yet")
    if claim.metric in PER_IMAGE:
        found = _accuracy(claim, data, datasets, book)
        if isinstance(found, str):
            return ClaimResult(claim, study, found, "", "", "not comparable")
        diff, ours = found
    else:
        a, b = values[claim.run_a], values[claim.run_b]
        ours = f"{_fmt(claim.metric, a.mean())} vs {_fmt(claim.metric, b.mean())}{_unit(claim.metric)}"
        if claim.better == "lower" and b.mean() > 0:
            ours += f" ({a.mean() / b.mean():.2f}×)"
        if claim.metric.startswith("latency_"):
            diff = _latency(claim, data, a.mean() - b.mean())
            ours += f"; {diff.seeds_a} and {diff.seeds_b} timed calls" if diff.seeds_a else ""
        else:
            diff = seed_difference(a, b)
            ours += _seeds(a, b)
    return ClaimResult(claim, study, ours, _interval_text(claim.metric, diff), _detectable(claim, diff),
                       _verdict(claim, diff))


def _values(runs: pd.DataFrame, run: str, metric: str) -> pd.Series:
    """The run's value of `metric`, one per seed that has it."""
    if metric not in runs:
        return pd.Series(dtype=float)
    return runs.loc[runs["run"] == run, metric].dropna()


def _accuracy(claim: ClaimConfig, data: RunsData, datasets, book: Comparisons) -> tuple[Difference, str] | str:
    """(A − B in accuracy, what was compared) from the report's comparisons, or why the runs do not compare."""
    rows = data.runs.drop_duplicates("run").set_index("run")["dataset"]
    ds_a, ds_b = rows[claim.run_a], rows[claim.run_b]
    a, b = book.outcomes(claim.run_a), book.outcomes(claim.run_b)
    if a is None or b is None:
        return "no predictions.csv yet"
    if ds_a == ds_b:
        diff = book.difference(claim.run_a, claim.run_b)
        if diff is None:
            return "evaluated on different test images"
        return diff, (f"{100 * a.correct.mean():.1f} vs {100 * b.correct.mean():.1f} % on {len(a.ids):,} test images"
                      + _seeds(a.correct, b.correct))
    for full_ds, reduced_ds, run_full, run_reduced in ((ds_a, ds_b, claim.run_a, claim.run_b),
                                                      (ds_b, ds_a, claim.run_b, claim.run_a)):
        dropped = dropped_classes(datasets.get(full_ds), datasets.get(reduced_ds))
        if not dropped:
            continue
        c = shared_class_comparison(data, book, run_full, run_reduced, dropped)
        if c is None:
            return "no shared test images yet"
        as_predicted, restricted = shared_differences(book, c)
        full, what = c.restricted_or_as_predicted()
        diff = restricted or as_predicted  # reduced − full
        by_run = {run_full: full, run_reduced: c.reduced}
        ours = (f"{100 * by_run[claim.run_a].mean():.1f} vs {100 * by_run[claim.run_b].mean():.1f} % on the "
                f"{c.images:,} test images of the {c.classes} shared classes, `{run_full}` {what}"
                + _seeds(by_run[claim.run_a], by_run[claim.run_b]))
        return (diff if claim.run_a == run_reduced else diff.flipped()), ours
    return f"different datasets ({ds_a}, {ds_b}) that params.yaml does not declare as one minus some classes"


def _latency(claim: ClaimConfig, data: RunsData, medians: float) -> Difference:
    """A − B in a latency, over the timed calls evaluate kept (the first seed's: latency depends on the
    architecture, not on the trained weights); `medians` (A's minus B's) when no calls were kept."""
    a, b = (data.timing_samples(r, claim.metric) for r in (claim.run_a, claim.run_b))
    if a is None or b is None:
        return replace(timing_difference([], []), estimate=float(medians),
                       undecided="no timed calls kept: re-run the runs' evaluate stage")
    return timing_difference(a, b, moment_sigma=MOMENT_SIGMA)  # each run timed in its own stage, at its moment


def _advantage(claim: ClaimConfig, diff: Difference) -> Difference:
    """The claimed side's advantage: A − B turned so that a larger value is what the claim says."""
    sign = (1 if claim.better == "higher" else -1) * (1 if claim.direction.startswith("a_") else -1)
    return diff if sign > 0 else diff.flipped()


def _threshold(claim: ClaimConfig) -> float:
    return -claim.margin if claim.direction.endswith("not_worse") else 0.0


def _verdict(claim: ClaimConfig, diff: Difference) -> str:
    """confirmed / refuted / within noise / undecided, by stats.decide on the claimed side's advantage."""
    advantage = _advantage(claim, diff)
    verdict = decide(advantage, _threshold(claim))
    if claim.direction == "a_same" and verdict != UNDECIDED:  # a negative control: noise is what it should find
        return "within noise, as a control should be" if verdict == WITHIN else \
            "control failed: one recipe called different from itself"
    if verdict != UNDECIDED:
        return VERDICTS.get(verdict, "within noise") + _needed(claim, advantage, verdict)
    reason = advantage.undecided.split(":")[0]
    return f"undecided: {reason}" + _needed(claim, advantage, verdict)


def _needed(claim: ClaimConfig, advantage: Difference, verdict: str) -> str:
    """For an open claim, about how many seeds a side would decide it at the difference seen."""
    if verdict in (GREATER, LESS) or advantage.source == "timed calls" or claim.direction == "a_same":
        return ""
    if math.isnan(advantage.seed_var_a + advantage.seed_var_b):
        return ""  # no seed spread measured on these images: nothing to plan with
    k = seeds_needed(advantage, advantage.estimate - _threshold(claim))
    return f" (about {k} seeds a side would decide it)" if k else f" (more than {MAX_SEEDS_PLANNED} seeds a side)"


def _detectable(claim: ClaimConfig, diff: Difference) -> str:
    """The smallest difference these seeds and images detect with 80 % power, in the metric's units."""
    value = diff.detectable()
    if math.isnan(value):
        return ""
    unit = " points" if claim.metric in PERCENT else _unit(claim.metric)
    return f"{_signed(claim.metric, value).lstrip('+')}{unit}"


def _study(claim: ClaimConfig, reference) -> str:
    if not claim.study_metric:
        return ""
    a, b = (reference.get(r, {}).get(claim.study_metric) for r in (claim.run_a, claim.run_b))
    if a is None and b is None:
        return ""
    shown = ["—" if v is None else _fmt(claim.study_metric, v) for v in (a, b)]
    text = f"{shown[0]} vs {shown[1]}{_unit(claim.study_metric)}"
    if claim.better == "lower" and a is not None and b:
        text += f" ({a / b:.2f}×)"
    return text + f" ({claim.study_metric})"


def _fmt(metric: str, value: float) -> str:
    return f"{100 * value:.1f}" if metric in PERCENT else fmt(value, kind="sec")


def _unit(metric: str) -> str:
    return " %" if metric in PERCENT else (f" {UNITS[metric]}" if metric in UNITS else "")


def _signed(metric: str, value: float) -> str:
    return points(value) if metric in PERCENT else f"{value:+.3g}".replace("-", MINUS)


def _interval_text(metric: str, diff: Difference) -> str:
    unit = " points" if metric in PERCENT else _unit(metric)
    if math.isnan(diff.low):
        return f"{_signed(metric, diff.estimate)}{unit} (no interval)"
    return f"{_signed(metric, diff.estimate)}{unit} ({_signed(metric, diff.low)} … {_signed(metric, diff.high)})"


def _seeds(a, b) -> str:
    n_a, n_b = (len(x) for x in (a, b))
    return "" if n_a == n_b == 1 else f"; {n_a} and {n_b} seeds"


def claims_section(results: list[ClaimResult]) -> str:
    """The README's opening section: the claims table and the lines that say how to read it."""
    lines = ["## The study's claims, re-tested", "",
             "| claim | A vs B | the study | ours | A − B (95 % interval) | detectable (80 % power) | verdict |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        c = r.claim
        margin = f" (margin {_signed(c.metric, c.margin).lstrip('+')}{' points' if c.metric in PERCENT else ''})" \
            if c.margin else ""
        lines.append(f"| {c.text}{margin} | `{c.run_a}` vs `{c.run_b}` | {r.study} | {r.ours} | {r.difference} | "
                     f"{r.detectable} | **{r.verdict}** |")
    lines += ["", "Each claim was declared in params.yaml before its runs were trained and is a test of its own (no "
              "correction across claims). It is *confirmed* when the claimed side's advantage lies beyond its "
              "threshold at the 5 % level (0, or minus the margin for \"not worse\"; the same as the 95 % interval "
              "lying wholly on its side), *refuted* when it lies beyond it on the other side, *within noise* "
              "otherwise, and *undecided* when a run has fewer than 3 seeds (a control, *a_same*: one recipe under two "
              "sets of seeds, passes when found within noise): accuracy and s/epoch vary from seed to "
              "seed, and a verdict needs that spread measured. Accuracy: the two recipes over training seeds and "
              f"test images (seeds × images, {VERDICT_RULE_DOC}); s/epoch: Welch's t over seeds; "
              "a latency: each run's evaluate timed it in its own stage, at its own moment, so the interval holds "
              "the spread of the timed calls (bootstrap) and the drift between moments (a log-sd of "
              f"{MOMENT_SIGMA} a side, measured by bench/latency_moments.py): only large speed-ups decide; "
              "`cnnbench cost` measures side by side. "
              "*detectable* is the smallest difference the seeds and test images at hand would detect with 80 % "
              "power; an open claim says about how many seeds a side would decide it at the difference seen. The "
              "study's figures are its own (best validation accuracy, on its hardware): compare ratios, not "
              "absolute seconds.", ""]
    return "\n".join(lines)
