"""Tables and sentences: one dataset's runs as a markdown table, its summary, the suite's metrics.

Replicates (runs identical but for train.seed) become one row of mean ± std.
"""

from __future__ import annotations

import math

import pandas as pd

from cnnbench.report.runs import AGG_KEYS, as_number

MEM_KIND = {"cuda_max_allocated": "GPU allocated", "cpu_peak_rss": "CPU RSS"}


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


def fmt(value: float, std: float = math.nan, kind: str = "num") -> str:
    """A number as its table cell (pct, f1, sec, int or num), with ` ± std` when std is known; NaN is blank."""
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
    text = fmt(mb, std, "int")
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
        top5 = fmt(g["test_top5"], g["test_top5_std"], "pct")
        if not top5 and g["num_classes"] <= 5:
            top5 = "n/a"
        cells = [
            _run_label(g), g["model"], g["pretrained"],
            "" if math.isnan(g["params"]) else f"{g['params'] / 1e6:.2f}",
            _fmt_flops(g["flops_per_image"]),
            _fmt_mem(g["peak_mem_mb"], g["peak_mem_mb_std"], g["peak_mem_kind"]),
            fmt(g["sec_per_epoch"], g["sec_per_epoch_std"], "sec"),
            fmt(g["images_per_sec"], g["images_per_sec_std"], "int"),
            fmt(g["best_val_acc"], g["best_val_acc_std"], "pct"),
            fmt(g["test_top1"], g["test_top1_std"], "pct"),
            top5,
            fmt(g["test_macro_f1"], g["test_macro_f1_std"], "f1"),
            g["device"],
        ]
        if has_ref:
            ref = next((reference[r] for r in g["runs"] if r in reference), {})
            cells += [fmt(as_number(ref.get("sec_per_epoch")), kind="sec"),
                      fmt(as_number(ref.get("best_val_acc")), kind="pct")]
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def inference_table(groups: pd.DataFrame) -> str | None:
    """The markdown table of one dataset's inference cost (size, batch-1 CPU latency, throughput); None if unmeasured."""
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


def _latency(group: pd.Series, key: str) -> str:
    """`median (p95 x)` in ms, two decimals below 100; replicates: the mean of their medians ± std."""
    text = fmt(group[f"{key}_ms"], group[f"{key}_ms_std"], "sec")
    return f"{text} (p95 {fmt(group[f'{key}_p95_ms'], kind='sec')})" if text else ""


def _per_batch(group: pd.Series, device: str) -> str:
    ips = fmt(group[f"throughput_{device}_ips"], group[f"throughput_{device}_ips_std"], "int")
    return f"{ips} (batch {group[f'throughput_{device}_batch']:.0f})" if ips else ""


def dataset_summary(groups: pd.DataFrame) -> str:
    """Two sentences: the best run by test top-1 and the accuracy-vs-time trade-off."""
    metric, what = accuracy_metric(groups)
    ranked = groups.dropna(subset=[metric])
    if not len(ranked):
        return "No run of this dataset has accuracy figures yet."
    best = ranked.loc[ranked[metric].idxmax()]
    mean_of = f", mean of {best['n']} seeds" if best["n"] > 1 else ""
    score = fmt(best[metric], kind="pct")
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
                        f"({fmt(fast['sec_per_epoch'], kind='sec')} s/epoch) and the most accurate.")
        else:
            ratio = top["sec_per_epoch"] / fast["sec_per_epoch"]
            gain = 100 * (top[metric] - fast[metric])
            text.append(
                f"**Accuracy vs time:** the fastest run, `{fast['run']}`, takes "
                f"{fmt(fast['sec_per_epoch'], kind='sec')} s/epoch for {fmt(fast[metric], kind='pct')} %; "
                f"the most accurate, `{top['run']}`, takes {fmt(top['sec_per_epoch'], kind='sec')} s/epoch "
                f"({ratio:.1f}× as long) for {fmt(top[metric], kind='pct')} % ({gain:+.2f} points).")
        devices = {d for d in timed["device"] if d}
        if len(devices) > 1:
            text.append(f"Timings come from different devices ({'; '.join(sorted(devices))}): compare with care.")
    return " ".join(text)


def accuracy_metric(groups: pd.DataFrame) -> tuple[str, str]:
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


def short_run_name(run: str, dataset: str) -> str:
    """Drop the dataset prefix from a run name inside a per-dataset chart; its title names the dataset."""
    return run[len(dataset) + 1:] if run.startswith(f"{dataset}-") and len(run) > len(dataset) + 1 else run


def figure_markdown(caption: str, name: str) -> list[str]:
    """README lines that link and show figures/<name> under a bold caption."""
    return [f"**{caption}** ([figures/{name}](figures/{name}))", "", f"![{caption}](figures/{name})", ""]
