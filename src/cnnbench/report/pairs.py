"""Dataset pairs: the same runs on a dataset and on one declared as it minus some classes.

Finds the pairs, draws their test top-1 side by side and writes the README's section on them.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from cnnbench.config import DatasetConfig
from cnnbench.plotting import BASE, clip, new_figure, save_figure, style
from cnnbench.report.runs import RunsData
from cnnbench.report.tables import figure_markdown, fmt, short_run_name

# What must match for two datasets to hold the same images: all but the classes each drops.
SAME_IMAGES = ("source", "image_size", "val_fraction", "test_fraction", "split_seed")


@dataclass
class DatasetPair:
    """Two datasets declared as one source, split alike, `reduced` dropping more classes; runs alike but for it."""

    full: str
    reduced: str
    dropped: list[str]            # classes `reduced` drops on top of those `full` drops
    settings: list[tuple[str, str, str]]  # (label, run on full, run on reduced)


def find_dataset_pairs(data: RunsData, datasets: Mapping[str, DatasetConfig]) -> list[DatasetPair]:
    """Pairs of the suite's datasets that `dropped_classes` relates, each with the runs that differ only in it."""
    runs = data.runs
    keys = {}  # runs that differ only in their dataset share a key: model, train config and seed
    for run, row in runs.iterrows():
        cfg = json.loads(row["config"])
        keys.setdefault(json.dumps([cfg["model"], cfg["train"], row["seed"]], sort_keys=True, default=str),
                        {}).setdefault(row["dataset"], run)
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
                label = f"{runs.at[run_full, 'model']} (pretrained: {runs.at[run_full, 'pretrained']})"
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
            ax.set(xlabel="", ylabel="test top-1 accuracy (%)", ylim=(0, 108),
                   title=f"{pair.full} vs {pair.reduced}\n({len(pair.dropped)} classes dropped)")
            ax.tick_params(axis="x", labelsize=8)
            labels = [clip(t.get_text(), 24) for t in ax.get_xticklabels()]
            ax.set_xticks(ax.get_xticks(), labels, rotation=15 if len(labels) > 2 else 0)
            ax.legend(title="dataset", loc="upper center", bbox_to_anchor=(0.5, -0.12), ncols=2,
                      fontsize="small", frameon=False)
        marked = all(set(p.dropped) <= highlight for p, _ in panels)
        dropped = f"classes ({highlight_label})" if marked else "some classes"
        fig.suptitle(f"Effect of dropping {dropped} on test top-1 accuracy")
        fig.tight_layout()
    return fig


def pairs_section(pairs: list[DatasetPair], runs: pd.DataFrame, fig_dir: Path, highlight: set[str],
                  highlight_label: str) -> str:
    """The README's "Effect of dropping classes" section, its figure saved into fig_dir."""
    lines = ["## Effect of dropping classes", ""]
    for pair in pairs:
        dropped = f"{len(pair.dropped)} classes dropped: {', '.join(pair.dropped)}"
        lines += [f"`{pair.reduced}` is `{pair.full}` without some classes ({dropped}); same runs otherwise.", "",
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
