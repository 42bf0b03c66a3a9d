"""The per-dataset figures of a suite report: validation curves, accuracy vs training time and vs
inference latency, family curves, per-class accuracy, confused pairs and the confusion matrix.

Each `plot_*` returns a Figure, or None when its data is absent, and never writes a file.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from cnnbench.core.plotting import BASE, HIGHLIGHT, clip, new_figure, style
from cnnbench.report.tables import accuracy_metric, short_run_name

TOP_PAIRS = 15
# (name in the title, darkest, lightest): one family's runs are shades of one hue.
FAMILY_SHADES = (("blues", "#08519c", "#6baed6"), ("oranges", "#d94801", "#fdae6b"),
                 ("greens", "#006d2c", "#74c476"), ("purples", "#54278f", "#9e9ac8"),
                 ("greys", "#252525", "#969696"))


def _legend_outside(ax, **kwargs) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False,
                  fontsize="small", **kwargs)


def plot_val_acc(curves: pd.DataFrame, runs: Iterable[str], dataset: str) -> Figure | None:
    """Validation accuracy per epoch, one line per run."""
    runs = list(runs)
    data = curves[(curves["series"] == "val/acc") & curves["run"].isin(runs)].copy()
    if not len(data):
        return None
    data["accuracy"] = 100 * data["value"]
    data["run "] = [short_run_name(r, dataset) for r in data["run"]]
    with style():
        fig = new_figure(9, 5)
        ax = fig.subplots()
        # Markers help to read a few epochs and only clutter many.
        sns.lineplot(data=data, x="epoch", y="accuracy", hue="run ", marker="o" if data["epoch"].max() <= 30 else None,
                     markersize=4, ax=ax)
        ax.set(xlabel="epoch", ylabel="validation accuracy (%)",
               title=f"{dataset}: validation accuracy per epoch")
        _integer_xaxis(ax)
        fig.tight_layout()
        _legend_outside(ax, title="run")  # after the layout: the canvas grows to fit it, the axes keep their size
    return fig


def _integer_xaxis(ax) -> None:
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def plot_acc_vs_time(groups: pd.DataFrame, dataset: str) -> Figure | None:
    """Accuracy against seconds per epoch, one labelled point per run (replicates: mean ± std)."""
    return _plot_acc_against(groups, dataset, "sec_per_epoch", "training time per epoch (s, median over epochs)",
                             "training time per epoch")


def plot_acc_vs_latency(groups: pd.DataFrame, dataset: str) -> Figure | None:
    """Accuracy against batch-1 CPU latency with one thread: the deployment view of a resource-limited device."""
    return _plot_acc_against(groups, dataset, "latency_cpu_b1_1t_ms",
                             "batch-1 inference latency on the CPU, 1 thread (ms, median)", "batch-1 CPU latency")


def _plot_acc_against(groups: pd.DataFrame, dataset: str, x: str, xlabel: str, what_x: str) -> Figure | None:
    """Accuracy against the cost column `x`, one labelled point per run (replicates: mean ± std)."""
    metric, what = accuracy_metric(groups)
    data = groups.dropna(subset=[metric, x])
    if not len(data):
        return None
    with style():
        fig = new_figure(9, 5.5)
        ax = fig.subplots()
        palette = dict(zip(sorted(data["model"].unique()), sns.color_palette("tab10", data["model"].nunique())))
        markers = dict(zip(sorted(data["pretrained"].unique()), "oD^sPX*"))
        for _, g in data.iterrows():
            ax.errorbar(g[x], 100 * g[metric],
                        xerr=None if math.isnan(g[f"{x}_std"]) else g[f"{x}_std"],
                        yerr=None if math.isnan(g[f"{metric}_std"]) else 100 * g[f"{metric}_std"],
                        fmt=markers[g["pretrained"]], color=palette[g["model"]], markersize=8, capsize=3,
                        markeredgecolor="white", zorder=3)
        costs = data[x]
        if costs.max() / max(costs.min(), 1e-9) > 8:
            ax.set_xscale("log")
        ax.margins(x=0.12, y=0.15)
        ax.set(xlabel=xlabel, ylabel=f"{what} (%)", title=f"{dataset}: {what} vs {what_x}")
        fig.tight_layout()
        labels = [short_run_name(g["run"], dataset) + (f" (n={g['n']})" if g["n"] > 1 else "")
                  for _, g in data.iterrows()]
        spans = [(g[f"{x}_std"], 100 * g[f"{metric}_std"]) for _, g in data.iterrows()]
        # No layout pass after this: it would move the points away from their measured labels.
        _place_labels(fig, ax, list(data[x]), list(100 * data[metric]), labels, spans)
        handles = [Line2D([], [], color=c, marker="o", linestyle="", label=m) for m, c in palette.items()]
        if len(markers) > 1:
            handles += [Line2D([], [], color="0.4", marker=mk, linestyle="", label=f"pretrained: {p}")
                        for p, mk in markers.items()]
        ax.legend(handles=handles, title="model", loc="upper left", bbox_to_anchor=(1.01, 1.0),
                  frameon=False, fontsize="small")
    return fig


def _place_labels(fig: Figure, ax, xs: list[float], ys: list[float], labels: list[str],
                  spans: list[tuple[float, float]]) -> None:
    """Label points so that labels avoid each other, the points and their error bars: nearest free offset first."""
    renderer = fig.canvas.get_renderer()
    fig.draw_without_rendering()  # fixes the axes limits and transforms
    points = ax.transData.transform(np.column_stack([xs, ys]))
    mid_x = np.mean(ax.get_window_extent(renderer).intervalx)
    scale = fig.dpi / 72  # offsets are in points, extents in pixels
    taken = [(px - 6 * scale, py - 6 * scale, px + 6 * scale, py + 6 * scale) for px, py in points]
    for x, y, (dx, dy) in zip(xs, ys, spans):
        if not math.isnan(dx):
            (x0, y0), (x1, _) = ax.transData.transform([(x - dx, y), (x + dx, y)])
            taken.append((x0 - 4, y0 - 4, x1 + 4, y0 + 4))
        if not math.isnan(dy):
            (x0, y0), (_, y1) = ax.transData.transform([(x, y - dy), (x, y + dy)])
            taken.append((x0 - 4, y0 - 4, x0 + 4, y1 + 4))
    for i in np.argsort(-points[:, 1]):
        probe = ax.text(0, 0, labels[i], fontsize=8, transform=None)
        box = probe.get_window_extent(renderer)
        probe.remove()
        w, h = box.width + 4, box.height + 2
        side = -1 if points[i, 0] > mid_x else 1
        candidates = [(s * dx, dy) for s in (side, -side) for dy in _spiral(14) for dx in (8, 20)]
        for dx, dy in candidates:
            x0 = points[i, 0] + dx * scale - (w if dx < 0 else 0)
            y0 = points[i, 1] + dy * scale - h / 2
            rect = (x0, y0, x0 + w, y0 + h)
            if not any(_overlaps(rect, t) for t in taken):
                break
        taken.append(rect)
        ax.annotate(labels[i], (xs[i], ys[i]), xytext=(dx, dy), textcoords="offset points", fontsize=8,
                    ha="left" if dx > 0 else "right", va="center", annotation_clip=False,
                    arrowprops=dict(arrowstyle="-", color="0.55", lw=0.6, shrinkA=0, shrinkB=4))


def _spiral(steps: int) -> list[float]:
    out = [0.0]
    for k in range(1, steps):
        out += [12.0 * k, -12.0 * k]
    return out


def _overlaps(a: tuple, b: tuple) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def families_in(runs: pd.DataFrame, family_names: Mapping[str, str]) -> list[str]:
    """The model families among `runs`: family_names' order first, then undeclared ones alphabetically."""
    present = {f for f in runs["family"] if f}
    declared = [f for f in family_names if f in present]
    return declared + sorted(present - set(declared))


