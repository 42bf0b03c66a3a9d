"""Dataset pairs: the same runs on a dataset and on one declared as it minus some classes.

Accuracy over 100 classes and accuracy over 94 are measured on different test sets: whether "the
clean dataset scores higher" means "the model got better" or "the test got easier" they cannot
tell. So both models are scored on the same images, the test images of the shared classes, the
full model (a) as it predicts and (b) with its answers restricted to the shared classes (argmax
over their scores), beside the reduced model, with paired intervals. The naive numbers stay,
labelled as not comparable.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from cnnbench.core.errors import CnnbenchError
from cnnbench.core.plotting import save_figure
from cnnbench.evaluation.stats import GREATER, LESS, UNDECIDED, accuracy_interval, holm
from cnnbench.params.config import DatasetConfig
from cnnbench.report.compare import Comparisons, difference_words, pair_row, plot_differences
from cnnbench.report.runs import RunsData
from cnnbench.report.tables import accuracy_cell, figure_markdown, md_text, points, short_run_name

# What must match for two datasets to hold the same images: all but the classes each drops.
SAME_IMAGES = ("source", "image_size", "val_fraction", "test_fraction", "split_seed")


@dataclass
class DatasetPair:
    """Two datasets declared as one source, split alike, `reduced` dropping more classes; runs alike but for it."""

    full: str
    reduced: str
    dropped: list[str]            # classes `reduced` drops on top of those `full` drops
    settings: list[tuple[str, str, str]]  # (label, run on full, run on reduced)


@dataclass
class SharedClassComparison:
    """A full-dataset run and a reduced-dataset run scored on the same images: the shared classes' test images."""

    run_full: str
    run_reduced: str
    classes: int                     # the shared classes
    images: int
    left_out: int                    # the reduced run's test images absent from the full run's test split
    full_as_predicted: np.ndarray    # (seeds, images) 0/1
    full_restricted: np.ndarray | None  # the same with answers restricted to the shared classes; None without scores
    reduced: np.ndarray

    def restricted_or_as_predicted(self) -> tuple[np.ndarray, str]:
        """The full model's fairest outcomes available, and what they are."""
        if self.full_restricted is not None:
            return self.full_restricted, "restricted to the shared classes"
        return self.full_as_predicted, "as it predicts (no scores.npz to restrict it)"


def find_dataset_pairs(data: RunsData, datasets: Mapping[str, DatasetConfig]) -> list[DatasetPair]:
    """Pairs of the suite's datasets that `dropped_classes` relates, each with the runs that differ only in it."""
    keys: dict[str, dict[str, str]] = {}  # runs that differ only in their dataset share model and train config
    for _, row in data.runs.sort_values(["run", "seed"]).drop_duplicates("run").iterrows():
        keys.setdefault(row["config"], {}).setdefault(row["dataset"], row["run"])
    models = dict(zip(data.runs["run"], zip(data.runs["model"], data.runs["pretrained"])))
    pairs: dict[tuple[str, str], DatasetPair] = {}
    for by_dataset in keys.values():
        for full, reduced in itertools.permutations(sorted(by_dataset), 2):
            dropped = dropped_classes(datasets.get(full), datasets.get(reduced))
            if not dropped:
                continue
            pair = pairs.setdefault((full, reduced), DatasetPair(full, reduced, dropped, []))
            run_full, run_reduced = by_dataset[full], by_dataset[reduced]
            label = short_run_name(run_full, full)
            if label == run_full:
                label = f"{models[run_full][0]} (pretrained: {models[run_full][1]})"
            pair.settings.append((label, run_full, run_reduced))
    return [pairs[k] for k in sorted(pairs)]


def dropped_classes(full: DatasetConfig | None, reduced: DatasetConfig | None) -> list[str]:
    """The classes `reduced` drops beyond `full`'s when both are declared from the same images, else []."""
    if full is None or reduced is None:
        return []  # a dataset params.yaml does not declare has no relation to read
    if any(getattr(full, key) != getattr(reduced, key) for key in SAME_IMAGES):
        return []
    if not set(full.drop_classes) < set(reduced.drop_classes):
        return []
    return sorted(set(reduced.drop_classes) - set(full.drop_classes))


