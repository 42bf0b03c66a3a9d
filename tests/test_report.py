"""The suite report: README tables, sentences and figures, from runs written in the stages' real formats.

The fixture is a fake suite under tmp_path, in exactly the files train (DVCLive) and evaluate
write: digits runs (two seeds of one config, a ResNet and a MobileNetV2), a cifar10 run that is
trained but not evaluated, and butterflies / butterflies_clean (100 and 94 classes).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from sklearn.metrics import precision_recall_fscore_support

from cnnbench.cli import stage_main
from cnnbench.config import ReportConfig, TrainConfig
from cnnbench.errors import CnnbenchError
from cnnbench.report import confused_pairs, load_runs, render_report

ROOT = Path(__file__).resolve().parents[1]
NOISY = ["BLUE SPOTTED CROW", "CLEARWING MOTH", "COMMON BANDED AWL", "COPPER TAIL",
         "HUMMING BIRD HAWK MOTH", "SIXSPOT BURNET MOTH"]
BUTTERFLIES = sorted(NOISY + [f"SPECIES {i:02d} {'LONG ' * (i % 3)}NAME" for i in range(94)])
CLEAN = [c for c in BUTTERFLIES if c not in NOISY]
DIGITS = [str(i) for i in range(10)]
CIFAR = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
REFERENCE = {"digits-resnet18_stem3": {"sec_per_epoch": 40, "best_val_acc": 0.761},
             "cifar10-resnet18": {"sec_per_epoch": 186, "best_val_acc": 0.846}}
REPORT_CFG = ReportConfig(highlight_classes=tuple(NOISY), reference=REFERENCE)

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


def make_suite(root: Path, runs=None) -> Path:
    for name in runs if runs is not None else RUNS:
        write_run(root, name, *RUNS[name])
    return root


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> tuple[Path, str]:
    base = tmp_path_factory.mktemp("suite")
    runs = make_suite(base / "reports" / "runs" / "demo")
    data = base / "reports" / "data"
    data.mkdir()
    (data / "digits.json").write_text("{}")
    Image.new("RGB", (10, 10)).save(data / "digits_samples.png")
    out = base / "reports" / "demo"
    readme = render_report(runs, out, REPORT_CFG, "demo", data_reports_dir=data)
    return out, readme.read_text()


def section(readme: str, dataset: str) -> str:
    return readme.split(f"\n## {dataset}\n", 1)[1].split("\n## ", 1)[0]


def table(readme: str, dataset: str) -> dict[str, dict[str, str]]:
    """The dataset's markdown table as {first word of the run cell: {column: cell}}."""
    lines = [ln for ln in section(readme, dataset).splitlines() if ln.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0].split()[0].strip("`")] = dict(zip(header, cells))
    return rows


def links(readme: str) -> list[str]:
    return re.findall(r"\]\(([^)]+)\)", readme)


# ------------------------------------------------------------------ loading


def test_load_runs_reads_every_file_and_keeps_class_names_as_strings(tmp_path):
    data = load_runs(make_suite(tmp_path))
    assert sorted(data.runs.index) == sorted(RUNS)
    assert data.runs.at["cifar10-resnet18", "best_val_acc"] == pytest.approx(0.80)
    assert np.isnan(data.runs.at["cifar10-resnet18", "test_top1"])  # trained, not yet evaluated
    assert data.runs.at["butterflies-resnet18-imagenet", "pretrained"] == "imagenet"
    val = data.curves[(data.curves["run"] == "digits-resnet18") & (data.curves["series"] == "val/acc")]
    assert list(val["epoch"]) == [1, 2, 3, 4, 5, 6]
    assert data.classes("digits-resnet18") == DIGITS  # "0".."9" stay strings
    assert set(data.predictions["true"]) == set(DIGITS) | set(BUTTERFLIES)


def test_load_runs_of_a_missing_directory_is_empty(tmp_path):
    data = load_runs(tmp_path / "nothing")
    assert len(data.runs) == 0 and data.datasets == []


def test_broken_metrics_file_is_a_user_error(tmp_path):
    make_suite(tmp_path, ["digits-resnet18"])
    (tmp_path / "digits-resnet18" / "eval" / "metrics.json").write_text("{not json")
    with pytest.raises(CnnbenchError, match="eval/metrics.json"):
        load_runs(tmp_path)


