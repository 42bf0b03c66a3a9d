"""The study's claims, re-tested: each `claims:` entry of params.yaml against what the suite measured.

Accuracy is compared image by image (paired bootstrap, seeds pooled): on the same test images for
runs of one dataset, on the shared classes' test images for a dataset and the same one minus some
classes (the full model's answers restricted to the shared classes). Any other per-run metric
(seconds per epoch, a latency) is compared across seeds with Welch's interval, or, with one seed
on a side, by its values alone: no interval, and the verdict says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import pandas as pd

from cnnbench.config import ClaimConfig, DatasetConfig
from cnnbench.report.compare import run_outcomes
from cnnbench.report.pairs import dropped_classes, shared_class_comparison
from cnnbench.report.runs import RunsData
from cnnbench.report.tables import MINUS, fmt, points
from cnnbench.stats import Interval, paired_bootstrap, welch_interval

PER_IMAGE = ("test_top1",)  # metrics whose per-image outcomes predictions.csv holds
PERCENT = ("test_top1", "test_top5", "test_top1_tta", "best_val_acc", "final_val_acc")  # fractions shown in %
UNITS = {"sec_per_epoch": "s/epoch"}


@dataclass
class ClaimResult:
    """One row of the claims table, as text."""

    claim: ClaimConfig
    study: str
    ours: str
    difference: str
    verdict: str


def evaluate_claims(claims: tuple[ClaimConfig, ...], data: RunsData, datasets: Mapping[str, DatasetConfig],
                    reference: Mapping[str, Mapping[str, float]]) -> list[ClaimResult]:
    """Each claim with the study's figures, ours, the difference with its interval and a verdict."""
    return [_evaluate(c, data, datasets, reference) for c in claims]


def _evaluate(claim: ClaimConfig, data: RunsData, datasets, reference) -> ClaimResult:
    study = _study(claim, reference)
    values = {r: _values(data.runs, r, claim.metric) for r in (claim.run_a, claim.run_b)}
    if any(not len(v) for v in values.values()):
        missing = [r for r, v in values.items() if not len(v)]
        return ClaimResult(claim, study, f"no {claim.metric} for `{'`, `'.join(missing)}` yet", "", "not run yet")
    if claim.metric in PER_IMAGE:
        return _per_image(claim, data, datasets, study)
    a, b = values[claim.run_a], values[claim.run_b]
    ours = f"{_fmt(claim.metric, a.mean())} vs {_fmt(claim.metric, b.mean())}{_unit(claim.metric)}"
    if claim.better == "lower" and b.mean() > 0:
        ours += f" ({a.mean() / b.mean():.2f}×)"
    diff = welch_interval(a, b)
    if diff is None:
        # One seed a side gives no interval, and a difference without one is no verdict: the report
        # shows the estimate and leaves the claim undecided rather than calling noise a finding.
        estimate = a.mean() - b.mean()
        unit = " points" if claim.metric in PERCENT else _unit(claim.metric)
        return ClaimResult(claim, study, ours + _seeds(a, b), f"{_signed(claim.metric, estimate)}{unit} (no interval)",
                           "undecided: one seed, no interval (declare `seeds:` on both runs)")
    return ClaimResult(claim, study, ours + _seeds(a, b), _interval_text(claim.metric, diff), _verdict(claim, diff))


def _values(runs: pd.DataFrame, run: str, metric: str) -> pd.Series:
    """The run's value of `metric`, one per seed that has it."""
    if metric not in runs:
        return pd.Series(dtype=float)
    return runs.loc[runs["run"] == run, metric].dropna()


