"""A fake suite of runs in the stages' real formats, and readers of the rendered README, for the report tests.

Plain functions and constants (no pytest here), so every tests/test_report*.py can import them.
The suite under `root` holds exactly the files train (DVCLive) and evaluate write: digits runs
(two seeds of one config, a ResNet and a MobileNetV2), a cifar10 run that is trained but not
evaluated, and butterflies / butterflies_clean (100 and 94 classes).
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

from cnnbench.config import DatasetConfig, ReportConfig, TrainConfig

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

# run: (dataset, model, seed, pretrained, classes, best_val, test_top1, sec/epoch, evaluated)
RUNS = {
    "digits-resnet18": ("digits", "resnet18", 0, None, DIGITS, 0.96, 0.97, 1.0, True),
    "digits-resnet18-s1": ("digits", "resnet18", 1, None, DIGITS, 0.95, 0.95, 1.2, True),
    "digits-resnet18_stem3": ("digits", "resnet18_stem3", 0, None, DIGITS, 0.98, 0.985, 3.0, True),
    "digits-mobilenet_v2": ("digits", "mobilenet_v2", 0, None, DIGITS, 0.92, 0.93, 0.8, True),
    "cifar10-resnet18": ("cifar10", "resnet18", 0, None, CIFAR, 0.80, None, 41.5, False),
    "butterflies-resnet18-imagenet": ("butterflies", "resnet18", 0, "imagenet", BUTTERFLIES, 0.90, 0.88, 60.0, True),
    "butterflies_clean-resnet18-imagenet": ("butterflies_clean", "resnet18", 0, "imagenet", CLEAN, 0.94, 0.93,
                                            57.0, True),
}
DIGITS_RUNS = [r for r in RUNS if r.startswith("digits")]


# ------------------------------------------------------------------ fixture writers


def write_run(root: Path, run: str, dataset: str, model: str, seed: int, pretrained, classes: list[str],
              best_val: float, test_top1: float | None, sec: float, evaluated: bool, epochs: int = 6) -> None:
    """One run's train/ (DVCLive) and eval/ files, exactly as the stages write them."""
    rng = np.random.default_rng(zlib.crc32(run.encode()))
    live = root / run / "train"
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
    params = {"resnet18": 11_181_642, "resnet18_stem3": 11_200_000, "mobilenet_v2": 2_236_682}[model]
    cuda = dataset != "digits"
    metrics = {
        "train": {"loss": float(curves["train/loss"][-1]), "acc": float(curves["train/acc"][-1])},
        "val": {"loss": float(curves["val/loss"][-1]), "acc": float(val_acc[-1])},
        "lr": float(curves["lr"][-1]), "epoch_seconds": float(curves["epoch_seconds"][-1]), "step": epochs - 1,
        "best_val_acc": best_val, "final_val_acc": float(val_acc[-1]), "sec_per_epoch": sec,
        "images_per_sec": round(1500 / sec, 1), "peak_mem_mb": 812.4 if cuda else 1523.0,
        "peak_mem_kind": "cuda_max_allocated" if cuda else "cpu_peak_rss", "params": params,
        "flops_per_image": 1_820_000_000 if dataset.startswith("butterflies") else 35_600_000,
        "device": "NVIDIA H100 80GB HBM3" if cuda else "cpu", "epochs": epochs,
    }
    (live / "metrics.json").write_text(json.dumps(metrics, indent=4))
    if not evaluated:
        return
    out = root / run / "eval"
    out.mkdir(parents=True)
    per = 5 if len(classes) > 20 else 36
    true = np.repeat(np.arange(len(classes)), per)
    pred = true.copy()
    # Wrong answers cluster on a few pairs (and on the noisy classes), so the confused pairs are visible.
    wrong = rng.choice(len(true), size=int(round((1 - test_top1) * len(true))), replace=False)
    weights = np.array([4.0 if classes[t] in NOISY else 1.0 for t in true[wrong]])
    pred[wrong] = (true[wrong] + 1 + (rng.random(len(wrong)) < 0.3) * rng.integers(1, 3, len(wrong))) % len(classes)
    pred[wrong[weights > 1]] = (true[wrong[weights > 1]] + 1) % len(classes)
    names = np.array(classes)
    pd.DataFrame({"index": np.arange(len(true)), "id": [f"img{i:04d}.jpg" for i in range(len(true))],
                  "true": names[true], "predicted": names[pred],
                  "confidence": rng.uniform(0.3, 1.0, len(true)).round(4)}).to_csv(out / "predictions.csv", index=False)
    p, r, f, s = precision_recall_fscore_support(true, pred, labels=np.arange(len(classes)), zero_division=0)
    pd.DataFrame({"class": classes, "precision": p, "recall": r, "f1": f, "support": s}).round(5).to_csv(
        out / "per_class.csv", index=False)
    (out / "metrics.json").write_text(json.dumps({
        "test_top1": test_top1, "test_top5": min(1.0, test_top1 + 0.02), "test_macro_f1": round(test_top1 - 0.01, 4),
        "test_loss": 0.3, "test_top1_tta": test_top1 + 0.002, "num_test": len(true), "num_classes": len(classes)}))
    write_inference(out, model, seed, params, cuda)


# Batch-1 latency with 1 thread per model, ms: MobileNetV2 slower than ResNet18, as measured at small sizes.
LATENCY_MS = {"resnet18": 5.0, "resnet18_stem3": 13.0, "mobilenet_v2": 12.0}


def write_inference(out: Path, model: str, seed: int, params: int, cuda: bool) -> None:
    """eval/inference.json as evaluate writes it (the fields of cnnbench.inference.InferenceCost)."""
    one = LATENCY_MS[model] + 0.5 * seed  # replicates measure a little apart
    (out / "inference.json").write_text(json.dumps({
        "image_size": 16, "params": params, "weights_bytes": 4 * params + 30_000, "cpu": "Test CPU @ 2.0GHz",
        "threads_all": 2, "load_average": 0.5 + seed, "latency_calls": 60, "latency_cpu_b1_1t_ms": one, "latency_cpu_b1_1t_p95_ms": 1.5 * one,
        "latency_cpu_b1_all_ms": 0.6 * one, "latency_cpu_b1_all_p95_ms": one, "throughput_cpu_batch": 32,
        "throughput_cpu_ips": round(3000 / one, 1), "torch": "2.14.1",
        "gpu": "NVIDIA H100 80GB HBM3" if cuda else None, "gpu_precision": "bf16 autocast, channels_last" if cuda else None,
        "throughput_gpu_batch": 1024 if cuda else None, "throughput_gpu_ips": 25_000.0 if cuda else None}))


def make_suite(root: Path, runs=None) -> Path:
    """Write the named runs of RUNS (all of them by default) under `root`; return `root`."""
    for name in runs if runs is not None else RUNS:
        write_run(root, name, *RUNS[name])
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
