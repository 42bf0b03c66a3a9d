"""report: one suite's runs as tables and figures, rendered into a README.md beside its figures.

Reads only what the train and evaluate stages wrote under `reports/runs/<suite>/<run>/`
(DVCLive's params.yaml, metrics.json and TSV curves; eval's metrics.json, per_class.csv and
predictions.csv). Any subset of runs, and any missing optional file, still renders: what is
absent is left blank or its figure is not drawn.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
import seaborn as sns
import yaml
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from cnnbench.config import ReportConfig
from cnnbench.errors import CnnbenchError
from cnnbench.files import read_json_object, staging_dir, write_json_atomic, write_text_atomic
from cnnbench.plotting import BASE, HIGHLIGHT, clip, new_figure, save_figure, style

MANY_CLASSES = 20        # above this, per-class bars and confused pairs replace the confusion matrix
TOP_PAIRS = 15

# Numeric run metrics: flat keys of train/metrics.json (DVCLive summary) and of eval/metrics.json.
TRAIN_KEYS = ("best_val_acc", "final_val_acc", "sec_per_epoch", "images_per_sec", "peak_mem_mb",
              "params", "flops_per_image", "epochs")
EVAL_KEYS = ("test_top1", "test_top5", "test_macro_f1", "test_loss", "test_top1_tta", "num_test", "num_classes")
AGG_KEYS = TRAIN_KEYS + EVAL_KEYS
CURVES = ("train/acc", "train/loss", "val/acc", "val/loss", "lr", "epoch_seconds")
MEM_KIND = {"cuda_max_allocated": "GPU allocated", "cpu_peak_rss": "CPU RSS"}


# ------------------------------------------------------------------ loading


@dataclass
class RunsData:
    """A suite's runs as tables: one row per run, plus long-format curves, per-class rows and predictions."""

    runs: pd.DataFrame         # index run; dataset, model, pretrained, seed, config, TRAIN_KEYS, EVAL_KEYS, ...
    curves: pd.DataFrame       # run, series (e.g. "val/acc"), epoch (1-based), value
    per_class: pd.DataFrame    # run, class, precision, recall, f1, support
    predictions: pd.DataFrame  # run, index, id, true, predicted, confidence

    @property
    def datasets(self) -> list[str]:
        return sorted(self.runs["dataset"].unique()) if len(self.runs) else []

    def of_dataset(self, dataset: str) -> pd.DataFrame:
        return self.runs[self.runs["dataset"] == dataset]

    def classes(self, run: str) -> list[str] | None:
        """The run's class names in evaluation order (from per_class.csv, else predictions.csv)."""
        rows = self.per_class[self.per_class["run"] == run]
        if len(rows):
            return list(rows["class"])
        preds = self.predictions[self.predictions["run"] == run]
        if len(preds):
            return sorted(set(preds["true"]) | set(preds["predicted"]))
        return None


def load_runs(runs_dir: str | Path) -> RunsData:
    """Every run under runs_dir that has written anything; a missing runs_dir means no runs."""
    rows, curves, per_class, predictions = [], [], [], []
    runs_dir = Path(runs_dir)
    run_dirs = sorted(p for p in runs_dir.iterdir() if p.is_dir()) if runs_dir.is_dir() else []
    for run_dir in run_dirs:
        row = _load_run_row(run_dir)
        if row is None:
            continue
        rows.append(row)
        curves.extend(_load_curves(run_dir))
        per_class.append(_read_csv(run_dir / "eval" / "per_class.csv", "class", run_dir.name))
        predictions.append(_read_csv(run_dir / "eval" / "predictions.csv", ("true", "predicted"), run_dir.name))
    runs = pd.DataFrame(rows, columns=_RUN_COLUMNS).set_index("run", drop=False).rename_axis(None)
    return RunsData(
        runs=runs,
        curves=pd.DataFrame(curves, columns=["run", "series", "epoch", "value"]),
        per_class=_concat(per_class, ["run", "class", "precision", "recall", "f1", "support"]),
        predictions=_concat(predictions, ["run", "index", "id", "true", "predicted", "confidence"]),
    )


