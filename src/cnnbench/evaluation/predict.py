"""evaluate and predict: the best-validation checkpoint on the untouched test split, or on any image."""

from __future__ import annotations

import dataclasses
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from cnnbench.core.device import resolve_device
from cnnbench.core.errors import CnnbenchError
from cnnbench.core.files import remove_stale_dirs, write_json_atomic, write_text_atomic
from cnnbench.data.arrays import load_prepared
from cnnbench.data.datasets import Normalize
from cnnbench.data.images import MAX_FILE_BYTES, Decoded, decode_image
from cnnbench.evaluation.class_scores import SCORES, save_scores
from cnnbench.evaluation.deploy import deployment_record
from cnnbench.evaluation.latency import Precision, measure_inference
from cnnbench.evaluation.scoring import split_logits
from cnnbench.evaluation.stats import wilson_interval
from cnnbench.models.build import build_model
from cnnbench.models.specs import parse_model_spec
from cnnbench.params.config import EvaluateConfig, RunConfig
from cnnbench.training.checkpoint import BEST, ModelCheckpoint, load_model_checkpoint
from cnnbench.training.replicates import replicate_dir

# Beside metrics.json, never in it: timings are facts of the machine, not of the model, and must
# stay out of what `dvc metrics diff` / `dvc exp diff` compare.
INFERENCE = "inference.json"
# `cnnbench predict` decodes and scores this many files at a time: 32 images at 224 px are 5 MB of
# pixels, however many files the command names.
PREDICT_BATCH = 32
NOT_ASKED = "not asked for (the run's `deploy`, or else `evaluate.deploy`, is false in params.yaml)"


def find_checkpoint(run_or_checkpoint: str, runs_dir: str | Path) -> Path:
    """A .pt file, a directory holding best.pt, or a run (`<run>` or `<run>/seed<k>`) under runs_dir.

    A run with several seeds answers with its first seed's model; name `<run>/seed<k>` for another.
    """
    places = [Path(run_or_checkpoint), Path(runs_dir) / run_or_checkpoint]
    candidates = [places[0]]
    for place in places:
        seeds = sorted(place.glob("seed*"), key=lambda p: (len(p.name), p.name)) if place.is_dir() else []
        candidates += [place / BEST] + [seed / BEST for seed in seeds]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise CnnbenchError(f"{run_or_checkpoint}: no checkpoint found (looked for the file itself, a {BEST} in it or "
                        f"in its seed directories, and {Path(runs_dir) / run_or_checkpoint}). "
                        f"Train the run first: dvc repro train@{run_or_checkpoint}")


def load_model(path: str | Path, device: torch.device) -> tuple[torch.nn.Module, ModelCheckpoint]:
    """Rebuild the network a best.pt describes and load its weights, in eval mode."""
    ckpt = load_model_checkpoint(path, device)
    spec = parse_model_spec(ckpt.spec.get("name", "checkpoint"), ckpt.spec, where=f"{path}: spec")
    model = build_model(spec, num_classes=len(ckpt.classes), image_size=ckpt.image_size)
    try:
        model.load_state_dict(ckpt.weights)
    except RuntimeError as err:  # e.g. a class list that does not match the head's size
        first = next(iter(str(err).strip().splitlines()), "")
        raise CnnbenchError(f"{path}: its weights do not fit the model it describes ({len(ckpt.classes)} classes, "
                            f"{spec.name}): {first}") from None
    return model.to(device).eval(), ckpt


@torch.no_grad()
def predict_probs(model, images: np.ndarray, mean, std, device: torch.device, batch_size: int = 1024,
                  tta: str = "none") -> np.ndarray:
    """Class probabilities for uint8 NHWC images, scored as validation is; with tta "hflip", averaged with
    the mirror's (config.TTA_MODES)."""
    norm = Normalize(mean, std, device)
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    probs = F.softmax(split_logits(model, x, norm, batch_size), dim=1)
    if tta == "hflip":
        probs = (probs + F.softmax(split_logits(model, x, norm, batch_size, flip=True), dim=1)) / 2
    return probs.cpu().numpy() if len(x) else np.zeros((0, 0), dtype=np.float32)