def _per_image(claim: ClaimConfig, data: RunsData, datasets, study: str) -> ClaimResult:
    """Accuracy of A minus B on the same images; across a dataset pair, on the shared classes' images."""
    rows = data.runs.drop_duplicates("run").set_index("run")["dataset"]
    ds_a, ds_b = rows[claim.run_a], rows[claim.run_b]
    if ds_a == ds_b:
        a, b = run_outcomes(data.predictions, claim.run_a), run_outcomes(data.predictions, claim.run_b)
        if a is None or b is None:
            return ClaimResult(claim, study, "no predictions.csv yet", "", "not run yet")
        if a.ids != b.ids:
            return ClaimResult(claim, study, "evaluated on different test images", "", "not comparable")
        a_correct, b_correct, where = a.correct, b.correct, f"{len(a.ids):,} test images"
    else:
        fair = _shared(claim, data, datasets, ds_a, ds_b)
        if isinstance(fair, str):
            return ClaimResult(claim, study, fair, "", "not comparable")
        a_correct, b_correct, where = fair
    diff = paired_bootstrap(a_correct, b_correct)
    ours = (f"{100 * a_correct.mean():.1f} vs {100 * b_correct.mean():.1f} % on {where}"
            + _seeds(a_correct, b_correct))
    return ClaimResult(claim, study, ours, _interval_text(claim.metric, diff), _verdict(claim, diff))


def _shared(claim: ClaimConfig, data: RunsData, datasets, ds_a: str, ds_b: str):
    """(A's outcomes, B's outcomes, where) on the shared classes' images, or why the runs do not compare."""
    for full_ds, reduced_ds, run_full, run_reduced in ((ds_a, ds_b, claim.run_a, claim.run_b),
                                                      (ds_b, ds_a, claim.run_b, claim.run_a)):
        dropped = dropped_classes(datasets.get(full_ds), datasets.get(reduced_ds))
        if dropped:
            c = shared_class_comparison(data, run_full, run_reduced, dropped)
            if c is None:
                return "no shared test images yet"
            full, what = c.restricted_or_as_predicted()
            by_run = {run_full: full, run_reduced: c.reduced}
            return (by_run[claim.run_a], by_run[claim.run_b],
                    f"the {c.images:,} test images of the {c.classes} shared classes, `{run_full}` {what}")
    return f"different datasets ({ds_a}, {ds_b}) that params.yaml does not declare as one minus some classes"


def _verdict(claim: ClaimConfig, diff: Interval) -> str:
    """confirmed / refuted / within noise: where the interval of A's advantage over B lies."""
    sign = (1 if claim.better == "higher" else -1) * (1 if claim.direction.startswith("a_") else -1)
    low, high = sorted((sign * diff.low, sign * diff.high))  # the claimed side's advantage
    threshold = -claim.margin if claim.direction.endswith("not_worse") else 0.0
    if low > threshold:
        return "confirmed"
    if high < threshold:
        return "refuted"
    return "within noise"


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


def _interval_text(metric: str, diff: Interval) -> str:
    unit = " points" if metric in PERCENT else _unit(metric)
    return f"{_signed(metric, diff.estimate)}{unit} ({_signed(metric, diff.low)} … {_signed(metric, diff.high)})"


def _seeds(a, b) -> str:
    n_a, n_b = (len(x) for x in (a, b))
    return "" if n_a == n_b == 1 else f"; {n_a} and {n_b} seeds"


def claims_section(results: list[ClaimResult]) -> str:
    """The README's opening section: the claims table and the line that says how to read it."""
    lines = ["## The study's claims, re-tested", "",
             "| claim | A vs B | the study | ours | A − B (95 % interval) | verdict |", "|---|---|---|---|---|---|"]
    for r in results:
        c = r.claim
        margin = f" (margin {_signed(c.metric, c.margin).lstrip('+')}{' points' if c.metric in PERCENT else ''})" \
            if c.margin else ""
        lines.append(f"| {c.text}{margin} | `{c.run_a}` vs `{c.run_b}` | {r.study} | {r.ours} | {r.difference} | "
                     f"**{r.verdict}** |")
    lines += ["", "A claim is *confirmed* when the whole 95 % interval of the difference lies on its side (for "
              "\"not worse\": above minus the margin), *refuted* when it lies wholly on the other side, and *within "
              "noise* otherwise. Accuracy: paired bootstrap over the same test images, seeds pooled; other metrics: "
              "Welch's interval over seeds. The study's figures are its own (best validation accuracy, on its "
              "hardware): compare ratios, not absolute seconds.", ""]
    return "\n".join(lines)

