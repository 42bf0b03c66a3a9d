"""Tables and sentences: one dataset's runs as a markdown table, its trade-off sentence, the suite's metrics.

A run's seeds become one row: means, with test top-1's 95 % interval (Wilson's over the test images
for one seed, which covers test sampling only; over seeds and test images for several, filled in
from the predictions by compare.recipe_intervals) and standard deviations over seeds for the rest.
"""

from __future__ import annotations

import math
import re

import pandas as pd

from cnnbench.report.runs import as_number, metric_columns

# cuda_train_max_allocated: steady training epochs, without the resident dataset (train's resident_data_mb);
# cuda_max_allocated: runs trained before that, whose peak held the dataset and evaluation too.
MEM_KIND = {"cuda_train_max_allocated": "GPU training", "cuda_max_allocated": "GPU allocated",
            "cpu_peak_rss": "CPU RSS"}
MINUS = "\u2212"  # a typographic minus: "−0.4" reads as a number, "-0.4" can read as a dash


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]()#|!<>&~])")


def md_text(text: object) -> str:
    """A string from the data (a class or file name) as literal Markdown text: on one line, with every
    character that Markdown or HTML would interpret escaped, so a name can neither format nor inject."""
    one_line = " ".join(str(text).split())
    return _MARKDOWN_SPECIAL.sub(lambda m: {"<": "&lt;", ">": "&gt;", "&": "&amp;"}.get(m[1], "\\" + m[1]), one_line)