def shared_class_comparison(data: RunsData, book: Comparisons, run_full: str, run_reduced: str,
                            dropped: list[str]) -> SharedClassComparison | None:
    """Both runs on the test images they share (the reduced run's, where the full run's split has them too)."""
    full, reduced = book.outcomes(run_full), book.outcomes(run_reduced)
    if full is None or reduced is None:
        return None
    where = {image: i for i, image in enumerate(full.ids)}
    keep = [j for j, image in enumerate(reduced.ids) if image in where]
    if not keep:
        return None
    at = np.array([where[reduced.ids[j]] for j in keep])
    if (full.true[at] != reduced.true[keep]).any():
        raise CnnbenchError(f"runs {run_full} and {run_reduced}: the same test image ids carry different labels; "
                            f"re-run their prepare and evaluate stages.")
    shared = [c for c in (data.classes(run_full) or []) if c not in set(dropped)]
    restricted = []
    for seed in full.seeds:
        scores = data.scores(run_full, seed)
        if scores is None:
            break
        if tuple(scores.ids) != full.ids:
            raise CnnbenchError(f"run {run_full}, seed {seed}: scores.npz and predictions.csv list different test "
                                f"images; re-run its evaluate stage.")
        restricted.append(scores.restricted_predictions(shared)[at] == full.true[at])
    return SharedClassComparison(
        run_full, run_reduced, len(shared), len(keep), len(reduced.ids) - len(keep), full.correct[:, at],
        np.vstack(restricted) if len(restricted) == len(full.seeds) else None, reduced.correct[:, keep])


# ------------------------------------------------------------------ the README section


@dataclass
class FairSetting:
    """One setting of a pair on the shared images, with the paired rows (compare.COLUMNS) of reduced − full."""

    label: str
    comparison: SharedClassComparison
    as_predicted: dict
    restricted: dict | None   # None without the full run's scores.npz

    @property
    def fair(self) -> dict:
        """The row a verdict rests on: the full model restricted to the shared classes where it can be."""
        return self.restricted or self.as_predicted


def shared_differences(book: Comparisons, c: SharedClassComparison):
    """(reduced − full as it predicts, reduced − full restricted or None), each computed once per report."""
    ids = book.outcomes(c.run_reduced).ids
    as_predicted = book.difference(c.run_reduced, c.run_full, c.reduced, c.full_as_predicted, "shared, as predicted",
                                   ids)
    restricted = None if c.full_restricted is None else book.difference(
        c.run_reduced, c.run_full, c.reduced, c.full_restricted, "shared, restricted", ids)
    return as_predicted, restricted


def fair_settings(pair: DatasetPair, data: RunsData, book: Comparisons) -> list[FairSetting]:
    """Every setting of the pair that both runs evaluated, compared on the shared classes' test images; the
    verdicts of the fair rows Holm-corrected over the pair's settings (one family)."""
    found = []
    for label, run_full, run_reduced in pair.settings:
        c = shared_class_comparison(data, book, run_full, run_reduced, pair.dropped)
        if c is not None:
            found.append((label, c, *shared_differences(book, c)))
    adjusted = holm([(restricted or as_predicted).pvalue for _, _, as_predicted, restricted in found])
    out = []
    for (label, c, as_predicted, restricted), p in zip(found, adjusted):
        fair_p = (p, None) if restricted is not None else (None, p)
        out.append(FairSetting(label, c, pair_row(c.run_reduced, c.run_full, as_predicted, fair_p[1]),
                               None if restricted is None else pair_row(c.run_reduced, c.run_full, restricted,
                                                                        fair_p[0])))
    return out


def _cell(correct: np.ndarray | None) -> str:
    if correct is None:
        return "no scores.npz"
    interval = accuracy_interval(correct)
    return accuracy_cell(interval.estimate, interval.low, interval.high)


def _diff_cell(row: dict | None) -> str:
    if row is None:
        return ""
    if row["verdict"] == UNDECIDED:
        return f"{points(row['diff'])} (undecided: needs seeds)"
    return f"{points(row['diff'])} ({points(row['low'])} … {points(row['high'])})"


