"""Loading a suite's runs: every file the train and evaluate stages write, read back as tables."""

from __future__ import annotations

import numpy as np
import pytest
from report_fixtures import BUTTERFLIES, DIGITS, RUNS, make_suite

from cnnbench.errors import CnnbenchError
from cnnbench.report.runs import load_runs


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


def test_inference_cost_is_loaded_under_its_stable_names(tmp_path):
    make_suite(tmp_path, ["digits-resnet18", "digits-mobilenet_v2", "cifar10-resnet18"])
    (tmp_path / "digits-mobilenet_v2" / "eval" / "inference.json").write_text(
        '{"measured": false, "reason": "evaluate.inference is false in params.yaml"}')
    runs = load_runs(tmp_path).runs
    assert runs.at["digits-resnet18", "latency_cpu_b1_1t_ms"] == pytest.approx(5.0)
    assert runs.at["digits-resnet18", "latency_cpu_b1_all_ms"] == pytest.approx(3.0)
    assert runs.at["digits-resnet18", "weights_bytes"] == 4 * 11_181_642 + 30_000
    assert runs.at["digits-resnet18", "inference_cpu"] == "Test CPU @ 2.0GHz"
    # switched off, or not evaluated yet: blank, not an error
    assert np.isnan(runs.at["digits-mobilenet_v2", "latency_cpu_b1_1t_ms"])
    assert np.isnan(runs.at["cifar10-resnet18", "latency_cpu_b1_1t_ms"])
