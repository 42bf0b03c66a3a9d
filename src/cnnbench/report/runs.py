"""Loading a suite's runs: what the train and evaluate stages wrote, as tables.

Reads only `<runs_dir>/<run>/train/` (DVCLive's params.yaml, metrics.json and TSV curves) and
`<runs_dir>/<run>/eval/` (metrics.json, per_class.csv, predictions.csv, inference.json). Any missing optional
file leaves its columns blank; an unreadable one is a CnnbenchError that names it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from cnnbench.errors import CnnbenchError
from cnnbench.files import read_json_object

# Numeric run metrics: flat keys of train/metrics.json (DVCLive summary) and of eval/metrics.json.
TRAIN_KEYS = ("best_val_acc", "final_val_acc", "sec_per_epoch", "images_per_sec", "peak_mem_mb",
              "params", "flops_per_image", "epochs")
EVAL_KEYS = ("test_top1", "test_top5", "test_macro_f1", "test_loss", "test_top1_tta", "num_test", "num_classes")
# Inference cost (eval/inference.json, cnnbench.inference.InferenceCost): stable names that claims can cite.
INFERENCE_KEYS = ("latency_cpu_b1_1t_ms", "latency_cpu_b1_1t_p95_ms", "latency_cpu_b1_all_ms",
                  "latency_cpu_b1_all_p95_ms", "threads_all", "throughput_cpu_ips", "throughput_cpu_batch",
                  "throughput_gpu_ips", "throughput_gpu_batch", "weights_bytes", "load_average")
AGG_KEYS = TRAIN_KEYS + EVAL_KEYS + INFERENCE_KEYS
CURVES = ("train/acc", "train/loss", "val/acc", "val/loss", "lr", "epoch_seconds")


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
                "has_train", "has_eval", *AGG_KEYS, "inference_cpu", "inference_gpu"]


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
        row[key] = as_number(train.get(key))
    for key in EVAL_KEYS:
        row[key] = as_number(evaluation.get(key))
    row.update(_inference_row(run_dir))
    return row


def _inference_row(run_dir: Path) -> dict:
    """INFERENCE_KEYS and the processors that measured them, from eval/inference.json (blank when absent)."""
    cost = read_json_object(run_dir / "eval" / "inference.json") or {}
    row = {key: as_number(cost.get(key)) for key in INFERENCE_KEYS}
    row["inference_cpu"], row["inference_gpu"] = cost.get("cpu"), cost.get("gpu")
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


def as_number(value) -> float:
    """A JSON number as float; anything else (absent, null, a string, a bool) is NaN."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


def _pretrained_label(value) -> str:
    if value in (None, "", False):
        return "no"
    return Path(str(value)).name if "/" in str(value) else str(value)
