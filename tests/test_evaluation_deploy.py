"""Deployment cost (evaluation/deploy.py): trained weights exported to ONNX agree with PyTorch, int8 keeps its
accuracy in view, ONNX Runtime's latency is timed beside eager's, and without the deploy extra everything says so."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cnnbench.data.arrays import load_prepared, write_prepared
from cnnbench.data.fetch import fetch_source
from cnnbench.data.prepare import prepare_dataset
from cnnbench.evaluation.deploy import DEPLOY_SIZE, RUNTIMES, deploy, latencies, unavailable
from cnnbench.evaluation.latency import Repeats
from cnnbench.evaluation.predict import INFERENCE, NOT_ASKED, evaluate_replicates, evaluate_run, load_model
from cnnbench.evaluation.stats import timing_ratio
from cnnbench.models.specs import parse_model_spec
from cnnbench.params.config import (
    AugmentConfig,
    DatasetConfig,
    EvaluateConfig,
    NearDuplicatesConfig,
    RunConfig,
    SourceConfig,
    TrainConfig,
)
from cnnbench.report.runs import DEPLOY_KEYS
from cnnbench.report.tables import deployment_table
from cnnbench.training.checkpoint import BEST
from cnnbench.training.loop import train_run
from fixtures import TINY_RESNET

ROOT = Path(__file__).resolve().parents[1]
QUICK = Repeats(warmup=1, warmup_seconds=0.0, calls=6, min_calls=6, seconds=0.0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(prepared digits at 16 px, a run dir with the best.pt of a 3-epoch tiny ResNet): real weights."""
    base = tmp_path_factory.mktemp("deploy")
    fetch_source(SourceConfig("digits", "sklearn:digits", "npz"), base / "raw")
    cfg = DatasetConfig("digits", "digits", image_size=16, val_fraction=0.1, test_fraction=0.2, split_seed=0,
                        near_duplicates=NearDuplicatesConfig(max_distance=0))  # as params.yaml's digits
    write_prepared(prepare_dataset(cfg, base / "raw"), base / "prepared")
    run = RunConfig("tiny", "offline", "digits", "tiny",
                    TrainConfig(epochs=3, batch_size=64, lr=0.2, augment=AugmentConfig(pad=1, flip=False)))
    train_run(run, parse_model_spec("tiny", TINY_RESNET), base / "prepared", base / "run", base / "live",
              device="cpu", progress=False)
    return base / "prepared", base / "run"


def test_evaluate_records_the_deployed_model_beside_pytorch(trained, tmp_path):
    data_dir, run_dir = trained
    metrics = evaluate_run(run_dir / BEST, data_dir, tmp_path, EvaluateConfig(inference_cpu_batch=8), device="cpu")
    record = json.loads((tmp_path / INFERENCE).read_text())
    assert record["deployment_measured"] is True and record["deploy_size"] == DEPLOY_SIZE == 224
    # The fp32 export is the same function: it picks PyTorch's class on every test image.
    assert record["onnx_top1_agreement"] >= 0.999 and record["onnx_max_abs_logit_diff"] < 1e-3
    assert record["onnx_test_top1"] == pytest.approx(metrics["test_top1"], abs=1 / metrics["num_test"])
    # int8 is another function: its accuracy is reported beside fp32's, whatever it is.
    assert 0 <= record["int8_test_top1"] <= 1 and 0 < record["int8_top1_agreement"] <= 1
    for key in ("ort", "ort_int8", "cpu_224", "ort_224", "ort_int8_224"):
        samples = record[f"latency_{key}_b1_1t_samples_ms"]
        assert record[f"latency_{key}_b1_1t_ms"] == pytest.approx(np.median(samples), abs=1e-3)
        assert len(samples) >= 3 and min(samples) > 0
    assert not set(metrics) & set(record)  # timings and agreements stay out of metrics.json
    assert set(DEPLOY_KEYS) <= set(record)  # the names the report loads are the ones written


def test_the_onnx_export_agrees_with_pytorch_on_every_test_image(trained, tmp_path):
    from cnnbench.evaluation.deploy import normalized, run_session, session

    data_dir, run_dir = trained
    model, ckpt = load_model(run_dir / BEST, torch.device("cpu"))
    test = load_prepared(data_dir, splits=("test",)).splits["test"]
    x = normalized(test.x, ckpt.mean, ckpt.std)
    deployed = deploy(model, ckpt.image_size, tmp_path, calibration=None)
    with torch.inference_mode():
        expected = model(torch.from_numpy(x)).numpy()
    got = run_session(session(deployed.fp32, 1), x, batch=7)  # batches of any size: the batch axis is dynamic
    assert got.shape == expected.shape == (len(test.y), 10)
    assert np.abs(got - expected).max() < 1e-3
    assert (got.argmax(1) == expected.argmax(1)).mean() >= 0.999