def classification_metrics(y_true: np.ndarray, probs: np.ndarray, classes: list[str]) -> tuple[dict, pd.DataFrame]:
    """Top-1, top-5 (when there are more than 5 classes), macro-F1 and a per-class table (scikit-learn)."""
    from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support, top_k_accuracy_score

    labels = np.arange(len(classes))
    pred = probs.argmax(1)
    top1 = wilson_interval(int((pred == y_true).sum()), len(y_true))
    metrics = {
        "test_top1": float(accuracy_score(y_true, pred)),
        "test_top1_ci_low": top1.low,   # Wilson 95 % interval over the test images
        "test_top1_ci_high": top1.high,
        "test_top5": float(top_k_accuracy_score(y_true, probs, k=5, labels=labels)) if len(classes) > 5 else None,
        "test_macro_f1": float(f1_score(y_true, pred, labels=labels, average="macro", zero_division=0)),
        "test_loss": float(-np.log(np.clip(probs[np.arange(len(y_true)), y_true], 1e-12, None)).mean()),
        "num_test": int(len(y_true)),
        "num_classes": len(classes),
    }
    p, r, f, s = precision_recall_fscore_support(y_true, pred, labels=labels, zero_division=0)
    per_class = pd.DataFrame({"class": classes, "precision": p, "recall": r, "f1": f, "support": s})
    return metrics, per_class


def evaluate_run(checkpoint: str | Path, data_dir: str | Path, out_dir: str | Path, cfg: EvaluateConfig,
                 device: str = "auto", precision: Precision = Precision(), inference: bool = True,
                 tta: str = "none") -> dict:
    """Evaluate a best.pt on the test split; write metrics.json, per_class.csv, predictions.csv and scores.npz.

    With `inference` (the default) also inference.json, see inference_record; pass False to skip it
    (a replicate whose model is the same network as one already measured). Every output is of the
    plain model; `tta` (the dataset's, config.TTA_MODES) other than "none" adds `test_top1_tta`.
    """
    dev = resolve_device(device)
    model, ckpt = load_model(checkpoint, dev)
    test = load_prepared(data_dir, splits=("test",)).splits["test"]
    if len(test.y) == 0:
        raise CnnbenchError(f"{data_dir}: the test split is empty; give the dataset a test_fraction.")
    probs = predict_probs(model, test.x, ckpt.mean, ckpt.std, dev, cfg.batch_size)
    metrics, per_class = classification_metrics(test.y, probs, ckpt.classes)
    metrics["checkpoint_epoch"] = ckpt.epoch
    if tta != "none":
        augmented = predict_probs(model, test.x, ckpt.mean, ckpt.std, dev, cfg.batch_size, tta=tta)
        metrics["test_top1_tta"] = float((augmented.argmax(1) == test.y).mean())
    classes = np.array(ckpt.classes)
    pred = probs.argmax(1)
    predictions = pd.DataFrame({"index": np.arange(len(test.y)), "id": test.ids, "true": classes[test.y],
                                "predicted": classes[pred], "confidence": probs.max(1).round(5)})
    out_dir = Path(out_dir)
    write_json_atomic(out_dir / "metrics.json", metrics)
    write_text_atomic(out_dir / "per_class.csv", per_class.round(5).to_csv(index=False))
    write_text_atomic(out_dir / "predictions.csv", predictions.to_csv(index=False))
    save_scores(out_dir / SCORES, test.ids, ckpt.classes, probs)
    if inference:
        record = inference_record(model, ckpt.image_size, cfg, dev, precision)
        if cfg.inference and cfg.deploy:
            train = load_prepared(data_dir, splits=("train",)).splits["train"]
            record.update(deployment_record(model, ckpt.image_size, ckpt.mean, ckpt.std, (test.x, test.y), train.x))
        elif cfg.inference:
            record.update(deployment_measured=False, deployment_reason=NOT_ASKED)
        write_json_atomic(out_dir / INFERENCE, record)
    return metrics