def group_replicates(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per run, indexed by run: its seeds' means, `<key>_std`, n, and test top-1's interval."""
    out = []
    metrics = metric_columns(runs)
    for _, group in runs.groupby("run", sort=True):
        group = group.sort_values("seed")
        first = group.iloc[0]
        row = {k: first[k] for k in ("run", "dataset", "model", "family", "pretrained", "peak_mem_kind")}
        row["seeds"] = [int(s) for s in group["seed"]]
        row["n"] = len(group)
        row["device"] = ", ".join(sorted({str(d) for d in group["device"] if isinstance(d, str)}))
        for key in metrics:
            values = group[key].dropna()
            row[key] = values.mean() if len(values) else math.nan
            row[f"{key}_std"] = values.std(ddof=1) if len(values) > 1 else math.nan
        row.update(_top1_interval(group))
        out.append(row)
    columns = ["run", "dataset", "model", "family", "pretrained", "peak_mem_kind", "seeds", "n", "device",
               *[c for k in metrics for c in (k, f"{k}_std")], "top1_low", "top1_high", "top1_n"]
    return pd.DataFrame(out, columns=columns, index=[r["run"] for r in out])


def _top1_interval(group: pd.DataFrame) -> dict:
    """Test top-1's 95 % interval for one seed: the one evaluate wrote (Wilson, test sampling only). Several
    seeds need each image's outcome (seeds and images both vary): compare.recipe_intervals fills them in."""
    evaluated = group.dropna(subset=["test_top1"])
    if len(evaluated) == 1:
        row = evaluated.iloc[0]
        return {"top1_low": row["test_top1_ci_low"], "top1_high": row["test_top1_ci_high"], "top1_n": 1}
    return {"top1_low": math.nan, "top1_high": math.nan, "top1_n": len(evaluated)}


def fmt(value: float, std: float = math.nan, kind: str = "num") -> str:
    """A number as its table cell (pct, f1, sec, int or num), with ` ± std` when std is known; NaN is blank."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    one = {
        "pct": lambda v: f"{100 * v:.2f}",
        "f1": lambda v: f"{v:.3f}",
        "sec": lambda v: f"{v:,.0f}" if v >= 100 else f"{v:.2f}",
        "int": lambda v: f"{v:,.0f}",
        "num": _three_digits,
    }[kind]
    text = one(value)
    if not math.isnan(std):
        text += f" ± {one(std)}"
    return text


def _three_digits(v: float) -> str:
    """Three significant digits, never in scientific notation (1,320, not 1.32e+03; 0.0000123 in full)."""
    if v == 0 or not math.isfinite(v):
        return f"{v:g}"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.{2 - math.floor(math.log10(abs(v)))}f}"


def fmt_top1(group: pd.Series, prose: bool = False) -> str:
    """Test top-1 in percent with its 95 % interval: `97.0 (95.1 … 98.2)` in a table, `97.0 %, 95 % interval
    95.1 … 98.2` in a sentence. The interval is written out, not as ±: Wilson's is asymmetric, and near
    100 % the t interval is cut at 100."""
    if math.isnan(group["test_top1"]):
        return ""
    if math.isnan(group["top1_low"]) or math.isnan(group["top1_high"]):
        return f"{100 * group['test_top1']:.1f}" + (" %" if prose else "")
    cell = accuracy_cell(group["test_top1"], group["top1_low"], group["top1_high"], prose)
    if group["top1_n"] == 1:
        cell += " (one seed: test sampling only)" if prose else " †"
    return cell


def accuracy_cell(estimate: float, low: float, high: float, prose: bool = False) -> str:
    """An accuracy and its interval in percent: `97.0 (95.1 … 98.2)`, or `97.0 %, 95 % interval 95.1 … 98.2`."""
    mean, low, high = (f"{100 * v:.1f}" for v in (estimate, low, high))
    return f"{mean} %, 95 % interval {low} … {high}" if prose else f"{mean} ({low} … {high})"


def interval_note(groups: pd.DataFrame) -> str:
    """The line under a table that says which interval its test top-1 cells show."""
    kinds = set(groups.loc[groups["test_top1"].notna(), "top1_n"])
    what = []
    if 1 in kinds:
        what.append("† one seed: Wilson's interval over the test images, which covers test sampling only (a second "
                    "seed of the same recipe moves accuracy further)")
    if any(k > 1 for k in kinds):
        what.append("several seeds (n in the run column): the recipe's interval, over seeds and test images both, "
                    "cut at 100 %")
    if not what:
        return ""
    return (f"*test top-1* is the mean with its 95 % interval in parentheses: {'; '.join(what)}. Other ± are "
            "standard deviations over seeds.")


def points(fraction: float) -> str:
    """A difference of accuracies in signed percentage points: `+0.3`, `−0.4`."""
    return f"{100 * fraction:+.1f}".replace("-", MINUS)


def difference_text(diff: float, low: float, high: float) -> str:
    """`difference +0.3 points, 95 % interval −0.4 … +1.0`."""
    return f"difference {points(diff)} points, 95 % interval {points(low)} … {points(high)}"


def _fmt_flops(flops: float) -> str:
    if math.isnan(flops):
        return ""
    return f"{flops / 1e9:.2f} G" if flops >= 1e9 else f"{flops / 1e6:.1f} M"


def _fmt_mem(mb: float, std: float, kind) -> str:
    text = fmt(mb, std, "int")
    return f"{text} {MEM_KIND.get(kind, kind or '')}".strip() if text else ""


def _run_label(group: pd.Series) -> str:
    if group["n"] == 1:
        return f"`{group['run']}`"
    seeds = ", ".join(str(s) for s in group["seeds"])
    return f"`{group['run']}` (n={group['n']}, seeds {seeds})"


def dataset_table(groups: pd.DataFrame, reference: dict) -> str:
    """The markdown table of one dataset's runs, one row per run (seeds averaged), the study's figures beside ours."""
    has_ref = any(run in reference for run in groups["run"])
    header = ["run", "model", "pretrained", "params (M)", "FLOPs/image", "peak memory (MB)", "epochs", "s/epoch",
              "training (s)", "images/s", "best val acc (%)", "test top-1 (%)", "top-5 (%)", "macro-F1", "device"]
    if has_ref:
        header += ["study s/epoch", "study acc (%)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for _, g in groups.iterrows():
        top5 = fmt(g["test_top5"], g["test_top5_std"], "pct")
        if not top5 and g["num_classes"] <= 5:
            top5 = "n/a"
        cells = [
            _run_label(g), g["model"], g["pretrained"],
            "" if math.isnan(g["params"]) else f"{g['params'] / 1e6:.2f}",
            _fmt_flops(g["flops_per_image"]),
            _fmt_mem(g["peak_mem_mb"], g["peak_mem_mb_std"], g["peak_mem_kind"]),
            fmt(g["epochs"], kind="int"),  # one config for all seeds
            fmt(g["sec_per_epoch"], g["sec_per_epoch_std"], "sec"),
            fmt(g["train_seconds"], g["train_seconds_std"], "sec"),
            fmt(g["images_per_sec"], g["images_per_sec_std"], "int"),
            fmt(g["best_val_acc"], g["best_val_acc_std"], "pct"),
            fmt_top1(g),
            top5,
            fmt(g["test_macro_f1"], g["test_macro_f1_std"], "f1"),
            g["device"],
        ]
        if has_ref:
            ref = reference.get(g["run"], {})
            cells += [fmt(as_number(ref.get("sec_per_epoch")), kind="sec"),
                      fmt(as_number(ref.get("best_val_acc")), kind="pct")]
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def inference_table(groups: pd.DataFrame) -> str | None:
    """The markdown table of one dataset's inference cost (size, batch-1 CPU latency, throughput); None if
    unmeasured."""
    measured = groups.dropna(subset=["latency_cpu_b1_1t_ms"])
    if not len(measured):
        return None
    threads = sorted({int(t) for t in measured["threads_all"].dropna()})
    every = f"{threads[0]} threads" if len(threads) == 1 else "all threads"
    has_gpu = measured["throughput_gpu_ips"].notna().any()
    header = ["run", "model", "params (M)", "weights (MB)", "batch-1 latency, 1 thread (ms)",
              f"batch-1 latency, {every} (ms)", "CPU images/s"] + (["GPU images/s"] if has_gpu else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for _, g in measured.iterrows():
        cells = [_run_label(g), g["model"], "" if math.isnan(g["params"]) else f"{g['params'] / 1e6:.2f}",
                 f"{g['weights_bytes'] / 1e6:.1f}", _latency(g, "latency_cpu_b1_1t"),
                 _latency(g, "latency_cpu_b1_all") + (f", {g['threads_all']:.0f} threads" if len(threads) > 1 else ""),
                 _per_batch(g, "cpu")] + ([_per_batch(g, "gpu")] if has_gpu else [])
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def deployment_table(groups: pd.DataFrame) -> str | None:
    """The markdown table of one dataset's deployment cost: batch-1, 1-thread latency per runtime at the run's
    size and at 224 px, and how the ONNX exports agree with PyTorch; None when no run measured it."""
    measured = groups.dropna(subset=["latency_ort_b1_1t_ms"])
    if not len(measured):
        return None
    header = ["run", "model", "eager (ms)", "ONNX Runtime (ms)", "int8 (ms)", "eager, 224 px (ms)",
              "ONNX Runtime, 224 px (ms)", "int8, 224 px (ms)", "ONNX top-1 agreement (%)", "int8 top-1, fp32's (%)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for _, g in measured.iterrows():
        times = [fmt(g[f"latency_{r}_b1_1t_ms"], kind="sec")
                 for r in ("cpu", "ort", "ort_int8", "cpu_224", "ort_224", "ort_int8_224")]
        cells = [_run_label(g), g["model"], *times, fmt(g["onnx_top1_agreement"], kind="pct"),
                 f"{fmt(g['int8_test_top1'], kind='pct')} ({fmt(g['onnx_test_top1'], kind='pct')})"]
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def _latency(group: pd.Series, key: str) -> str:
    """`median (p95 x)` in ms, two decimals below 100; replicates: the mean of their medians ± std."""
    text = fmt(group[f"{key}_ms"], group[f"{key}_ms_std"], "sec")
    return f"{text} (p95 {fmt(group[f'{key}_p95_ms'], kind='sec')})" if text else ""


def _per_batch(group: pd.Series, device: str) -> str:
    ips = fmt(group[f"throughput_{device}_ips"], group[f"throughput_{device}_ips_std"], "int")
    return f"{ips} (batch {group[f'throughput_{device}_batch']:.0f})" if ips else ""


def dataset_summary(groups: pd.DataFrame, comparisons: pd.DataFrame | None = None) -> str:
    """The accuracy-vs-time sentence: the fastest run against the one highest in test top-1, and whether
    their paired difference (a row of compare.compare_runs' table) is beyond noise."""
    timed = groups.dropna(subset=["test_top1", "sec_per_epoch"])
    if len(timed) < 2:
        return ""
    fast = timed.loc[timed["sec_per_epoch"].idxmin()]
    top = timed.sort_values(["test_top1", "run"], ascending=[False, True]).iloc[0]
    if fast["run"] == top["run"]:
        speed = (f"**Accuracy vs time:** `{fast['run']}` is the fastest "
                 f"({fmt(fast['sec_per_epoch'], kind='sec')} s/epoch)")
        close = _within_noise_of(comparisons, top["run"])
        text = (f"{speed} and the highest in test top-1." if not close else
                f"{speed}; in test top-1 it does not beat {', '.join(f'`{r}`' for r in close)} (within noise or "
                "undecided: see the comparisons).")
    else:
        ratio = top["sec_per_epoch"] / fast["sec_per_epoch"]
        text = (f"**Accuracy vs time:** the fastest run, `{fast['run']}`, takes "
                f"{fmt(fast['sec_per_epoch'], kind='sec')} s/epoch for {100 * fast['test_top1']:.1f} %; the highest "
                f"in test top-1, `{top['run']}`, takes "
                f"{fmt(top['sec_per_epoch'], kind='sec')} s/epoch ({ratio:.1f}× as long) for "
                f"{100 * top['test_top1']:.1f} % ({_gain(comparisons, top['run'], fast['run'])}).")
    devices = {d for d in timed["device"] if d}
    if len(devices) > 1:
        text += f" Timings come from different devices ({'; '.join(sorted(devices))}): compare with care."
    return text


def _within_noise_of(comparisons: pd.DataFrame | None, run: str) -> list[str]:
    """The runs `run` does not beat: their comparison is within noise or undecided (its verdict column)."""
    if comparisons is None:
        return []
    rows = comparisons[~comparisons["beyond_noise"].astype(bool)]
    return sorted({b if a == run else a for a, b in zip(rows["a"], rows["b"]) if run in (a, b)})


def _gain(comparisons: pd.DataFrame | None, top: str, other: str) -> str:
    """`top` minus `other` in words, with the verdict their comparison already carries."""
    if comparisons is None:
        return "not compared image by image"
    pair = {top, other}
    rows = comparisons[[{a, b} == pair for a, b in zip(comparisons["a"], comparisons["b"])]]
    if not len(rows):
        return "not compared image by image"
    row = rows.iloc[0]
    sign = 1 if row["a"] == top else -1
    if math.isnan(row["low"]):
        return f"undecided, {row['undecided']}: difference {points(sign * row['diff'])} points"
    low, high = sorted([sign * row["low"], sign * row["high"]])
    words = difference_text(sign * row["diff"], low, high)
    return words if row["beyond_noise"] else f"within noise: {words}"


def accuracy_metric(groups: pd.DataFrame) -> tuple[str, str]:
    """Test top-1 once any run is evaluated, else best validation accuracy: never a mix of the two."""
    if len(groups) and groups["test_top1"].notna().any():
        return "test_top1", "test top-1"
    return "best_val_acc", "best validation accuracy"


def busy_training_warning(replicates: pd.DataFrame) -> str:
    """The warning under a timings table when a run trained on a busy machine: the 1-minute load average, read at
    the end of each epoch (train/metrics.json: train_load_max), went above the machine's CPUs (cpus). Empty when
    none did, or when the runs recorded no load (older runs, or an OS without a load average)."""
    if not {"train_load_max", "cpus"} <= set(replicates.columns):
        return ""
    busy = replicates[replicates["train_load_max"] > replicates["cpus"]]
    if not len(busy):
        return ""
    worst = busy.groupby("run").agg(load=("train_load_max", "max"), cpus=("cpus", "max"))
    named = ", ".join(f"`{run}` (load up to {row.load:.1f} on {row.cpus:.0f} CPUs)" for run, row in worst.iterrows())
    return (f"**Warning: timed on a busy machine.** The load average went above the CPUs while training {named}: "
            "other work shared the CPUs, so their s/epoch, training time and images/s are inflated and do not "
            "compare with the other runs'. Retrain on a quiet machine before comparing timings.")


def suite_metrics(groups: pd.DataFrame) -> dict:
    """Per-run numbers a comparison needs, for `dvc metrics show` and `dvc exp show` (the report's metrics.json):
    test accuracy with its 95 % interval, macro-F1, params, FLOPs and the number of seeds. Wall-clock
    figures differ on every rerun, so they go to timings.json, which DVC does not diff."""
    keys = ("test_top1", "test_macro_f1", "params", "flops_per_image")
    out = {}
    for run, row in groups.iterrows():
        interval = {"test_top1_ci_low": row["top1_low"], "test_top1_ci_high": row["top1_high"]}
        values = {k: row[k] for k in keys} | interval
        out[run] = {k: round(float(v), 6) for k, v in values.items() if not math.isnan(v)} | {"seeds": int(row["n"])}
    return out


def suite_timings(groups: pd.DataFrame) -> dict:
    """Per-run wall-clock figures (means over seeds): reported, never compared by `dvc exp diff`."""
    keys = ("sec_per_epoch", "train_seconds", "images_per_sec", "peak_mem_mb")
    return {run: {k: round(float(row[k]), 4) for k in keys if k in row and not math.isnan(row[k])}
            for run, row in groups.iterrows()}


def short_run_name(run: str, dataset: str) -> str:
    """Drop the dataset prefix from a run name inside a per-dataset chart; its title names the dataset."""
    return run[len(dataset) + 1:] if run.startswith(f"{dataset}-") and len(run) > len(dataset) + 1 else run


def figure_markdown(caption: str, name: str) -> list[str]:
    """README lines that link and show figures/<name> under a bold caption."""
    return [f"**{caption}** ([figures/{name}](figures/{name}))", "", f"![{caption}](figures/{name})", ""]
