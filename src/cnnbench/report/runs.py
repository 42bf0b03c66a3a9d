"""Loading a suite's runs: what the train and evaluate stages wrote, as tables.

Each run writes one directory per seed, even with a single seed: `<runs_dir>/<run>/train/seed<k>/`
(DVCLive's params.yaml, metrics.json and TSV curves) and `<runs_dir>/<run>/eval/seed<k>/`
(metrics.json, per_class.csv, predictions.csv, scores.npz, and inference.json for the first seed);
see cnnbench.training.replicates. One row per (run, seed) replicate; a run whose other seeds are not written
yet is simply fewer rows. Any missing optional file leaves its columns blank; an unreadable one is a
CnnbenchError that names it.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from cnnbench.core.errors import CnnbenchError
from cnnbench.core.files import read_json_object
from cnnbench.evaluation.class_scores import SCORES, ClassScores, load_scores
from cnnbench.params.metric_registry import DEPLOYED_METRICS
from cnnbench.training.replicates import find_replicates

# Numeric run metrics always present as columns: flat keys of train/metrics.json (DVCLive summary) and
# of eval/metrics.json. Any other flat number in a `<stage>/seed<k>/metrics.json` becomes a column too,
# so a claim may name a metric a later stage adds (an inference latency, say).
TRAIN_KEYS = ("best_val_acc", "final_val_acc", "sec_per_epoch", "train_seconds", "images_per_sec", "peak_mem_mb",
              "params", "flops_per_image", "epochs")
EVAL_KEYS = ("test_top1", "test_top1_ci_low", "test_top1_ci_high", "test_top5", "test_macro_f1", "test_loss",
             "test_top1_tta", "num_test", "num_classes")
# Inference cost (eval/inference.json, cnnbench.evaluation.latency.InferenceCost): stable names that claims can cite.
INFERENCE_KEYS = ("latency_cpu_b1_1t_ms", "latency_cpu_b1_1t_p95_ms", "latency_cpu_b1_all_ms",
                  "latency_cpu_b1_all_p95_ms", "threads_all", "throughput_cpu_ips", "throughput_cpu_batch",
                  "throughput_gpu_ips", "throughput_gpu_batch", "weights_bytes", "load_average")
# ... and as deployed (deploy.deployment_record): batch-1 latency per runtime and size, the exports' agreement.
DEPLOY_KEYS = DEPLOYED_METRICS
AGG_KEYS = TRAIN_KEYS + EVAL_KEYS + INFERENCE_KEYS + DEPLOY_KEYS
CURVES = ("train/acc", "train/loss", "val/acc", "val/loss", "lr", "epoch_seconds")
SEED_DIR = re.compile(r"^seed(\d+)$")


@dataclass
class RunsData:
    """A suite's replicates as tables: one row per (run, seed), with long-format curves, per-class rows and
    predictions."""

    runs: pd.DataFrame         # run, seed, dataset, model, family, pretrained, config, ..., AGG_KEYS and other metrics
    curves: pd.DataFrame       # run, seed, series (e.g. "val/acc"), epoch (1-based), value
    per_class: pd.DataFrame    # run, seed, class, precision, recall, f1, support
    predictions: pd.DataFrame  # run, seed, index, id, true, predicted, confidence
    eval_dirs: dict[tuple[str, int], Path] = field(default_factory=dict)  # (run, seed) -> its eval/ directory

    @property
    def datasets(self) -> list[str]:
        return sorted(self.runs["dataset"].unique()) if len(self.runs) else []

    def of_dataset(self, dataset: str) -> pd.DataFrame:
        return self.runs[self.runs["dataset"] == dataset]

    def classes(self, run: str) -> list[str] | None:
        """The run's class names in evaluation order (from per_class.csv, else predictions.csv), its first seed's."""
        rows = self.per_class[self.per_class["run"] == run]
        if len(rows):
            return list(rows[rows["seed"] == rows["seed"].min()]["class"])
        preds = self.predictions[self.predictions["run"] == run]
        if len(preds):
            return sorted(set(preds["true"]) | set(preds["predicted"]))
        return None

    def mean_curves(self) -> pd.DataFrame:
        """The curves averaged over each run's seeds: one line per run and series."""
        return self.curves.groupby(["run", "series", "epoch"], as_index=False, sort=False)["value"].mean()

    def timing_samples(self, run: str, metric: str) -> np.ndarray | None:
        """The timed calls (ms) behind a latency median of inference.json (`<metric>` with `_ms` ->
        `_samples_ms`), from the run's lowest seed that measured it; None when none kept them."""
        key = metric.removesuffix("_ms") + "_samples_ms"
        for (name, _), eval_dir in sorted(self.eval_dirs.items()):
            if name != run:
                continue
            samples = (read_json_object(eval_dir / "inference.json") or {}).get(key)
            if isinstance(samples, list) and samples and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                             and math.isfinite(v) for v in samples):
                return np.asarray(samples, dtype=float)
        return None

    def scores(self, run: str, seed: int) -> ClassScores | None:
        """The per-image class probabilities one replicate's evaluation wrote, if it wrote them."""
        eval_dir = self.eval_dirs.get((run, seed))
        return load_scores(eval_dir / SCORES) if eval_dir is not None else None