_RUN_COLUMNS = ["run", "dataset", "model", "family", "pretrained", "seed", "config", "peak_mem_kind", "device",
                "has_train", "has_eval", *AGG_KEYS]


def _load_run_row(run_dir: Path) -> dict | None:
    params = _read_yaml(run_dir / "train" / "params.yaml")
    train = read_json_object(run_dir / "train" / "metrics.json")
    evaluation = read_json_object(run_dir / "eval" / "metrics.json")
    if params is None and train is None and evaluation is None:
        return None
    params, train, evaluation = params or {}, train or {}, evaluation or {}
    train_cfg = dict(params.get("train") or {})
    seed = train_cfg.pop("seed", None)
    # Replicates share everything but the seed: that is their group key.
    config = json.dumps({"dataset": params.get("dataset"), "model": params.get("model"), "train": train_cfg},
                        sort_keys=True, default=str)
    row = {
        "run": run_dir.name,
        "dataset": str(params.get("dataset") or "unknown"),
        "model": str(params.get("model") or "unknown"),
        "family": str(params.get("model_family") or ""),
        "pretrained": _pretrained_label(train_cfg.get("pretrained")),
        "seed": seed,
        "config": config,
        "peak_mem_kind": train.get("peak_mem_kind"),
        "device": train.get("device"),
        "has_train": bool(train),
        "has_eval": bool(evaluation),
    }
    for key in TRAIN_KEYS:
        row[key] = _number(train.get(key))
    for key in EVAL_KEYS:
        row[key] = _number(evaluation.get(key))
    return row


def _load_curves(run_dir: Path) -> list[tuple]:
    out = []
    for series in CURVES:
        path = run_dir / "train" / "plots" / "metrics" / f"{series}.tsv"
        if not path.is_file():
            continue
        try:
            table = pd.read_csv(path, sep="\t")
            values = table.iloc[:, -1].astype(float)
            steps = table["step"].astype(int)
        except (ValueError, KeyError, pd.errors.ParserError) as err:
            raise CnnbenchError(f"{path}: not a DVCLive metric TSV ({err}); re-run the train stage.") from None
        out.extend((run_dir.name, series, int(s) + 1, float(v)) for s, v in zip(steps, values))
    return out