def test_latencies_time_every_model_runtime_and_thread_count_in_turn(trained, tmp_path):
    data_dir, run_dir = trained
    model, ckpt = load_model(run_dir / BEST, torch.device("cpu"))
    calibration = np.random.default_rng(0).standard_normal((4, 3, 16, 16)).astype(np.float32)
    a, b = (deploy(model, 16, tmp_path / name, calibration) for name in "ab")
    times = latencies([a, b], 16, threads=(1, 2), runtimes=RUNTIMES, repeats=QUICK)
    for per_model in times:
        assert sorted(per_model) == sorted((r, n) for r in RUNTIMES for n in (1, 2))
        assert all(len(t) == 6 and (t > 0).all() for t in per_model.values())


def test_a_latency_ratio_comes_with_an_interval_that_holds_it():
    rng = np.random.default_rng(0)
    slow, fast = 10 + rng.random(40), 5 + rng.random(40)
    ratio, low, high = timing_ratio(fast, slow)
    assert low < ratio < high and low > 0.45 and high < 0.58
    assert np.isnan(timing_ratio(fast[:3], slow)[1])  # too few calls: no interval


def test_cost_compares_runtimes_side_by_side_with_ratio_intervals():
    proc = subprocess.run([sys.executable, "-m", "cnnbench.cli", "--params", str(ROOT / "params.yaml"), "cost",
                           "resnet18", "mobilenet_v2", "--image-size", "16", "--runtime", "eager", "onnxruntime",
                           "onnxruntime-int8", "--threads", "1", "--repeats", "6", "--json"],
                          capture_output=True, text=True, timeout=600, env={**__import__("os").environ,
                                                                            "PYTHONPATH": str(ROOT / "src")})
    assert proc.returncode == 0, proc.stderr
    rows = pd.DataFrame(json.loads(proc.stdout)["rows"])
    assert sorted(set(zip(rows["model"], rows["runtime"]))) == sorted(
        (m, r) for m in ("resnet18", "mobilenet_v2") for r in RUNTIMES)
    other = rows[rows["model"] == "mobilenet_v2"]
    assert (other["ratio_low"] <= other["ratio_to_resnet18"]).all()
    assert (other["ratio_to_resnet18"] <= other["ratio_high"]).all()
    assert (rows["calls"] == 6).all() and (rows["median_ms"] > 0).all()


def test_without_the_deploy_extra_evaluate_and_the_report_say_it_was_not_measured(trained, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as where it is not installed
    assert unavailable() == "onnxruntime not installed (pip install -e '.[deploy]')"
    data_dir, run_dir = trained
    evaluate_run(run_dir / BEST, data_dir, tmp_path, EvaluateConfig(inference_cpu_batch=8), device="cpu")
    record = json.loads((tmp_path / INFERENCE).read_text())
    assert record["deployment_measured"] is False
    assert record["deployment_reason"] == "onnxruntime not installed (pip install -e '.[deploy]')"
    assert record["latency_cpu_b1_1t_ms"] > 0  # the eager figures are still there


def test_a_run_that_does_not_ask_for_deployment_says_so_and_keeps_its_eager_figures(trained, tmp_path):
    data_dir, run_dir = trained
    (run_dir / "seed0").mkdir(exist_ok=True)
    (run_dir / "seed0" / BEST).write_bytes((run_dir / BEST).read_bytes())
    run = RunConfig("tiny", "offline", "digits", "tiny", TrainConfig(), seeds=(0,), deploy=False)
    evaluate_replicates(run, data_dir, run_dir, tmp_path, EvaluateConfig(inference_cpu_batch=8), device="cpu")
    record = json.loads((tmp_path / "seed0" / INFERENCE).read_text())
    assert (record["deployment_measured"], record["deployment_reason"]) == (False, NOT_ASKED)
    assert record["latency_cpu_b1_1t_ms"] > 0 and not any(key.startswith(("onnx", "int8")) for key in record)


def test_the_deployment_table_shows_each_runtime_and_the_agreement():
    groups = pd.DataFrame([{"run": "d-mobilenet", "model": "mobilenet_v2", "n": 1, "test_top1": 0.97,
                            "latency_cpu_b1_1t_ms": 9.0, "latency_ort_b1_1t_ms": 2.5, "latency_ort_int8_b1_1t_ms": 2.0,
                            "latency_cpu_224_b1_1t_ms": 40.0, "latency_ort_224_b1_1t_ms": 12.0,
                            "latency_ort_int8_224_b1_1t_ms": 8.0, "onnx_top1_agreement": 1.0,
                            "onnx_test_top1": 0.97, "int8_test_top1": 0.95}]).set_index("run", drop=False)
    table = deployment_table(groups).splitlines()
    assert table[0].startswith("| run | model | eager (ms) | ONNX Runtime (ms) | int8 (ms) | eager, 224 px (ms)")
    assert "| 9.00 | 2.50 | 2.00 | 40.00 | 12.00 | 8.00 | 100.00 | 95.00 (97.00) |" in table[2]