def family_title(families: list[str], family_names: Mapping[str, str]) -> str:
    """The families' display names joined by "vs" ("ResNet vs MobileNetV2"); a family without one shows its key."""
    return " vs ".join(family_names.get(f, f) for f in families)


def plot_family_curves(curves: pd.DataFrame, runs: pd.DataFrame, dataset: str,
                       family_names: Mapping[str, str]) -> Figure | None:
    """One dataset's runs of two or more model families: train and validation accuracy and loss per epoch."""
    families = families_in(runs, family_names)
    if len(families) < 2:
        return None
    members = {f: sorted(runs.index[runs["family"] == f]) for f in families}
    ordered = [run for f in families for run in members[f]]
    data = curves[curves["run"].isin(ordered)]
    if not len(data):
        return None
    colours, hues = _family_colours(members)
    with style():
        fig = new_figure(12, 7.5)
        axes = fig.subplots(2, 2, sharex=True)
        panels = [("train/acc", "train accuracy (%)", 100), ("val/acc", "validation accuracy (%)", 100),
                  ("train/loss", "train loss (cross-entropy)", 1), ("val/loss", "validation loss (cross-entropy)", 1)]
        for ax, (series, label, factor) in zip(axes.flat, panels):
            for run in ordered:
                line = data[(data["run"] == run) & (data["series"] == series)].sort_values("epoch")
                if len(line):
                    ax.plot(line["epoch"], factor * line["value"], color=colours[run], lw=1.5,
                            marker="o" if len(line) <= 30 else None, markersize=3,
                            label=f"{short_run_name(run, dataset)} ({runs.at[run, 'model']})")
            ax.set(ylabel=label, title=label.split(" (")[0])
            if series.endswith("loss"):
                ax.set_yscale("log")  # an early BatchNorm blow-up (loss 1e4) must not flatten the rest
                ax.set_ylabel(label + ", log scale")
            _integer_xaxis(ax)
        for ax in axes[1]:
            ax.set_xlabel("epoch")
        handles = {}
        for ax in axes.flat:
            for h, lab in zip(*ax.get_legend_handles_labels()):
                handles.setdefault(lab, h)
        named = [f"{family_names.get(f, f)} ({hues[f]})" for f in families]
        fig.suptitle(f"{dataset}: {' vs '.join(named)}, per epoch")
        fig.tight_layout()
        fig.legend(list(handles.values()), list(handles), loc="upper left", bbox_to_anchor=(1.0, 0.93),
                   frameon=False, fontsize="small", title="run (model)")
    return fig