def test_confused_pairs_are_off_diagonal_and_sorted():
    preds = pd.DataFrame({"run": "r", "true": list("aaabbc"), "predicted": list("abbaac")})
    pairs = confused_pairs(preds, "r")
    assert list(zip(pairs["true"], pairs["predicted"], pairs["count"])) == [("a", "b", 2), ("b", "a", 2)]


# ------------------------------------------------------------------ the README


def test_table_rows_hold_the_formatted_numbers(rendered):
    _, readme = rendered
    rows = table(readme, "digits")
    stem3 = rows["digits-resnet18_stem3"]
    assert stem3["model"] == "resnet18_stem3"
    assert stem3["pretrained"] == "no"
    assert stem3["params (M)"] == "11.20"
    assert stem3["FLOPs/image"] == "35.6 M"
    assert stem3["peak memory (MB)"] == "1,523 CPU RSS"
    assert stem3["s/epoch"] == "3.00"
    assert stem3["images/s"] == "500"
    assert stem3["best val acc (%)"] == "98.00"
    assert stem3["test top-1 (%)"] == "98.50"
    assert stem3["top-5 (%)"] == "100.00"
    assert stem3["macro-F1"] == "0.975"
    assert stem3["device"] == "cpu"
    bfly = table(readme, "butterflies")["butterflies-resnet18-imagenet"]
    assert bfly["FLOPs/image"] == "1.82 G"
    assert bfly["peak memory (MB)"] == "812 GPU allocated"
    assert bfly["pretrained"] == "imagenet"


def test_replicates_are_one_row_with_mean_and_std(rendered):
    _, readme = rendered
    rows = table(readme, "digits")
    assert "digits-resnet18-s1" not in rows
    row = rows["digits-resnet18"]
    assert "n=2" in row["run"] and "seeds 0, 1" in row["run"]
    assert row["test top-1 (%)"] == "96.00 ± 1.41"
    assert row["s/epoch"] == "1.10 ± 0.14"
    assert row["params (M)"] == "11.18"
    assert "`digits-resnet18` (n=2) averages `digits-resnet18`, `digits-resnet18-s1`." in readme


def test_reference_columns_beside_our_figures(rendered):
    _, readme = rendered
    digits = table(readme, "digits")
    assert digits["digits-resnet18_stem3"]["study s/epoch"] == "40.00"
    assert digits["digits-resnet18_stem3"]["study acc (%)"] == "76.10"
    assert digits["digits-mobilenet_v2"]["study s/epoch"] == ""
    cifar = table(readme, "cifar10")["cifar10-resnet18"]
    assert cifar["study s/epoch"] == "186" and cifar["study acc (%)"] == "84.60"
    assert cifar["s/epoch"] == "41.50" and cifar["test top-1 (%)"] == ""  # not evaluated: blank
    assert "study s/epoch" not in section(readme, "butterflies")


def test_best_model_and_trade_off_sentences(rendered):
    _, readme = rendered
    digits = section(readme, "digits")
    assert "**Best by test top-1:** `digits-resnet18_stem3` (resnet18_stem3, 98.50 %)" in digits
    assert "the fastest run, `digits-mobilenet_v2`, takes 0.80 s/epoch for 93.00 %" in digits
    assert "`digits-resnet18_stem3`, takes 3.00 s/epoch (3.8× as long) for 98.50 % (+5.50 points)" in digits
    assert "No run is evaluated on the test split yet" in section(readme, "cifar10")
    assert "`dvc repro report@demo`" in readme


def test_every_linked_file_exists_and_figures_are_sensible_pngs(rendered):
    out, readme = rendered
    targets = links(readme)
    figures = sorted(t for t in targets if t.startswith("figures/"))
    assert set(figures) == {f"figures/{p.name}" for p in (out / "figures").iterdir()}
    for target in targets:
        assert (out / target).is_file(), target
    for target in figures:
        with Image.open(out / target) as image:
            assert image.format == "PNG"
            width, height = image.size
            assert 500 <= width <= 3000 and 300 <= height <= 4000, (target, image.size)
    names = {Path(f).name for f in figures}
    assert {"digits_val_acc.png", "digits_acc_vs_time.png", "digits_resnet_vs_mobilenet.png", "digits_confusion.png",
            "butterflies_per_class.png", "butterflies_confused_pairs.png", "cifar10_val_acc.png",
            "noisy_classes_effect.png"} <= names