def _fair_table(settings: list[FairSetting]) -> list[str]:
    lines = [f"| setting | images | full model, as it predicts (%) | full model, answers restricted to the "
             f"{settings[0].comparison.classes} shared classes (%) | reduced model (%) | reduced − full as it "
             "predicts (points, 95 % interval) | reduced − full restricted (points, 95 % interval) |",
             "|---|---|---|---|---|---|---|"]
    sentences = []
    for s in settings:
        c = s.comparison
        lines.append(f"| {s.label} | {c.images:,} | {_cell(c.full_as_predicted)} | {_cell(c.full_restricted)} | "
                     f"{_cell(c.reduced)} | {_diff_cell(s.as_predicted)} | {_diff_cell(s.restricted)} |")
        fair = s.fair
        verdict = {GREATER: "beats", LESS: "is beaten by", UNDECIDED: "is undecided against"}.get(
            fair["verdict"], "is within noise of")
        what = "restricted to the shared classes" if s.restricted else "as it predicts"
        sentences.append(f"On the same images, `{c.run_reduced}` {verdict} `{c.run_full}` {what} "
                         f"({difference_words(fair)}" + (f"; {fair['undecided']}" if fair["undecided"] else
                                                         f"; Holm-adjusted p = {fair['p_holm']:.2g}") + ")."
                         + (f" {c.left_out:,} of its test images are not in `{c.run_full}`'s test split and are "
                            "left out." if c.left_out else ""))
    return lines + ["", " ".join(sentences), ""]


def _naive_table(pair: DatasetPair, runs: pd.DataFrame) -> list[str]:
    top1 = runs.groupby("run")["test_top1"].mean()
    lines = [f"Not comparable, kept for reference: each model on its own test set ({pair.full}: all its classes; "
             f"{pair.reduced}: without the dropped ones), so the change mixes a better model with an easier test.", "",
             f"| setting | {pair.full} test top-1 (%), own test set | {pair.reduced} test top-1 (%), own test set "
             "| change (points), not comparable |", "|---|---|---|---|"]
    for label, run_full, run_reduced in pair.settings:
        a, b = (top1.get(r, np.nan) for r in (run_full, run_reduced))
        change = "" if np.isnan(a) or np.isnan(b) else points(b - a)
        cells = ["" if np.isnan(v) else f"{100 * v:.1f}" for v in (a, b)]
        lines.append(f"| {label} | {cells[0]} | {cells[1]} | {change} |")
    return lines + [""]


def plot_dataset_pairs(fair: list[tuple[DatasetPair, list[FairSetting]]], highlight: set[str],
                       highlight_label: str) -> Figure | None:
    """The reduced model minus the full one on the shared classes' images, as it predicts and restricted."""
    several = len(fair) > 1  # one pair: its names go in the title, and the labels stay short
    rows = [{**row, "label": f"{pair.reduced}: " * several + f"{s.label}, full model {what}"}
            for pair, settings in fair for s in settings
            for what, row in (("restricted", s.restricted), ("as it predicts", s.as_predicted)) if row is not None]
    names = "reduced − full model" if several or not fair else f"{fair[0][0].reduced} − {fair[0][0].full}"
    fig = plot_differences(pd.DataFrame(rows), f"{names} on the same images (95 % interval; grey: within noise)",
                           "test top-1 difference (percentage points)")
    if fig is None:
        return None
    marked = all(set(p.dropped) <= highlight for p, _ in fair)
    dropped = f"classes ({highlight_label})" if marked else "some classes"
    fig.suptitle(f"Effect of dropping {dropped} on test top-1 accuracy", y=1.02)
    return fig


def pairs_section(pairs: list[DatasetPair], data: RunsData, book: Comparisons, fig_dir: Path, highlight: set[str],
                  highlight_label: str) -> str:
    """The README's "Effect of dropping classes" section, its figure saved into fig_dir."""
    lines = ["## Effect of dropping classes", ""]
    fair = []
    for pair in pairs:
        dropped = f"{len(pair.dropped)} classes dropped: {', '.join(md_text(c) for c in pair.dropped)}"
        lines += [f"`{pair.reduced}` is `{pair.full}` without some classes ({dropped}); same runs otherwise.", ""]
        settings = fair_settings(pair, data, book)
        if settings:
            fair.append((pair, settings))
            lines += [f"Both models on the same images, the test images of the {pair.reduced} classes; accuracies "
                      "with their 95 % interval in parentheses (one seed: Wilson's, test sampling only; several: "
                      "over seeds and test images, cut at 100 %); differences of the recipes over seeds and these "
                      "images, as in each dataset's table, the verdicts Holm-corrected over the pair's settings.", ""]
            lines += _fair_table(settings)
        lines += _naive_table(pair, data.runs)
    fig = plot_dataset_pairs(fair, highlight, highlight_label)
    if fig is not None:
        name = "noisy_classes_effect.png"
        save_figure(fig, fig_dir / name)
        lines += figure_markdown("The reduced model against the full one on the same images", name)
    return "\n".join(lines)