def _family_colours(members: dict[str, list[str]]) -> tuple[dict, dict[str, str]]:
    """Each run's colour, a shade of its family's hue, and each family's hue by name ("blues")."""
    colours, hues = {}, {}
    for (family, runs), (hue, dark, light) in zip(members.items(), itertools.cycle(FAMILY_SHADES)):
        shades = [dark] if len(runs) == 1 else sns.blend_palette([dark, light], len(runs))
        colours.update(zip(runs, shades))
        hues[family] = hue
    return colours, hues


def plot_per_class(per_class: pd.DataFrame, run: str, dataset: str, highlight: set[str],
                   highlight_label: str) -> Figure | None:
    """Per-class test accuracy (recall) of one run, sorted, worst at the top; highlighted classes in red."""
    rows = per_class[per_class["run"] == run].sort_values(["recall", "class"], ascending=[False, True])
    if not len(rows):
        return None
    n = len(rows)
    colours = [HIGHLIGHT if c in highlight else BASE for c in rows["class"]]
    with style():
        fig = new_figure(8.5, max(4.0, 0.17 * n + 1.6))
        ax = fig.subplots()
        positions = np.arange(n)
        ax.barh(positions, 100 * rows["recall"].to_numpy(), color=colours, height=0.75)
        ax.set_yticks(positions, [clip(c, 32) for c in rows["class"]], fontsize=7 if n > 40 else 9)
        for tick, colour in zip(ax.get_yticklabels(), colours):
            tick.set_color(colour if colour == HIGHLIGHT else "0.15")
        ax.set_ylim(-0.7, n - 0.3)
        ax.set_xlim(0, 105)
        ax.grid(axis="y", visible=False)
        ax.set(xlabel="test accuracy of the class = recall (%)",
               title=f"{dataset}: per-class test accuracy ({n} classes)\nof {run}")
        ax.xaxis.set_ticks_position("both")
        ax.tick_params(axis="x", labeltop=True)
        fig.tight_layout()
        if set(rows["class"]) & set(highlight):
            ax.legend(handles=[Patch(color=HIGHLIGHT, label=highlight_label),
                               Patch(color=BASE, label="other classes")],
                      loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    return fig


def confused_pairs(predictions: pd.DataFrame, run: str, top: int = TOP_PAIRS) -> pd.DataFrame:
    """The most frequent (true, predicted) mistakes of a run: columns true, predicted, count."""
    rows = predictions[(predictions["run"] == run) & (predictions["true"] != predictions["predicted"])]
    counts = rows.groupby(["true", "predicted"]).size().reset_index(name="count")
    counts = counts.sort_values(["count", "true", "predicted"], ascending=[False, True, True])
    return counts.head(top).reset_index(drop=True)


def plot_confused_pairs(pairs: pd.DataFrame, run: str, dataset: str, highlight: set[str],
                        highlight_label: str) -> Figure | None:
    """Horizontal bars of the most confused class pairs, worst at the top."""
    if not len(pairs):
        return None
    labels = [f"{clip(t, 26)} → {clip(p, 26)}" for t, p in zip(pairs["true"], pairs["predicted"])]
    colours = [HIGHLIGHT if (t in highlight or p in highlight) else BASE
               for t, p in zip(pairs["true"], pairs["predicted"])]
    n = len(pairs)
    with style():
        fig = new_figure(9, max(3.0, 0.34 * n + 1.4))
        ax = fig.subplots()
        positions = np.arange(n)
        bars = ax.barh(positions, pairs["count"], color=colours, height=0.7)
        ax.bar_label(bars, padding=3, fontsize=8)
        ax.set_yticks(positions, labels, fontsize=8)
        ax.invert_yaxis()
        ax.grid(axis="y", visible=False)
        ax.set_xlim(0, pairs["count"].max() * 1.15)
        _integer_xaxis(ax)
        ax.set(xlabel="test images misclassified (count)",
               title=f"{dataset}: most confused class pairs (true → predicted)\nof {run}")
        fig.tight_layout()
        if any(c == HIGHLIGHT for c in colours):
            ax.legend(handles=[Patch(color=HIGHLIGHT, label=f"true or predicted class: {highlight_label}")],
                      loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    return fig


def plot_confusion(predictions: pd.DataFrame, run: str, dataset: str, classes: list[str] | None) -> Figure | None:
    """Confusion matrix of one run: counts written in the cells, colour = share of the true class."""
    rows = predictions[predictions["run"] == run]
    if not len(rows):
        return None
    classes = classes or sorted(set(rows["true"]) | set(rows["predicted"]))
    counts = pd.crosstab(rows["true"], rows["predicted"]).reindex(index=classes, columns=classes, fill_value=0)
    share = counts.div(counts.sum(axis=1).replace(0, 1), axis=0)
    n = len(classes)
    names = [clip(c, 18) for c in classes]
    with style():
        fig = new_figure(max(5.5, 0.55 * n + 3), max(4.5, 0.5 * n + 2))
        ax = fig.subplots()
        sns.heatmap(share, annot=counts.to_numpy(), fmt="d", cmap="Blues", vmin=0, vmax=1, square=True,
                    annot_kws={"fontsize": 8 if n > 10 else 9}, xticklabels=names, yticklabels=names,
                    cbar_kws={"label": "share of the true class's test images"}, linewidths=0.5, ax=ax)
        ax.set(xlabel="predicted class", ylabel="true class",
               title=f"{dataset}: test confusion matrix of {run} (counts)")
        ax.tick_params(axis="x", rotation=45 if max(map(len, names)) > 3 else 0)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right" if max(map(len, names)) > 3 else "center")
        ax.tick_params(axis="y", rotation=0)
        fig.tight_layout()
    return fig