def load_runs(runs_dir: str | Path) -> RunsData:
    """Every replicate under runs_dir that has written anything; a missing runs_dir means no runs."""
    rows, curves, per_class, predictions, eval_dirs = [], [], [], [], {}
    for run, seed, stage_dirs in _replicates(Path(runs_dir)):
        train_dir, eval_dir = stage_dirs["train"], stage_dirs["eval"]
        row = _load_row(run, seed, stage_dirs)
        if row is None:
            continue
        rows.append(row)
        curves.extend(_load_curves(run, seed, train_dir))
        per_class.append(_read_csv(eval_dir / "per_class.csv", "class", run, seed))
        predictions.append(_read_csv(eval_dir / "predictions.csv", ("true", "predicted"), run, seed))
        eval_dirs[(run, seed)] = eval_dir
    extra = sorted({k for row in rows for k in row} - set(_RUN_COLUMNS))
    runs = pd.DataFrame(rows, columns=_RUN_COLUMNS + extra)
    return RunsData(
        runs=runs,
        curves=pd.DataFrame(curves, columns=["run", "seed", "series", "epoch", "value"]),
        per_class=_concat(per_class, ["run", "seed", "class", "precision", "recall", "f1", "support"]),
        predictions=_concat(predictions, ["run", "seed", "index", "id", "true", "predicted", "confidence"]),
        eval_dirs=eval_dirs,
    )


def _replicates(runs_dir: Path) -> list[tuple[str, int, dict[str, Path]]]:
    """(run, seed, stage -> directory) of every replicate under runs_dir, by run name then seed."""
    found = []
    for replicate in find_replicates(runs_dir):
        match = SEED_DIR.match(replicate.seed_dir)
        if match:
            found.append((replicate.run, int(match.group(1)), replicate.stage_dirs))
    return sorted(found, key=lambda r: (r[0], r[1]))


_IDENTITY = ["run", "seed", "dataset", "model", "family", "pretrained", "config", "peak_mem_kind", "device",
             "has_train", "has_eval", "inference_cpu", "inference_gpu", "deployment_reason"]
_RUN_COLUMNS = [*_IDENTITY, *AGG_KEYS]


def _load_row(run: str, seed: int, stage_dirs: dict[str, Path]) -> dict | None:
    params = _read_yaml(stage_dirs["train"] / "params.yaml")
    metrics = {stage: read_json_object(d / "metrics.json") for stage, d in stage_dirs.items()}
    train, evaluation = metrics.get("train"), metrics.get("eval")
    if params is None and not any(m is not None for m in metrics.values()):
        return None
    params, train = params or {}, train or {}
    train_cfg = dict(params.get("train") or {})
    train_cfg.pop("seed", None)
    row = {
        "run": run,
        "seed": seed,
        "dataset": str(params.get("dataset") or "unknown"),
        "model": str(params.get("model") or "unknown"),
        "family": str(params.get("model_family") or ""),
        "pretrained": _pretrained_label(train_cfg.get("pretrained")),
        # What a run on another dataset must share with this one to be "the same run" there: pairs.py reads it.
        "config": json.dumps({"model": params.get("model"), "train": train_cfg}, sort_keys=True, default=str),
        "peak_mem_kind": train.get("peak_mem_kind"),
        "device": train.get("device"),
        "has_train": bool(train),
        "has_eval": bool(evaluation),
    }
    for values in metrics.values():
        row.update({k: as_number(v) for k, v in (values or {}).items()
                    if k not in _IDENTITY and not math.isnan(as_number(v))})
    for key in AGG_KEYS:
        row.setdefault(key, math.nan)
    row.update(_inference_row(stage_dirs["eval"]))
    return row


def _load_curves(run: str, seed: int, train_dir: Path) -> list[tuple]:
    out = []
    for series in CURVES:
        path = train_dir / "plots" / "metrics" / f"{series}.tsv"
        if not path.is_file():
            continue
        try:
            table = pd.read_csv(path, sep="\t")
            values = table.iloc[:, -1].astype(float)
            steps = table["step"].astype(int)
        except (ValueError, KeyError, pd.errors.ParserError) as err:
            raise CnnbenchError(f"{path}: not a DVCLive metric TSV ({err}); re-run the train stage.") from None
        out.extend((run, seed, series, int(s) + 1, float(v)) for s, v in zip(steps, values))
    return out


def _read_yaml(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise CnnbenchError(f"{path}: unreadable YAML ({err}); re-run the train stage.") from None
    return data if isinstance(data, dict) else None


def _read_csv(path: Path, str_columns, run: str, seed: int) -> pd.DataFrame | None:
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
    table.insert(1, "seed", seed)
    return table


def _concat(tables: list, columns: list[str]) -> pd.DataFrame:
    tables = [t for t in tables if t is not None and len(t)]
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=columns)


def metric_columns(runs: pd.DataFrame) -> list[str]:
    """The numeric per-replicate metrics among `runs`' columns: AGG_KEYS and whatever else a stage wrote."""
    return [c for c in runs.columns if c not in _IDENTITY]


def as_number(value) -> float:
    """A JSON number as float; anything else (absent, null, a string, a bool) is NaN."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


def _pretrained_label(value) -> str:
    if value in (None, "", False):
        return "no"
    return Path(str(value)).name if "/" in str(value) else str(value)


def _inference_row(eval_dir: Path) -> dict:
    """INFERENCE_KEYS and the processors that measured them, from inference.json (blank when absent)."""
    cost = read_json_object(eval_dir / "inference.json") or {}
    row = {key: as_number(cost.get(key)) for key in INFERENCE_KEYS + DEPLOY_KEYS}
    row["inference_cpu"], row["inference_gpu"] = cost.get("cpu"), cost.get("gpu")
    row["deployment_reason"] = cost.get("deployment_reason")  # why ONNX Runtime was not measured, if it was not
    return row