def evaluate_replicates(run: RunConfig, data_dir: str | Path, run_dir: str | Path, out_dir: str | Path,
                        cfg: EvaluateConfig, device: str = "auto", precision: Precision = Precision(),
                        tta: str = "none") -> dict[int, dict]:
    """Evaluate every seed's best.pt (`<run_dir>/seed<k>`) into `<out_dir>/seed<k>`; drop undeclared seeds.

    The inference cost is measured once, on the first seed's model: the other seeds are the same network.
    `tta` is the run's dataset's (see evaluate_run).
    """
    seeds = run.replicate_seeds
    remove_stale_dirs(out_dir, "seed*", {replicate_dir(seed) for seed in seeds})
    if run.deploy is not None:
        cfg = dataclasses.replace(cfg, deploy=run.deploy)
    return {seed: evaluate_run(Path(run_dir) / replicate_dir(seed) / BEST, data_dir,
                               Path(out_dir) / replicate_dir(seed),
                               cfg, device, precision, inference=seed == seeds[0], tta=tta) for seed in seeds}


def inference_record(model: torch.nn.Module, image_size: int, cfg: EvaluateConfig, device: torch.device,
                     precision: Precision) -> dict:
    """What inference.json holds: the model's inference cost, on the GPU too when `device` is one.

    With evaluate.inference off it says so instead: DVC requires every declared output to exist.
    """
    if not cfg.inference:
        return {"measured": False, "reason": "evaluate.inference is false in params.yaml"}
    gpu = device if device.type == "cuda" else None
    (cost,) = measure_inference([model], image_size, cpu_batch=cfg.inference_cpu_batch, gpu=gpu,
                                gpu_batch=cfg.batch_size, precision=precision)
    return cost.to_dict()


# ------------------------------------------------------------------ predict


@dataclass
class Prediction:
    path: str
    top: list[tuple[str, float]]
    error: str = ""


def predict_files(run_or_checkpoint: str, paths: list[str], runs_dir: str | Path, device: str = "auto",
                  top_k: int = 5, batch_size: int = PREDICT_BATCH) -> list[Prediction]:
    """Top-k classes per image file, with the run's own preprocessing; unreadable files get an error each.

    Files are decoded and scored `batch_size` at a time, so memory stays that of one batch however
    many files are named; only regular files are read, and none larger than an image can be.
    """
    dev = resolve_device(device)
    model, ckpt = load_model(find_checkpoint(run_or_checkpoint, runs_dir), dev)
    results = [Prediction(path, []) for path in paths]
    for start in range(0, len(results), batch_size):
        batch = results[start:start + batch_size]
        images, scored = [], []
        for result in batch:
            decoded = _decode_file(result.path, ckpt.image_size)
            if decoded.pixels is None:
                result.error = decoded.error
            else:
                images.append(decoded.pixels)
                scored.append(result)
        if images:
            probs = predict_probs(model, np.stack(images), ckpt.mean, ckpt.std, dev, batch_size)
            k = min(top_k, probs.shape[1])
            for row, result in zip(probs, scored):
                result.top = [(ckpt.classes[j], float(row[j])) for j in np.argsort(-row)[:k]]
    return results


def _decode_file(path: str, size: int) -> Decoded:
    """One file decoded as `prepare` decodes, or why not: a FIFO or a device is never opened (it may never end)."""
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            return Decoded(None, error="not a regular file (a directory, device, FIFO or socket is not read)")
        if info.st_size > MAX_FILE_BYTES:
            return Decoded(None, error=f"too large: {info.st_size:,} bytes (limit {MAX_FILE_BYTES:,})")
        data = Path(path).read_bytes()
    except OSError as err:
        return Decoded(None, error=f"cannot read: {err.strerror or err}")
    return decode_image(data, size)


def format_predictions(results: list[Prediction]) -> str:
    lines = []
    for r in results:
        if r.error:
            lines.append(f"{r.path}: error: {r.error}")
            continue
        lines.append(f"{r.path}:")
        lines.extend(f"  {prob:7.2%}  {name}" for name, prob in r.top)
    return "\n".join(lines)
