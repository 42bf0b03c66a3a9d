"""Paired comparisons: runs scored on the same test images, compared image by image.

Two runs are compared only when they were evaluated on the very same test images: same dataset,
identical ids in predictions.csv, in the same order; never across test sets. Each pair gets the
paired bootstrap interval of its accuracy difference (seeds pooled) and an exact McNemar test, and
a sentence says "A beats B" only when the interval excludes zero.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from cnnbench.errors import CnnbenchError
from cnnbench.plotting import BASE, clip, new_figure, style
from cnnbench.report.tables import difference_text, fmt_top1, points, short_run_name
from cnnbench.stats import BOOTSTRAP_RESAMPLES, mcnemar_exact, paired_bootstrap

COLUMNS = ["a", "b", "diff", "low", "high", "pvalue", "only_a", "only_b", "images", "seeds_a", "seeds_b",
           "beyond_noise"]
NOISE = "#9a9a9a"  # grey: a difference within noise


@dataclass
class Outcomes:
    """One run's per-image correctness on its test split: `correct` is (seeds, images), images in `ids` order."""

    run: str
    ids: tuple[str, ...]
    seeds: list[int]
    true: np.ndarray       # class names, per image
    correct: np.ndarray


def run_outcomes(predictions: pd.DataFrame, run: str) -> Outcomes | None:
    """The run's outcomes from its predictions.csv rows (every seed); None when it has none."""
    rows = predictions[predictions["run"] == run]
    if not len(rows):
        return None
    seeds, correct, ids, true = [], [], None, None
    for seed, group in rows.groupby("seed", sort=True):
        group = group.sort_values("index")
        if ids is None:
            ids, true = tuple(group["id"]), group["true"].to_numpy(dtype=str)
        elif tuple(group["id"]) != ids:
            raise CnnbenchError(f"run {run}: seed {seed} was evaluated on other test images than seed {seeds[0]}; "
                                f"re-run its evaluate stage.")
        seeds.append(int(seed))
        correct.append((group["true"] == group["predicted"]).to_numpy(dtype=bool))
    return Outcomes(run, ids, seeds, true, np.vstack(correct))


def compare_runs(outcomes: list[Outcomes]) -> pd.DataFrame:
    """One row per pair of runs scored on identical test images: A (the more accurate on average) minus B."""
    rows = []
    ranked = sorted(outcomes, key=lambda o: (-o.correct.mean(), o.run))
    for a, b in itertools.combinations(ranked, 2):
        if a.ids != b.ids:
            continue
        rows.append(pair_row(a.run, b.run, a.correct, b.correct))
    return pd.DataFrame(rows, columns=COLUMNS)


def pair_row(a: str, b: str, a_correct: np.ndarray, b_correct: np.ndarray) -> dict:
    """The comparison of two (seeds, images) outcome arrays on the same images, as a row of COLUMNS.

    McNemar needs one 0/1 outcome per image and model, so it takes each run's lowest seed; the
    bootstrap interval pools all seeds.
    """
    diff = paired_bootstrap(a_correct, b_correct)
    test = mcnemar_exact(a_correct[0], b_correct[0])
    return {"a": a, "b": b, "diff": diff.estimate, "low": diff.low, "high": diff.high, "pvalue": test.pvalue,
            "only_a": test.only_a, "only_b": test.only_b, "images": diff.n, "seeds_a": len(a_correct),
            "seeds_b": len(b_correct), "beyond_noise": diff.excludes(0.0)}


