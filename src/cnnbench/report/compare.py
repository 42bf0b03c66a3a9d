"""Paired comparisons: runs scored on the same test images, compared image by image, by one rule.

Two runs are compared only when they were evaluated on the very same test images: same dataset,
identical ids in predictions.csv, in the same order; never across test sets. Each pair's difference
comes from cnnbench.evaluation.stats (seeds and test images, both) and is computed once per report, in
`Comparisons`, whence the tables, sentences, figures, dataset pairs and claims all read it. Over a
dataset's table of pairs the verdicts are Holm-corrected (many pairs, one family); "A beats B" only
when A's Holm-adjusted p-value is under 5 %, "undecided" when a run has too few seeds.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from cnnbench.core.errors import CnnbenchError
from cnnbench.core.plotting import BASE, clip, new_figure, style
from cnnbench.evaluation.stats import (
    GREATER,
    LESS,
    MAX_SEEDS_PLANNED,
    MIN_SEEDS,
    UNDECIDED,
    Difference,
    SeedNoise,
    accuracy_interval,
    decide,
    holm,
    pooled_noise,
    recipe_difference,
    seeds_needed,
)
from cnnbench.report.tables import difference_text, fmt_top1, points, short_run_name

# Where the verdict rule is explained, as the report and the CLI cite it.
VERDICT_RULE_DOC = 'docs/reading-a-comparison.md, "How a verdict is reached"'

COLUMNS = ["a", "b", "diff", "low", "high", "pvalue", "p_holm", "verdict", "undecided", "detectable", "seeds_needed",
           "images", "seeds_a", "seeds_b", "beyond_noise"]
NOISE = "#9a9a9a"  # grey: a difference within noise, or undecided


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


class Comparisons:
    """Every accuracy comparison of one report, each computed once and read by whatever shows it."""

    def __init__(self, predictions: pd.DataFrame):
        self.predictions = predictions
        self._outcomes: dict[str, Outcomes | None] = {}
        self._noise: dict[tuple[str, ...], SeedNoise | None] = {}
        self._differences: dict[tuple, Difference] = {}
        self.computed = 0  # differences computed: each pair once, however many sections show it

    def outcomes(self, run: str) -> Outcomes | None:
        if run not in self._outcomes:
            self._outcomes[run] = run_outcomes(self.predictions, run)
        return self._outcomes[run]

    def noise(self, ids: tuple[str, ...]) -> SeedNoise | None:
        """The seed spread pooled over every run with several seeds on these test images."""
        if ids not in self._noise:
            runs = [o for o in (self.outcomes(r) for r in sorted(set(self.predictions["run"]))) if o and o.ids == ids]
            self._noise[ids] = pooled_noise([(o.run, o.correct) for o in runs])
        return self._noise[ids]

    def difference(self, a: str, b: str, a_correct: np.ndarray | None = None, b_correct: np.ndarray | None = None,
                   scope: str = "test", ids: tuple[str, ...] | None = None) -> Difference | None:
        """Recipe a minus recipe b; on their common test split unless the outcomes and a scope are given
        (the shared classes' images of a dataset pair). None when they share no test images."""
        key = (a, b, scope)
        if (b, a, scope) in self._differences:
            return self._differences[(b, a, scope)].flipped()
        if key not in self._differences:
            if a_correct is None:
                oa, ob = self.outcomes(a), self.outcomes(b)
                if oa is None or ob is None or oa.ids != ob.ids:
                    return None
                a_correct, b_correct, ids = oa.correct, ob.correct, oa.ids
            self._differences[key] = recipe_difference(a_correct, b_correct, self.noise(ids) if ids else None)
            self.computed += 1
        return self._differences[key]


def compare_runs(book: Comparisons, runs: list[str]) -> pd.DataFrame:
    """One row per pair of `runs` scored on identical test images, A the more accurate on average; the
    verdicts Holm-corrected over the table's decided pairs."""
    outcomes = [o for o in (book.outcomes(r) for r in runs) if o is not None]
    ranked = sorted(outcomes, key=lambda o: (-o.correct.mean(), o.run))
    pairs = [(a.run, b.run) for a, b in itertools.combinations(ranked, 2) if a.ids == b.ids]
    diffs = [book.difference(a, b) for a, b in pairs]
    adjusted = holm([d.pvalue for d in diffs])
    rows = [pair_row(a, b, d, p) for (a, b), d, p in zip(pairs, diffs, adjusted)]
    return pd.DataFrame(rows, columns=COLUMNS)


def pair_row(a: str, b: str, diff: Difference, p_holm: float | None = None) -> dict:
    """A comparison as a row of COLUMNS; `p_holm` is the pair's p-value corrected over its family, if any."""
    verdict = decide(diff, pvalue=p_holm)
    needed = None  # unknown: no seed spread measured on these images; -1: more than MAX_SEEDS_PLANNED
    if verdict not in (GREATER, LESS) and not math.isnan(diff.seed_var_a + diff.seed_var_b) and diff.estimate:
        needed = seeds_needed(diff, diff.estimate) or -1
    return {"a": a, "b": b, "diff": diff.estimate, "low": diff.low, "high": diff.high, "pvalue": diff.pvalue,
            "p_holm": diff.pvalue if p_holm is None else p_holm, "verdict": verdict, "undecided": diff.undecided,
            "detectable": diff.detectable(), "seeds_needed": needed, "images": diff.images, "seeds_a": diff.seeds_a,
            "seeds_b": diff.seeds_b, "beyond_noise": verdict in (GREATER, LESS)}


def recipe_intervals(groups: pd.DataFrame, book: Comparisons) -> pd.DataFrame:
    """groups with test top-1's interval over seeds and test images for every run with several evaluated seeds."""
    groups = groups.copy()
    for run in groups.index:
        outcomes = book.outcomes(run)
        if outcomes is not None and len(outcomes.correct) > 1:
            interval = accuracy_interval(outcomes.correct)
            groups.loc[run, ["top1_low", "top1_high", "top1_n"]] = [interval.low, interval.high, interval.n]
    return groups


def dataset_comparisons(book: Comparisons, runs: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """The comparisons among `runs`, and the evaluated runs that share their test images with no other."""
    table = compare_runs(book, runs)
    evaluated = [r for r in runs if book.outcomes(r) is not None]
    compared = set(table["a"]) | set(table["b"])
    alone = [r for r in evaluated if r not in compared] if len(evaluated) > 1 else []
    return table, alone


def seeds_text(row) -> str:
    """What would decide an undecided or within-noise pair: `about 7 seeds a side would detect it`."""
    needed = row["seeds_needed"]
    if not _known(needed):
        return ""
    if needed < 0:
        return f"more than {MAX_SEEDS_PLANNED} seeds a side, or more test images, would be needed to detect it"
    return f"about {int(needed)} seeds a side would detect a difference this size"


# ------------------------------------------------------------------ words


def difference_words(row) -> str:
    """`difference +0.3 points, 95 % interval −0.4 … +1.0`, or `difference +0.3 points, no interval`."""
    if math.isnan(row["low"]):
        return f"difference {points(row['diff'])} points, no interval"
    return difference_text(row["diff"], row["low"], row["high"])


def verdict_words(row) -> str:
    """The table's verdict cell: `A beats B`, `within noise`, or `undecided: needs seeds (about 7 a side)`."""
    if row["verdict"] == GREATER:
        return "A beats B"
    if row["verdict"] == LESS:
        return "B beats A"
    if row["verdict"] == UNDECIDED:
        reason = row["undecided"].split(":")[0]
        needed = row["seeds_needed"]
        if not _known(needed):
            return f"undecided: {reason}"
        return f"undecided: {reason} " + (f"(about {int(needed)} a side)" if needed > 0 else
                                          f"(over {MAX_SEEDS_PLANNED} a side)")
    return "within noise"


def pair_sentence(row: pd.Series) -> str:
    """`A` beats `B` (...), `A` and `B` are within noise (...), or undecided (...): one verdict, its statistic."""
    words = difference_words(row)
    p = f"Holm-adjusted p = {row['p_holm']:.2g}" if _known(row["p_holm"]) else ""
    if row["verdict"] == GREATER:
        return f"`{row['a']}` beats `{row['b']}` ({words}; {p})"
    if row["verdict"] == UNDECIDED:
        more = seeds_text(row)
        return (f"`{row['a']}` and `{row['b']}` are undecided, {row['undecided']} ({words}"
                + (f"; {more}" if more else "") + ")")
    more = seeds_text(row)
    return f"`{row['a']}` and `{row['b']}` are within noise ({words}; {p}" + (f"; {more}" if more else "") + ")"


def _known(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def ranking_summary(groups: pd.DataFrame, comparisons: pd.DataFrame, alone: list[str]) -> str:
    """The sentence that replaces "best run": it names the most accurate run only when it beats every other."""
    evaluated = groups.dropna(subset=["test_top1"]).sort_values(["test_top1", "run"], ascending=[False, True])
    if not len(evaluated):
        return "No run is evaluated on the test split yet; the table shows their validation accuracy."
    top = evaluated.iloc[0]
    text = []
    against = comparisons[(comparisons["a"] == top["run"]) | (comparisons["b"] == top["run"])]
    open_pairs = against[against["verdict"] != GREATER]
    if len(open_pairs):
        text.append("**Test top-1:** no run is distinguishably the most accurate: "
                    + "; ".join(pair_sentence(r) for _, r in open_pairs.iterrows()) + ".")
    elif len(against):
        closest = against.sort_values(["diff", "b"]).iloc[0]
        text.append(f"**Most accurate:** `{top['run']}` ({fmt_top1(top, prose=True)}) beats every other run on the "
                    f"same test images; the closest, `{closest['b']}`, by {points(closest['diff'])} points (95 % "
                    f"interval {points(closest['low'])} … {points(closest['high'])}; Holm-adjusted p = "
                    f"{closest['p_holm']:.2g}).")
    else:
        text.append(f"**Test top-1:** `{top['run']}` ({fmt_top1(top, prose=True)}) is not compared with another run.")
    if alone:
        runs = ", ".join(f"`{r}`" for r in alone)
        text.append(f"Not compared, evaluated on test images no other run shares: {runs}.")
    missing = len(groups) - len(evaluated)
    if missing:
        text.append(f"({missing} run{'s are' if missing > 1 else ' is'} not evaluated yet and left out.)")
    return " ".join(text)


def comparisons_table(comparisons: pd.DataFrame) -> str:
    """The markdown table of every pair, A the run more accurate on average, and the lines that say how."""
    lines = ["| A | B | seeds | A − B (points) | 95 % interval | p, Holm-adjusted | verdict |",
             "|---|---|---|---|---|---|---|"]
    for _, r in comparisons.iterrows():
        interval = "" if math.isnan(r["low"]) else f"{points(r['low'])} … {points(r['high'])}"
        p = f"{r['p_holm']:.2g}" if _known(r["p_holm"]) else ""
        lines.append(f"| `{r['a']}` | `{r['b']}` | {r['seeds_a']} vs {r['seeds_b']} | {points(r['diff'])} | "
                     f"{interval} | {p} | {verdict_words(r)} |")
    images = int(comparisons["images"].max()) if len(comparisons) else 0
    decided = int((comparisons["verdict"] != UNDECIDED).sum()) if len(comparisons) else 0
    lines += ["", f"What is compared: the two *recipes*, over training seeds and over the {images:,} test images. "
              "A − B's interval and p-value come from a crossed random-effects model (seeds × images): each run's "
              "seed spread over its seeds, plus the test-image sampling of the difference, with Satterthwaite's "
              f"degrees of freedom ({VERDICT_RULE_DOC}). A verdict needs {MIN_SEEDS} seeds a side; "
              "fewer leave the seed spread unmeasured, and the pair is *undecided*, with about how many seeds a side "
              "would detect a difference of the size seen (from the seed spread of this dataset's runs with several "
              f"seeds). The {decided} decided pair{'s are' if decided != 1 else ' is'} one family: A beats B only when "
              "its Holm-adjusted p-value is under 0.05."]
    return "\n".join(lines)


# ------------------------------------------------------------------ figure


def plot_differences(rows: pd.DataFrame, title: str, xlabel: str) -> Figure | None:
    """One horizontal bar per row (columns label, diff, low, high, beyond_noise): the difference with its
    interval, in points, against a zero line; grey when within noise, a hollow dot when undecided."""
    if not len(rows):
        return None
    n = len(rows)
    with style():
        fig = new_figure(8.5, max(3.0, 0.38 * n + 1.4))
        ax = fig.subplots()
        y = np.arange(n)[::-1]
        for yi, (_, r) in zip(y, rows.iterrows()):
            colour = BASE if r["beyond_noise"] else NOISE
            if math.isnan(r["low"]):  # undecided: the estimate alone, hollow
                ax.plot(100 * r["diff"], yi, "o", mfc="white", color=NOISE, markersize=5)
                continue
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
    return plot_differences(rows, f"{dataset}: recipe differences in test top-1 (95 % interval; grey: within noise; "
                                  "hollow: undecided)", "A − B, test top-1 (percentage points)")
