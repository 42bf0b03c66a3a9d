"""A fake suite of runs in the stages' real formats, and readers of the rendered README, for the report tests.

Plain functions and constants (no pytest here), so every tests/test_report*.py can import them.
The suite under `root` holds exactly the files train (DVCLive) and evaluate write, one `seed<k>/`
directory per seed of a run: digits runs (a ResNet with two seeds, a 3x3-stem ResNet and a
MobileNetV2), a cifar10 run that is trained but not evaluated, and butterflies / butterflies_clean
(100 and 94 classes).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from sklearn.metrics import precision_recall_fscore_support
from statsmodels.stats.proportion import proportion_confint

from cnnbench.params.config import ClaimConfig, DatasetConfig, ReportConfig, TrainConfig

NOISY = ["BLUE SPOTTED CROW", "CLEARWING MOTH", "COMMON BANDED AWL", "COPPER TAIL",
         "HUMMING BIRD HAWK MOTH", "SIXSPOT BURNET MOTH"]
BUTTERFLIES = sorted(NOISY + [f"SPECIES {i:02d} {'LONG ' * (i % 3)}NAME" for i in range(94)])
CLEAN = [c for c in BUTTERFLIES if c not in NOISY]
DIGITS = [str(i) for i in range(10)]
CIFAR = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
REFERENCE = {"digits-resnet18_stem3": {"sec_per_epoch": 40, "best_val_acc": 0.761},
             "cifar10-resnet18": {"sec_per_epoch": 186, "best_val_acc": 0.846}}
# As params.yaml declares them: butterflies_clean is butterflies without the noisy classes.
DATASETS = {
    "digits": DatasetConfig("digits", "digits", 16, val_fraction=0.1, test_fraction=0.2),
    "cifar10": DatasetConfig("cifar10", "cifar10", 32),
    "butterflies": DatasetConfig("butterflies", "butterflies", 224, val_fraction=0.0),
    "butterflies_clean": DatasetConfig("butterflies_clean", "butterflies", 224, val_fraction=0.0,
                                       drop_classes=tuple(NOISY)),
}
# As params.yaml words them: the study's noisy classes and its two families.
REPORT_CFG = ReportConfig(highlight_classes=tuple(NOISY), highlight_label="noisy in the study",
                          family_names={"resnet": "ResNet", "mobilenet_v2": "MobileNetV2"}, reference=REFERENCE)
CLAIMS = (
    ClaimConfig("stem3-beats-stem7", "The 3x3 stem beats the 7x7 stem", "digits-resnet18_stem3", "digits-resnet18",
                "a_better", study_metric="best_val_acc"),
    ClaimConfig("mobilenet-faster", "MobileNetV2 trains faster than the 3x3-stem ResNet", "digits-mobilenet_v2",
                "digits-resnet18_stem3", "a_better", metric="sec_per_epoch", better="lower"),
    ClaimConfig("clean-better", "Dropping the noisy classes improves accuracy", "butterflies_clean-resnet18-imagenet",
                "butterflies-resnet18-imagenet", "a_better"),
    ClaimConfig("cifar-stem3", "The 3x3 stem beats the 7x7 stem on CIFAR-10", "cifar10-resnet18_stem3",
                "cifar10-resnet18", "a_better"),
    ClaimConfig("mobilenet-device", "MobileNetV2 runs faster on a device", "digits-mobilenet_v2", "digits-resnet18",
                "a_better", metric="latency_cpu_b1_1t_ms", better="lower"),
)

# run: (dataset, model, seeds, pretrained, classes, best_val, test_top1, sec/epoch, evaluated); the three
# numbers are one per seed (a tuple) or shared by every seed.
RUNS = {
    "digits-resnet18": ("digits", "resnet18", (0, 1), None, DIGITS, (0.96, 0.95), (0.97, 0.95), (1.0, 1.2), True),
    "digits-resnet18_stem3": ("digits", "resnet18_stem3", (0,), None, DIGITS, 0.98, 0.985, 3.0, True),
    "digits-mobilenet_v2": ("digits", "mobilenet_v2", (0,), None, DIGITS, 0.92, 0.93, 0.8, True),
    "cifar10-resnet18": ("cifar10", "resnet18", (0,), None, CIFAR, 0.80, None, 41.5, False),
    "butterflies-resnet18-imagenet": ("butterflies", "resnet18", (0,), "imagenet", BUTTERFLIES, 0.90, 0.88, 60.0,
                                      True),
    "butterflies_clean-resnet18-imagenet": ("butterflies_clean", "resnet18", (0,), "imagenet", CLEAN, 0.94, 0.93,
                                            57.0, True),
}
DIGITS_RUNS = [r for r in RUNS if r.startswith("digits")]
PARAMS = {"resnet18": 11_181_642, "resnet18_stem3": 11_200_000, "mobilenet_v2": 2_236_682}


# ------------------------------------------------------------------ fixture writers


def write_train(live: Path, run: str, dataset: str, model: str, seed: int, pretrained, best_val: float,
                sec: float, epochs: int = 6) -> None:
    """One seed's train/ directory (DVCLive's params.yaml, metrics.json and TSV curves), as the train stage
    writes it."""
    rng = np.random.default_rng(zlib.crc32(f"{run}/{seed}".encode()))
    (live / "plots" / "metrics" / "train").mkdir(parents=True)
    (live / "plots" / "metrics" / "val").mkdir(parents=True)
    train_cfg = dataclasses.asdict(TrainConfig(epochs=epochs, seed=seed, pretrained=pretrained))
    (live / "params.yaml").write_text(yaml.safe_dump(
        {"run": run, "suite": "demo", "dataset": dataset, "model": model,
         "model_family": "mobilenet_v2" if model.startswith("mobilenet") else "resnet", "train": train_cfg},
        sort_keys=False))
    t = np.arange(epochs)
    val_acc = best_val * (1 - 0.5 * np.exp(-t / 1.5))
    curves = {"train/acc": np.minimum(val_acc + 0.03, 1.0), "val/acc": val_acc,
              "train/loss": 2.0 * np.exp(-t / 2) + 1.1 - best_val, "val/loss": 2.1 * np.exp(-t / 2) + 1.2 - best_val,
              "lr": 0.1 * (1 - t / epochs), "epoch_seconds": sec + 0.05 * rng.standard_normal(epochs)}
    for series, values in curves.items():
        basename = series.split("/")[-1]
        rows = [f"{1700000000000 + i}\t{i}\t{v:.6f}" for i, v in enumerate(values)]
        tsv = live / "plots" / "metrics" / f"{series}.tsv"
        tsv.write_text(f"timestamp\tstep\t{basename}\n" + "\n".join(rows) + "\n")
    cuda = dataset != "digits"
    metrics = {
        "train": {"loss": float(curves["train/loss"][-1]), "acc": float(curves["train/acc"][-1])},
        "val": {"loss": float(curves["val/loss"][-1]), "acc": float(val_acc[-1])},
        "lr": float(curves["lr"][-1]), "epoch_seconds": float(curves["epoch_seconds"][-1]), "step": epochs - 1,
        "best_val_acc": best_val, "final_val_acc": float(val_acc[-1]), "sec_per_epoch": sec,
        "train_seconds": round(sec * epochs, 2),
        "images_per_sec": round(1500 / sec, 1), "peak_mem_mb": 812.4 if cuda else 1523.0,
        "peak_mem_kind": "cuda_max_allocated" if cuda else "cpu_peak_rss", "params": PARAMS.get(model, 1_000_000),
        "flops_per_image": 1_820_000_000 if dataset.startswith("butterflies") else 35_600_000,
        "device": "NVIDIA H100 80GB HBM3" if cuda else "cpu", "epochs": epochs,
        "train_load_max": 1.2, "cpus": 16 if cuda else 2,  # a quiet machine: the load stayed under its CPUs
    }
    (live / "metrics.json").write_text(json.dumps(metrics, indent=4))


def write_eval(out: Path, classes: list[str], ids: list[str], true: np.ndarray, pred: np.ndarray,
               confidence: np.ndarray, runner_up: np.ndarray | None = None) -> None:
    """One seed's eval/ directory, as the evaluate stage writes it, from the indices of true and predicted classes.

    scores.npz gives the predicted class `confidence` and `runner_up` (when given) most of the rest.
    """
    out.mkdir(parents=True)
    names = np.array(classes)
    n, c = len(true), len(classes)
    pd.DataFrame({"index": np.arange(n), "id": ids, "true": names[true], "predicted": names[pred],
                  "confidence": confidence.round(4)}).to_csv(out / "predictions.csv", index=False)
    p, r, f, s = precision_recall_fscore_support(true, pred, labels=np.arange(c), zero_division=0)
    pd.DataFrame({"class": classes, "precision": p, "recall": r, "f1": f, "support": s}).round(5).to_csv(
        out / "per_class.csv", index=False)
    probs = np.repeat(((1 - confidence) / (c - 1))[:, None], c, axis=1)
    if runner_up is not None:
        probs[np.arange(n), runner_up] = (1 - confidence) * 0.9
    probs[np.arange(n), pred] = confidence
    np.savez_compressed(out / "scores.npz", ids=np.array(ids), classes=names, probs=probs.astype(np.float16))
    correct = int((true == pred).sum())
    low, high = proportion_confint(correct, n, alpha=0.05, method="wilson")
    (out / "metrics.json").write_text(json.dumps({
        "test_top1": correct / n, "test_top1_ci_low": low, "test_top1_ci_high": high,
        "test_top5": min(1.0, correct / n + 0.02), "test_macro_f1": round(float(f.mean()), 4), "test_loss": 0.3,
        "test_top1_tta": correct / n + 0.002, "num_test": n, "num_classes": c}))


def write_run(root: Path, run: str, dataset: str, model: str, seed: int, pretrained, classes: list[str],
              best_val: float, test_top1: float | None, sec: float, evaluated: bool, epochs: int = 6) -> None:
    """One seed of a run, `root/<run>/seed<seed>/`: train/ always, eval/ when evaluated, with `test_top1` of
    its images right (wrong answers chosen at random, seeded by run and seed)."""
    write_train(root / run / "train" / f"seed{seed}", run, dataset, model, seed, pretrained, best_val, sec, epochs)
    if not evaluated:
        return
    rng = np.random.default_rng(zlib.crc32(f"{run}/{seed}".encode()))
    per = 5 if len(classes) > 20 else 40
    true = np.repeat(np.arange(len(classes)), per)
    pred = true.copy()
    # Wrong answers cluster on a few pairs (and on the noisy classes), so the confused pairs are visible.
    wrong = rng.choice(len(true), size=int(round((1 - test_top1) * len(true))), replace=False)
    weights = np.array([4.0 if classes[t] in NOISY else 1.0 for t in true[wrong]])
    pred[wrong] = (true[wrong] + 1 + (rng.random(len(wrong)) < 0.3) * rng.integers(1, 3, len(wrong))) % len(classes)
    pred[wrong[weights > 1]] = (true[wrong[weights > 1]] + 1) % len(classes)
    # Image ids name the class: the same image keeps its id in a dataset that drops other classes.
    ids = [f"{classes[t]}/img{i % per:02d}.jpg" for i, t in enumerate(true)]
    write_eval(root / run / "eval" / f"seed{seed}", classes, ids, true, pred, rng.uniform(0.3, 1.0, len(true)))
    write_inference(root / run / "eval" / f"seed{seed}", model, seed, PARAMS.get(model, 1_000_000), dataset != "digits")


# Batch-1 latency with 1 thread per model, ms: MobileNetV2 slower than ResNet18, as measured at small sizes.
LATENCY_MS = {"resnet18": 5.0, "resnet18_stem3": 13.0, "mobilenet_v2": 12.0}


def write_inference(out: Path, model: str, seed: int, params: int, cuda: bool) -> None:
    """eval/inference.json as evaluate writes it (the fields of cnnbench.evaluation.latency.InferenceCost)."""
    one = LATENCY_MS.get(model, 8.0) + 0.5 * seed  # replicates measure a little apart
    calls = np.random.default_rng(seed).normal(one, 0.05 * one, 60).round(4)  # the timed calls behind the median
    (out / "inference.json").write_text(json.dumps({
        "latency_cpu_b1_1t_samples_ms": list(calls - np.median(calls) + one),
        "latency_cpu_b1_all_samples_ms": list(0.6 * (calls - np.median(calls) + one)),
        "image_size": 16, "params": params, "weights_bytes": 4 * params + 30_000, "cpu": "Test CPU @ 2.0GHz",
        "threads_all": 2, "load_average": 0.5 + seed, "latency_calls": 60, "latency_cpu_b1_1t_ms": one,
        "latency_cpu_b1_1t_p95_ms": 1.5 * one, "latency_cpu_b1_all_ms": 0.6 * one, "latency_cpu_b1_all_p95_ms": one,
        "throughput_cpu_batch": 32, "throughput_cpu_ips": round(3000 / one, 1), "torch": "2.14.1",
        "gpu": "NVIDIA H100 80GB HBM3" if cuda else None,
        "gpu_precision": "bf16 autocast, channels_last" if cuda else None,
        "throughput_gpu_batch": 1024 if cuda else None, "throughput_gpu_ips": 25_000.0 if cuda else None}))


def make_suite(root: Path, runs=None) -> Path:
    """Write every seed of the named runs of RUNS (all of them by default) under `root`; return `root`."""
    for name in runs if runs is not None else RUNS:
        dataset, model, seeds, pretrained, classes, best_val, top1, sec, evaluated = RUNS[name]
        for i, seed in enumerate(seeds):
            write_run(root, name, dataset, model, seed, pretrained, classes, *(
                v[i] if isinstance(v, tuple) else v for v in (best_val, top1, sec)), evaluated)
    return root


# ------------------------------------------------------------------ README readers


def section(readme: str, dataset: str) -> str:
    """The README's `## <dataset>` section, up to the next one."""
    return readme.split(f"\n## {dataset}\n", 1)[1].split("\n## ", 1)[0]


def table(readme: str, dataset: str) -> dict[str, dict[str, str]]:
    """The dataset's markdown table in the README, read by parse_table."""
    return parse_table(section(readme, dataset))


def parse_table(markdown: str) -> dict[str, dict[str, str]]:
    """The first markdown table in `markdown` as {first word of the run cell: {column: cell}}."""
    lines = list(itertools.takewhile(lambda ln: ln.startswith("|"),
                                     itertools.dropwhile(lambda ln: not ln.startswith("|"), markdown.splitlines())))
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0].split()[0].strip("`")] = dict(zip(header, cells))
    return rows


def links(readme: str) -> list[str]:
    """Every markdown link target in the README."""
    return re.findall(r"\]\(([^)]+)\)", readme)
