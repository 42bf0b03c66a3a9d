"""Dataset pairs: the same runs on a dataset and on a copy of it with some classes dropped.

Finds the pairs, draws their test top-1 side by side and writes the README's section on them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from cnnbench.plotting import BASE, clip, new_figure, save_figure, style
from cnnbench.report.runs import RunsData
from cnnbench.report.tables import figure_markdown, fmt, short_run_name

@dataclass
class DatasetPair:
    """Two datasets whose runs differ only in the dataset; `reduced` has a strict subset of `full`'s classes."""

    full: str
    reduced: str
    dropped: list[str]            # classes of `full` missing from `reduced` (empty when unknown)
    settings: list[tuple[str, str, str]]  # (label, run on full, run on reduced)


def find_dataset_pairs(data: RunsData) -> list[DatasetPair]:
    """Dataset pairs run with identical configs, the second holding a strict subset of the first's classes."""
    runs = data.runs
    if not len(runs):
        return []
    keys = {}
    for run, row in runs.iterrows():
        cfg = json.loads(row["config"])
        keys.setdefault(json.dumps([cfg["model"], cfg["train"], row["seed"]], sort_keys=True, default=str),
                        {}).setdefault(row["dataset"], run)
    pairs: dict[tuple[str, str], DatasetPair] = {}
    for by_dataset in keys.values():
        names = sorted(by_dataset)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                oriented = _orient(data, a, by_dataset[a], b, by_dataset[b])
                if oriented is None:
                    continue
                full, reduced, dropped = oriented
                pair = pairs.setdefault((full, reduced), DatasetPair(full, reduced, dropped, []))
                run_full, run_reduced = by_dataset[full], by_dataset[reduced]
                label = short_run_name(run_full, full)
                if label == run_full:
                    label = f"{runs.at[run_full, 'model']} (pretrained: {runs.at[run_full, 'pretrained']})"
                pair.settings.append((label, run_full, run_reduced))
    return [pairs[k] for k in sorted(pairs)]


def _orient(data: RunsData, a: str, run_a: str, b: str, run_b: str):
    """(full, reduced, dropped classes) when one dataset is the other minus some classes, else None."""
    classes_a, classes_b = data.classes(run_a), data.classes(run_b)
    if classes_a is not None and classes_b is not None:
        set_a, set_b = set(classes_a), set(classes_b)
        if set_b < set_a:
            return a, b, sorted(set_a - set_b)
        if set_a < set_b:
            return b, a, sorted(set_b - set_a)
        return None
    # Classes unknown (no eval yet): fall back on the naming convention `<dataset>_<variant>`.
    if b.startswith(a):
        return a, b, []
    if a.startswith(b):
        return b, a, []
    return None


def plot_dataset_pairs(pairs: list[DatasetPair], runs: pd.DataFrame, highlight: set[str],
                       highlight_label: str) -> Figure | None:
    """Grouped bars of test top-1 per setting, full dataset vs the one with classes dropped."""
    panels = []
    for pair in pairs:
        rows = []
        for label, run_full, run_reduced in pair.settings:
            a, b = runs.at[run_full, "test_top1"], runs.at[run_reduced, "test_top1"]
            if not (math.isnan(a) or math.isnan(b)):
                rows += [(label, pair.full, 100 * a), (label, pair.reduced, 100 * b)]
        if rows:
            panels.append((pair, pd.DataFrame(rows, columns=["setting", "dataset", "accuracy"])))
    if not panels:
        return None
    with style():
        width = sum(max(3.5, 1.8 * df["setting"].nunique() + 1.5) for _, df in panels)
        fig = new_figure(width + 1, 5)
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        for ax, (pair, df) in zip(axes, panels):
            sns.barplot(data=df, x="setting", y="accuracy", hue="dataset", hue_order=[pair.full, pair.reduced],
                        palette=[BASE, "#55a868"], ax=ax)
            for container in ax.containers:
                ax.bar_label(container, fmt="%.1f", padding=2, fontsize=8)
            dropped = f"{len(pair.dropped)} classes dropped" if pair.dropped else "classes dropped"
            ax.set(xlabel="", ylabel="test top-1 accuracy (%)", ylim=(0, 108),
                   title=f"{pair.full} vs {pair.reduced}\n({dropped})")
            ax.tick_params(axis="x", labelsize=8)
            labels = [clip(t.get_text(), 24) for t in ax.get_xticklabels()]
            ax.set_xticks(ax.get_xticks(), labels, rotation=15 if len(labels) > 2 else 0)
            ax.legend(title="dataset", loc="upper center", bbox_to_anchor=(0.5, -0.12), ncols=2,
                      fontsize="small", frameon=False)
        marked = all(p.dropped and set(p.dropped) <= highlight for p, _ in panels)
        dropped = f"classes ({highlight_label})" if marked else "some classes"
        fig.suptitle(f"Effect of dropping {dropped} on test top-1 accuracy")
        fig.tight_layout()
    return fig


def pairs_section(pairs: list[DatasetPair], runs: pd.DataFrame, fig_dir: Path, highlight: set[str],
                  highlight_label: str) -> str:
    """The README's "Effect of dropping classes" section, its figure saved into fig_dir."""
    lines = ["## Effect of dropping classes", ""]
    for pair in pairs:
        dropped = (f" ({len(pair.dropped)} classes dropped: {', '.join(pair.dropped)})" if pair.dropped else "")
        lines += [f"`{pair.reduced}` is `{pair.full}` without some classes{dropped}; same runs otherwise.", "",
                  f"| setting | {pair.full} test top-1 (%) | {pair.reduced} test top-1 (%) | change (points) |",
                  "|---|---|---|---|"]
        for label, run_full, run_reduced in pair.settings:
            a, b = runs.at[run_full, "test_top1"], runs.at[run_reduced, "test_top1"]
            change = "" if math.isnan(a) or math.isnan(b) else f"{100 * (b - a):+.2f}"
            lines.append(f"| {label} | {fmt(a, kind='pct')} | {fmt(b, kind='pct')} | {change} |")
        lines.append("")
    fig = plot_dataset_pairs(pairs, runs, highlight, highlight_label)
    if fig is not None:
        name = "noisy_classes_effect.png"
        save_figure(fig, fig_dir / name)
        caption = "Test top-1 with and without the dropped classes"
        lines += figure_markdown(caption, name)
    return "\n".join(lines)