def test_figures_without_data_are_neither_drawn_nor_linked(rendered):
    out, readme = rendered
    for absent in ("cifar10_confusion.png", "butterflies_resnet_vs_mobilenet.png", "butterflies_confusion.png",
                   "digits_per_class.png", "cifar10_per_class.png"):
        assert absent not in readme
        assert not (out / "figures" / absent).exists()


def test_data_report_links_are_relative_to_the_readme(rendered):
    _, readme = rendered
    assert "[data-cleaning report](../data/digits.json)" in section(readme, "digits")
    assert "[sample images](../data/digits_samples.png)" in section(readme, "digits")
    assert "../data/cifar10" not in readme  # not there: not linked


def test_dropping_classes_section_compares_the_paired_runs(rendered):
    out, readme = rendered
    effect = readme.split("## Effect of dropping classes", 1)[1]
    assert "`butterflies_clean` is `butterflies` without some classes (6 classes dropped: BLUE SPOTTED CROW" in effect
    assert "| resnet18-imagenet | 88.00 | 93.00 | +5.00 |" in effect
    assert json.loads((out / "metrics.json").read_text())["digits-resnet18"]["test_top1"] == 0.97


def test_no_pair_no_effect_figure_and_subset_renders_with_stale_figures_removed(tmp_path):
    runs = make_suite(tmp_path / "runs", DIGITS_RUNS)
    out = tmp_path / "out"
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "butterflies_per_class.png").write_bytes(b"stale")
    readme = render_report(runs, out, REPORT_CFG, "demo", data_reports_dir=tmp_path / "none").read_text()
    assert not (out / "figures" / "butterflies_per_class.png").exists()
    assert "noisy_classes_effect" not in readme and "## butterflies" not in readme
    assert sorted(p.name for p in (out / "figures").iterdir()) == [
        "digits_acc_vs_time.png", "digits_confusion.png", "digits_resnet_vs_mobilenet.png", "digits_val_acc.png"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left behind


def test_run_without_eval_or_curves_still_appears(tmp_path):
    runs = make_suite(tmp_path / "runs", ["digits-mobilenet_v2"])
    (tmp_path / "runs" / "digits-mobilenet_v2" / "eval" / "metrics.json").unlink()
    for tsv in (tmp_path / "runs" / "digits-mobilenet_v2" / "train" / "plots").rglob("*.tsv"):
        tsv.unlink()
    readme = render_report(runs, tmp_path / "out", REPORT_CFG, "demo").read_text()
    row = table(readme, "digits")["digits-mobilenet_v2"]
    assert row["test top-1 (%)"] == "" and row["best val acc (%)"] == "92.00"
    assert "digits_val_acc.png" not in readme


def test_zero_runs_say_how_to_produce_them(tmp_path):
    out = tmp_path / "out"
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "old.png").write_bytes(b"stale")
    readme = render_report(tmp_path / "runs", out, REPORT_CFG, "offline").read_text()
    assert "No runs of suite `offline` have metrics yet" in readme
    assert "dvc repro report@offline" in readme
    assert list((out / "figures").iterdir()) == []
    assert json.loads((out / "metrics.json").read_text()) == {}


# ------------------------------------------------------------------ the stage


def _stage_module():
    spec = importlib.util.spec_from_file_location("report_stage", ROOT / "stages" / "report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_stage_renders_the_suite_into_its_dir(tmp_path, monkeypatch):
    params = tmp_path / "params.yaml"
    params.write_text((ROOT / "params.yaml").read_text())
    make_suite(tmp_path / "reports" / "runs" / "offline", ["digits-resnet18_stem3"])
    monkeypatch.chdir(tmp_path)
    assert _stage_module().main(["offline", "--params", str(params)]) == 0
    readme = (tmp_path / "reports" / "README.md").read_text()  # suites.offline.dir is `reports`
    assert "# cnnbench report: suite `offline`" in readme and "## digits" in readme
    assert "`dvc repro report@offline`" in readme and "`reports/runs/offline/`" in readme
    assert (tmp_path / "reports" / "figures" / "digits_confusion.png").is_file()
    assert (tmp_path / "reports" / "metrics.json").is_file()


def test_stage_unknown_suite_is_one_line_and_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        stage_main(_stage_module().main, ["nope", "--params", str(ROOT / "params.yaml")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err.startswith("error: ") and "unknown suite 'nope'" in err and len(err.strip().splitlines()) == 1


def test_stage_script_runs_as_a_command(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "stages" / "report.py"), "offline", "--params", "missing.yaml"],
                            cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.startswith("error: missing.yaml: no such file") and "Traceback" not in result.stderr