def dataset_comparisons(predictions: pd.DataFrame, runs: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """The comparisons among `runs`, and the evaluated runs that share their test images with no other."""
    outcomes = [o for o in (run_outcomes(predictions, r) for r in runs) if o is not None]
    table = compare_runs(outcomes)
    compared = set(table["a"]) | set(table["b"])
    alone = [o.run for o in outcomes if o.run not in compared] if len(outcomes) > 1 else []
    return table, alone


# ------------------------------------------------------------------ words


def pair_sentence(row: pd.Series) -> str:
    """`A` beats `B` (...), or `A` and `B` are within noise (...)."""
    words = difference_text(row["diff"], row["low"], row["high"])
    if row["beyond_noise"] and row["diff"] > 0:
        return f"`{row['a']}` beats `{row['b']}` ({words}; exact McNemar p = {row['pvalue']:.2g})"
    return f"`{row['a']}` and `{row['b']}` are within noise ({words})"


def ranking_summary(groups: pd.DataFrame, comparisons: pd.DataFrame, alone: list[str]) -> str:
    """The sentence that replaces "best run": it names the most accurate run only when it beats every other."""
    evaluated = groups.dropna(subset=["test_top1"]).sort_values(["test_top1", "run"], ascending=[False, True])
    if not len(evaluated):
        return "No run is evaluated on the test split yet; the table shows their validation accuracy."
    top = evaluated.iloc[0]
    text = []
    against = comparisons[(comparisons["a"] == top["run"]) | (comparisons["b"] == top["run"])]
    noise = against[~against["beyond_noise"]]
    if len(noise):
        text.append("**Test top-1:** no run is distinguishably the most accurate: "
                    + "; ".join(pair_sentence(r) for _, r in noise.iterrows()) + ".")
    elif len(against):
        closest = against.sort_values(["diff", "b"]).iloc[0]
        text.append(f"**Most accurate:** `{top['run']}` ({fmt_top1(top, prose=True)}) beats every other run on the same test "
                    f"images; the closest, `{closest['b']}`, by {points(closest['diff'])} points (95 % interval "
                    f"{points(closest['low'])} … {points(closest['high'])}).")
    else:
        text.append(f"**Test top-1:** `{top['run']}` ({fmt_top1(top, prose=True)}) is not compared with another run.")
    if alone:
        text.append(f"Not compared, evaluated on test images no other run shares: {', '.join(f'`{r}`' for r in alone)}.")
    missing = len(groups) - len(evaluated)
    if missing:
        text.append(f"({missing} run{'s are' if missing > 1 else ' is'} not evaluated yet and left out.)")
    return " ".join(text)


def comparisons_table(comparisons: pd.DataFrame) -> str:
    """The markdown table of every pair, A the run more accurate on average, and the line that says how."""
    lines = ["| A | B | A − B (points) | 95 % interval | exact McNemar p (lowest seeds) | verdict |",
             "|---|---|---|---|---|---|"]
    for _, r in comparisons.iterrows():
        verdict = "A beats B" if r["beyond_noise"] and r["diff"] > 0 else "within noise"
        lines.append(f"| `{r['a']}` | `{r['b']}` | {points(r['diff'])} | {points(r['low'])} … {points(r['high'])} | "
                     f"{r['pvalue']:.2g} | {verdict} |")
    images = int(comparisons["images"].max()) if len(comparisons) else 0
    lines += ["", f"A − B and its interval: a paired bootstrap over the {images:,} test images ({BOOTSTRAP_RESAMPLES:,} "
              "resamples, percentile interval; a run's seeds pooled by averaging each image's correctness). "
              "McNemar: the exact test on each image's correctness, lowest seed of each run. A beats B only "
              "when the interval excludes zero."]
    return "\n".join(lines)


# ------------------------------------------------------------------ figure


def plot_differences(rows: pd.DataFrame, title: str, xlabel: str) -> Figure | None:
    """One horizontal bar per row (columns label, diff, low, high, beyond_noise): the difference with its
    interval, in points, against a zero line; grey when within noise."""
    if not len(rows):
        return None
    n = len(rows)
    with style():
        fig = new_figure(8.5, max(3.0, 0.38 * n + 1.4))
        ax = fig.subplots()
        y = np.arange(n)[::-1]
        for yi, (_, r) in zip(y, rows.iterrows()):
            colour = BASE if r["beyond_noise"] else NOISE
            ax.errorbar(100 * r["diff"], yi, xerr=[[100 * (r["diff"] - r["low"])], [100 * (r["high"] - r["diff"])]],
                        fmt="o", color=colour, capsize=3, markersize=5)
        ax.axvline(0, color="0.2", lw=1)
        ax.set_yticks(y, [clip(label, 60) for label in rows["label"]], fontsize=8)
        ax.grid(axis="y", visible=False)
        ax.set(xlabel=xlabel, title=title)
        fig.tight_layout()
    return fig


def plot_comparisons(comparisons: pd.DataFrame, dataset: str) -> Figure | None:
    """A dataset's pairs: the test top-1 difference of A over B with its 95 % interval."""
    rows = comparisons.assign(label=[f"{short_run_name(a, dataset)} − {short_run_name(b, dataset)}"
                                     for a, b in zip(comparisons["a"], comparisons["b"])])
    return plot_differences(rows, f"{dataset}: paired differences in test top-1 (95 % interval; grey: within noise)",
                            "A − B, test top-1 (percentage points)")