def _read_yaml(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise CnnbenchError(f"{path}: unreadable YAML ({err}); re-run the train stage.") from None
    return data if isinstance(data, dict) else None


def _read_csv(path: Path, str_columns, run: str) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    # Class names may look like numbers (digits: "0".."9"); they stay strings.
    columns = [str_columns] if isinstance(str_columns, str) else list(str_columns)
    try:
        table = pd.read_csv(path, dtype={c: str for c in columns + ["id"]}, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise CnnbenchError(f"{path}: unreadable CSV ({err}); re-run the evaluate stage.") from None
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise CnnbenchError(f"{path}: missing column(s) {', '.join(missing)}; re-run the evaluate stage.")
    table.insert(0, "run", run)
    return table


def _concat(tables: list, columns: list[str]) -> pd.DataFrame:
    tables = [t for t in tables if t is not None and len(t)]
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=columns)


def _number(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


def _pretrained_label(value) -> str:
    if value in (None, "", False):
        return "no"
    return Path(str(value)).name if "/" in str(value) else str(value)


# ------------------------------------------------------------------ tables


def group_replicates(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per config (runs identical but for train.seed): means, `<key>_std` and n."""
    out = []
    for _, group in runs.groupby("config", sort=False):
        group = group.sort_values("run")
        first = group.iloc[0]
        row = {k: first[k] for k in ("run", "dataset", "model", "pretrained", "peak_mem_kind")}
        row["runs"] = list(group["run"])
        row["seeds"] = list(group["seed"])
        row["n"] = len(group)
        row["device"] = ", ".join(sorted({str(d) for d in group["device"] if isinstance(d, str)}))
        for key in AGG_KEYS:
            values = group[key].dropna()
            row[key] = values.mean() if len(values) else math.nan
            row[f"{key}_std"] = values.std(ddof=1) if len(values) > 1 else math.nan
        out.append(row)
    columns = ["run", "dataset", "model", "pretrained", "peak_mem_kind", "runs", "seeds", "n", "device",
               *[c for k in AGG_KEYS for c in (k, f"{k}_std")]]
    return pd.DataFrame(out, columns=columns)


def _fmt(value: float, std: float = math.nan, kind: str = "num") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    one = {
        "pct": lambda v: f"{100 * v:.2f}",
        "f1": lambda v: f"{v:.3f}",
        "sec": lambda v: f"{v:.3g}" if v >= 100 else f"{v:.2f}",
        "int": lambda v: f"{v:,.0f}",
        "num": lambda v: f"{v:.3g}",
    }[kind]
    text = one(value)
    if not math.isnan(std):
        text += f" ± {one(std)}"
    return text


def _fmt_flops(flops: float) -> str:
    if math.isnan(flops):
        return ""
    return f"{flops / 1e9:.2f} G" if flops >= 1e9 else f"{flops / 1e6:.1f} M"


def _fmt_mem(mb: float, std: float, kind) -> str:
    text = _fmt(mb, std, "int")
    return f"{text} {MEM_KIND.get(kind, kind or '')}".strip() if text else ""


def _run_label(group: pd.Series) -> str:
    if group["n"] == 1:
        return f"`{group['run']}`"
    seeds = ", ".join(str(s) for s in group["seeds"])
    return f"`{group['run']}` (n={group['n']}, seeds {seeds})"


def dataset_table(groups: pd.DataFrame, reference: dict) -> str:
    """The markdown table of one dataset's runs; replicates as mean ± std, the study's figures beside ours."""
    has_ref = any(any(r in reference for r in g["runs"]) for _, g in groups.iterrows())
    header = ["run", "model", "pretrained", "params (M)", "FLOPs/image", "peak memory (MB)", "s/epoch",
              "images/s", "best val acc (%)", "test top-1 (%)", "top-5 (%)", "macro-F1", "device"]
    if has_ref:
        header += ["study s/epoch", "study acc (%)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for _, g in groups.iterrows():
        top5 = _fmt(g["test_top5"], g["test_top5_std"], "pct")
        if not top5 and g["num_classes"] <= 5:
            top5 = "n/a"
        cells = [
            _run_label(g), g["model"], g["pretrained"],
            "" if math.isnan(g["params"]) else f"{g['params'] / 1e6:.2f}",
            _fmt_flops(g["flops_per_image"]),
            _fmt_mem(g["peak_mem_mb"], g["peak_mem_mb_std"], g["peak_mem_kind"]),
            _fmt(g["sec_per_epoch"], g["sec_per_epoch_std"], "sec"),
            _fmt(g["images_per_sec"], g["images_per_sec_std"], "int"),
            _fmt(g["best_val_acc"], g["best_val_acc_std"], "pct"),
            _fmt(g["test_top1"], g["test_top1_std"], "pct"),
            top5,
            _fmt(g["test_macro_f1"], g["test_macro_f1_std"], "f1"),
            g["device"],
        ]
        if has_ref:
            ref = next((reference[r] for r in g["runs"] if r in reference), {})
            cells += [_fmt(_number(ref.get("sec_per_epoch")), kind="sec"),
                      _fmt(_number(ref.get("best_val_acc")), kind="pct")]
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def dataset_summary(groups: pd.DataFrame) -> str:
    """Two sentences: the best run by test top-1 and the accuracy-vs-time trade-off."""
    metric, what = _accuracy_metric(groups)
    ranked = groups.dropna(subset=[metric])
    if not len(ranked):
        return "No run of this dataset has accuracy figures yet."
    best = ranked.loc[ranked[metric].idxmax()]
    mean_of = f", mean of {best['n']} seeds" if best["n"] > 1 else ""
    score = _fmt(best[metric], kind="pct")
    text = [f"**Best by {what.replace('best ', '')}:** `{best['run']}` ({best['model']}, {score} %{mean_of})."]
    if metric == "best_val_acc":
        text[0] = "No run is evaluated on the test split yet. " + text[0]
    elif len(ranked) < len(groups):
        missing = len(groups) - len(ranked)
        text.append(f"({missing} run{'s are' if missing > 1 else ' is'} not evaluated yet and left out.)")
    timed = ranked.dropna(subset=["sec_per_epoch"])
    if len(timed) > 1:
        fast = timed.loc[timed["sec_per_epoch"].idxmin()]
        top = timed.loc[timed[metric].idxmax()]
        if fast["run"] == top["run"]:
            text.append(f"**Accuracy vs time:** `{fast['run']}` is both the fastest "
                        f"({_fmt(fast['sec_per_epoch'], kind='sec')} s/epoch) and the most accurate.")
        else:
            ratio = top["sec_per_epoch"] / fast["sec_per_epoch"]
            gain = 100 * (top[metric] - fast[metric])
            text.append(
                f"**Accuracy vs time:** the fastest run, `{fast['run']}`, takes "
                f"{_fmt(fast['sec_per_epoch'], kind='sec')} s/epoch for {_fmt(fast[metric], kind='pct')} %; "
                f"the most accurate, `{top['run']}`, takes {_fmt(top['sec_per_epoch'], kind='sec')} s/epoch "
                f"({ratio:.1f}× as long) for {_fmt(top[metric], kind='pct')} % ({gain:+.2f} points).")
        devices = {d for d in timed["device"] if d}
        if len(devices) > 1:
            text.append(f"Timings come from different devices ({'; '.join(sorted(devices))}): compare with care.")
    return " ".join(text)


def _accuracy_metric(groups: pd.DataFrame) -> tuple[str, str]:
    """Test top-1 once any run is evaluated, else best validation accuracy: never a mix of the two."""
    if len(groups) and groups["test_top1"].notna().any():
        return "test_top1", "test top-1"
    return "best_val_acc", "best validation accuracy"


def suite_metrics(runs: pd.DataFrame) -> dict:
    """Per-run headline numbers for `dvc metrics show` (the report stage's metrics.json)."""
    keys = ("best_val_acc", "test_top1", "test_top5", "test_macro_f1", "test_top1_tta", "sec_per_epoch",
            "images_per_sec", "peak_mem_mb")
    return {run: {k: round(float(row[k]), 6) for k in keys if not math.isnan(row[k])}
            for run, row in runs.iterrows()}


# ------------------------------------------------------------------ figures


def _short(run: str, dataset: str) -> str:
    """Drop the dataset prefix from a run name inside a per-dataset chart; its title names the dataset."""
    return run[len(dataset) + 1:] if run.startswith(f"{dataset}-") and len(run) > len(dataset) + 1 else run


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
    data["run "] = [_short(r, dataset) for r in data["run"]]
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
    metric, what = _accuracy_metric(groups)
    data = groups.dropna(subset=[metric, "sec_per_epoch"])
    if not len(data):
        return None
    with style():
        fig = new_figure(9, 5.5)
        ax = fig.subplots()
        palette = dict(zip(sorted(data["model"].unique()), sns.color_palette("tab10", data["model"].nunique())))
        markers = dict(zip(sorted(data["pretrained"].unique()), "oD^sPX*"))
        for _, g in data.iterrows():
            ax.errorbar(g["sec_per_epoch"], 100 * g[metric],
                        xerr=None if math.isnan(g["sec_per_epoch_std"]) else g["sec_per_epoch_std"],
                        yerr=None if math.isnan(g[f"{metric}_std"]) else 100 * g[f"{metric}_std"],
                        fmt=markers[g["pretrained"]], color=palette[g["model"]], markersize=8, capsize=3,
                        markeredgecolor="white", zorder=3)
        times = data["sec_per_epoch"]
        if times.max() / max(times.min(), 1e-9) > 8:
            ax.set_xscale("log")
        ax.margins(x=0.12, y=0.15)
        ax.set(xlabel="training time per epoch (s, median over epochs)", ylabel=f"{what} (%)",
               title=f"{dataset}: {what} vs training time per epoch")
        fig.tight_layout()
        labels = [_short(g["run"], dataset) + (f" (n={g['n']})" if g["n"] > 1 else "") for _, g in data.iterrows()]
        spans = [(g["sec_per_epoch_std"], 100 * g[f"{metric}_std"]) for _, g in data.iterrows()]
        # No layout pass after this: it would move the points away from their measured labels.
        _place_labels(fig, ax, list(data["sec_per_epoch"]), list(100 * data[metric]), labels, spans)
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


def model_family(family: str) -> str | None:
    """'resnet' or 'mobilenet' from a spec's `family` field (e.g. mobilenet_v2), None for anything else."""
    for name in ("resnet", "mobilenet"):
        if family.startswith(name):
            return name
    return None


def plot_family_curves(curves: pd.DataFrame, runs: pd.DataFrame, dataset: str) -> Figure | None:
    """ResNet vs MobileNetV2 runs of one dataset: train and validation accuracy and loss per epoch."""
    families = {r: model_family(f) for r, f in runs["family"].items()}
    resnets = sorted(r for r, f in families.items() if f == "resnet")
    mobilenets = sorted(r for r, f in families.items() if f == "mobilenet")
    if not resnets or not mobilenets:
        return None
    data = curves[curves["run"].isin(resnets + mobilenets)]
    if not len(data):
        return None
    colours = dict(zip(resnets, _shades("#08519c", "#6baed6", len(resnets))))
    colours.update(zip(mobilenets, _shades("#d94801", "#fdae6b", len(mobilenets))))
    with style():
        fig = new_figure(12, 7.5)
        axes = fig.subplots(2, 2, sharex=True)
        panels = [("train/acc", "train accuracy (%)", 100), ("val/acc", "validation accuracy (%)", 100),
                  ("train/loss", "train loss (cross-entropy)", 1), ("val/loss", "validation loss (cross-entropy)", 1)]
        for ax, (series, label, factor) in zip(axes.flat, panels):
            for run in resnets + mobilenets:
                line = data[(data["run"] == run) & (data["series"] == series)].sort_values("epoch")
                if len(line):
                    ax.plot(line["epoch"], factor * line["value"], color=colours[run], lw=1.5,
                            marker="o" if len(line) <= 30 else None, markersize=3,
                            label=f"{_short(run, dataset)} ({runs.at[run, 'model']})")
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
        fig.suptitle(f"{dataset}: ResNet (blues) vs MobileNetV2 (oranges), per epoch")
        fig.tight_layout()
        fig.legend(list(handles.values()), list(handles), loc="upper left", bbox_to_anchor=(1.0, 0.93),
                   frameon=False, fontsize="small", title="run (model)")
    return fig


def _shades(dark: str, light: str, n: int) -> list:
    return [dark] if n == 1 else sns.blend_palette([dark, light], n)


def plot_per_class(per_class: pd.DataFrame, run: str, dataset: str, highlight: set[str]) -> Figure | None:
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
               title=f"{dataset}: per-class test accuracy ({n} classes)\nof the best run, {run}")
        ax.xaxis.set_ticks_position("both")
        ax.tick_params(axis="x", labeltop=True)
        fig.tight_layout()
        if set(rows["class"]) & set(highlight):
            ax.legend(handles=[Patch(color=HIGHLIGHT, label="highlighted (noisy in the study)"),
                               Patch(color=BASE, label="other classes")],
                      loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    return fig


def confused_pairs(predictions: pd.DataFrame, run: str, top: int = TOP_PAIRS) -> pd.DataFrame:
    """The most frequent (true, predicted) mistakes of a run: columns true, predicted, count."""
    rows = predictions[(predictions["run"] == run) & (predictions["true"] != predictions["predicted"])]
    counts = rows.groupby(["true", "predicted"]).size().reset_index(name="count")
    counts = counts.sort_values(["count", "true", "predicted"], ascending=[False, True, True])
    return counts.head(top).reset_index(drop=True)


def plot_confused_pairs(pairs: pd.DataFrame, run: str, dataset: str, highlight: set[str]) -> Figure | None:
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
               title=f"{dataset}: most confused class pairs (true → predicted)\nof the best run, {run}")
        fig.tight_layout()
        if any(c == HIGHLIGHT for c in colours):
            ax.legend(handles=[Patch(color=HIGHLIGHT, label="involves a highlighted (noisy) class")],
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
               title=f"{dataset}: test confusion matrix of {run} (best run, counts)")
        ax.tick_params(axis="x", rotation=45 if max(map(len, names)) > 3 else 0)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right" if max(map(len, names)) > 3 else "center")
        ax.tick_params(axis="y", rotation=0)
        fig.tight_layout()
    return fig


# ------------------------------------------------------------------ class-dropping pairs


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
                label = _short(run_full, full)
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


def plot_dataset_pairs(pairs: list[DatasetPair], runs: pd.DataFrame,
                       highlight: set[str] = frozenset()) -> Figure | None:
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
        noisy = all(p.dropped and set(p.dropped) <= highlight for p, _ in panels)
        fig.suptitle(f"Effect of dropping {'the noisy' if noisy else 'some'} classes on test top-1 accuracy")
        fig.tight_layout()
    return fig


# ------------------------------------------------------------------ the README


def render_report(runs_dir: str | Path, out_dir: str | Path, report_cfg: ReportConfig, suite_name: str,
                  data_reports_dir: str | Path = "reports/data") -> Path:
    """Write out_dir/README.md, out_dir/figures/*.png and out_dir/metrics.json for one suite; return the README."""
    out_dir = Path(out_dir)
    data = load_runs(runs_dir)
    highlight = set(report_cfg.highlight_classes)
    sections: list[str] = []
    with staging_dir(out_dir / "figures") as fig_dir:  # replaces figures/ whole: no stale PNG survives
        for dataset in data.datasets:
            sections.append(_dataset_section(data, dataset, fig_dir, report_cfg, highlight,
                                             Path(data_reports_dir), out_dir))
        pairs = find_dataset_pairs(data)
        if pairs:
            sections.append(_pairs_section(pairs, data.runs, fig_dir, highlight))
    write_json_atomic(out_dir / "metrics.json", suite_metrics(data.runs))
    readme = _readme(suite_name, runs_dir, sections, len(data.runs))
    return write_text_atomic(out_dir / "README.md", readme)


def _readme(suite: str, runs_dir, sections: list[str], n_runs: int) -> str:
    head = [f"# cnnbench report: suite `{suite}`", "",
            f"Generated by `dvc repro report@{suite}` from the metrics under `{Path(runs_dir).as_posix()}/`; "
            "do not edit by hand.", ""]
    if not n_runs:
        head += [f"No runs of suite `{suite}` have metrics yet. Produce them with `dvc repro report@{suite}` "
                 "(it trains and evaluates every run of the suite first), or one run at a time with "
                 "`dvc repro train@<run> evaluate@<run>`, then render this report again.", ""]
        return "\n".join(head)
    head += ["*best val acc* is on the validation split, *test* columns on the untouched test split; s/epoch is "
             "the median over epochs, the first (warm-up) epoch excluded; n>1 rows are mean ± std over seeds "
             "(runs identical but for `train.seed`). Peak memory is the GPU's peak allocation on CUDA and "
             "the process's peak RSS on CPU, so the two kinds do not compare.", ""]
    return "\n".join(head + sections).rstrip() + "\n"


def _dataset_section(data: RunsData, dataset: str, fig_dir: Path, cfg: ReportConfig, highlight: set[str],
                     data_reports_dir: Path, out_dir: Path) -> str:
    runs = data.of_dataset(dataset)
    groups = group_replicates(runs)
    lines = [f"## {dataset}", ""]
    n_classes = _num_classes(data, runs)
    facts = [f"{len(runs)} run{'s' if len(runs) != 1 else ''}"]
    if n_classes:
        facts.append(f"{n_classes} classes")
    if runs["num_test"].notna().any():
        facts.append(f"{int(runs['num_test'].max()):,} test images")
    lines += [", ".join(facts) + ".", ""]
    links = []
    for label, name in (("data-cleaning report", f"{dataset}.json"), ("sample images", f"{dataset}_samples.png")):
        if (data_reports_dir / name).is_file():
            links.append(f"[{label}]({_relative(data_reports_dir / name, out_dir)})")
    if links:
        lines += ["Data: " + " · ".join(links), ""]
    lines += [dataset_table(groups, cfg.reference), ""]
    replicated = [g for _, g in groups.iterrows() if g["n"] > 1]
    if replicated:
        lines += [" ".join(f"`{g['run']}` (n={g['n']}) averages {', '.join(f'`{r}`' for r in g['runs'])}."
                           for g in replicated), ""]
    if any(any(r in cfg.reference for r in g) for g in groups["runs"]):
        lines += ["*study s/epoch* and *study acc (%)* are the figures the original study reported for the "
                  "same configuration (best validation accuracy; its hardware differs from ours, so compare "
                  "ratios of s/epoch, not absolute values).", ""]
    lines += [dataset_summary(groups), ""]

    figures = [("val_acc", "Validation accuracy per epoch", plot_val_acc(data.curves, runs.index, dataset)),
               ("acc_vs_time", "Accuracy vs training time per epoch", plot_acc_vs_time(groups, dataset)),
               ("resnet_vs_mobilenet", "ResNet vs MobileNetV2 training curves",
                plot_family_curves(data.curves, runs, dataset))]
    best = _best_run(runs, data)
    if best is not None:
        if n_classes and n_classes > MANY_CLASSES:
            figures.append(("per_class", f"Per-class test accuracy of `{best}`",
                            plot_per_class(data.per_class, best, dataset, highlight)))
            figures.append(("confused_pairs", f"Most confused class pairs of `{best}`",
                            plot_confused_pairs(confused_pairs(data.predictions, best), best, dataset, highlight)))
        else:
            figures.append(("confusion", f"Test confusion matrix of `{best}`",
                            plot_confusion(data.predictions, best, dataset, data.classes(best))))
    for suffix, caption, fig in figures:
        if fig is None:
            continue
        name = f"{dataset}_{suffix}.png"
        save_figure(fig, fig_dir / name)
        lines += [f"**{caption}** ([figures/{name}](figures/{name}))", "", f"![{caption}](figures/{name})", ""]
    return "\n".join(lines)


def _pairs_section(pairs: list[DatasetPair], runs: pd.DataFrame, fig_dir: Path, highlight: set[str]) -> str:
    lines = ["## Effect of dropping classes", ""]
    for pair in pairs:
        dropped = (f" ({len(pair.dropped)} classes dropped: {', '.join(pair.dropped)})" if pair.dropped else "")
        lines += [f"`{pair.reduced}` is `{pair.full}` without some classes{dropped}; same runs otherwise.", "",
                  f"| setting | {pair.full} test top-1 (%) | {pair.reduced} test top-1 (%) | change (points) |",
                  "|---|---|---|---|"]
        for label, run_full, run_reduced in pair.settings:
            a, b = runs.at[run_full, "test_top1"], runs.at[run_reduced, "test_top1"]
            change = "" if math.isnan(a) or math.isnan(b) else f"{100 * (b - a):+.2f}"
            lines.append(f"| {label} | {_fmt(a, kind='pct')} | {_fmt(b, kind='pct')} | {change} |")
        lines.append("")
    fig = plot_dataset_pairs(pairs, runs, highlight)
    if fig is not None:
        name = "noisy_classes_effect.png"
        save_figure(fig, fig_dir / name)
        caption = "Test top-1 with and without the dropped classes"
        lines += [f"**{caption}** ([figures/{name}](figures/{name}))", "", f"![{caption}](figures/{name})", ""]
    return "\n".join(lines)


def _num_classes(data: RunsData, runs: pd.DataFrame) -> int | None:
    if runs["num_classes"].notna().any():
        return int(runs["num_classes"].max())
    for run in runs.index:
        classes = data.classes(run)
        if classes:
            return len(classes)
    return None


def _best_run(runs: pd.DataFrame, data: RunsData) -> str | None:
    """The single run with the highest test top-1 among those with predictions or per-class rows."""
    have = set(data.predictions["run"]) | set(data.per_class["run"])
    candidates = runs[runs.index.isin(have)].dropna(subset=["test_top1"])
    if not len(candidates):
        return None
    return candidates.sort_values(["test_top1", "run"], ascending=[False, True]).index[0]


def _relative(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path.resolve(), start.resolve())).as_posix()
