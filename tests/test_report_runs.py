"""Loading a suite's runs: every file the train and evaluate stages write, per seed, read back as tables."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from cnnbench.core.errors import CnnbenchError
from cnnbench.report.runs import load_runs
from report_fixtures import BUTTERFLIES, DIGITS, RUNS, make_suite


def test_load_runs_reads_every_file_of_every_seed_and_keeps_class_names_as_strings(tmp_path):
    data = load_runs(make_suite(tmp_path))
    assert sorted(set(data.runs["run"])) == sorted(RUNS)
    replicates = data.runs[data.runs["run"] == "digits-resnet18"]
    assert list(replicates["seed"]) == [0, 1] and list(replicates["test_top1"]) == [0.97, 0.95]
    cifar = data.runs[data.runs["run"] == "cifar10-resnet18"].iloc[0]
    assert cifar["best_val_acc"] == pytest.approx(0.80)
    assert np.isnan(cifar["test_top1"])  # trained, not yet evaluated
    assert set(data.runs.loc[data.runs["run"].str.startswith("butterflies"), "pretrained"]) == {"imagenet"}
    val = data.curves[(data.curves["run"] == "digits-resnet18") & (data.curves["series"] == "val/acc")]
    assert list(val["epoch"]) == [1, 2, 3, 4, 5, 6] * 2 and list(val["seed"]) == [0] * 6 + [1] * 6
    assert len(data.mean_curves().query("run == 'digits-resnet18' and series == 'val/acc'")) == 6
    assert data.classes("digits-resnet18") == DIGITS  # "0".."9" stay strings, one seed's
    assert set(data.predictions["true"]) == set(DIGITS) | set(BUTTERFLIES)
    scores = data.scores("digits-resnet18", 1)
    assert scores.probs.shape == (400, 10) and list(scores.classes) == DIGITS
    assert data.scores("cifar10-resnet18", 0) is None


def test_a_run_with_seeds_still_missing_is_its_written_seeds(tmp_path):
    make_suite(tmp_path, ["digits-resnet18"])
    shutil.rmtree(tmp_path / "digits-resnet18" / "eval" / "seed1")
    (tmp_path / "digits-resnet18" / "train" / "seed2").mkdir()  # declared, nothing written yet
    data = load_runs(tmp_path)
    assert list(data.runs["seed"]) == [0, 1] and list(data.runs["has_eval"]) == [True, False]


def test_any_number_in_a_stage_metrics_file_is_a_column(tmp_path):
    make_suite(tmp_path, ["digits-mobilenet_v2"])
    latency = tmp_path / "digits-mobilenet_v2" / "inference" / "seed0"
    latency.mkdir(parents=True)
    (latency / "metrics.json").write_text(json.dumps({"latency_ms_b1": 3.25, "device": "cpu", "seed": 7}))
    row = load_runs(tmp_path).runs.iloc[0]
    assert row["latency_ms_b1"] == 3.25 and row["seed"] == 0  # a stray key never overwrites who the row is


def test_load_runs_of_a_missing_directory_is_empty(tmp_path):
    data = load_runs(tmp_path / "nothing")
    assert len(data.runs) == 0 and data.datasets == []


@pytest.mark.parametrize("path, message", [
    ("eval/metrics.json", "eval/seed0/metrics.json"),
    ("eval/scores.npz", "not a scores file"),
])
def test_broken_files_are_a_user_error(tmp_path, path, message):
    make_suite(tmp_path, ["digits-mobilenet_v2"])
    stage, name = path.split("/")
    (tmp_path / "digits-mobilenet_v2" / stage / "seed0" / name).write_text("{not json")
    with pytest.raises(CnnbenchError, match=message):
        load_runs(tmp_path).scores("digits-mobilenet_v2", 0)


def test_inference_cost_is_loaded_under_its_stable_names(tmp_path):
    make_suite(tmp_path, ["digits-resnet18", "digits-mobilenet_v2", "cifar10-resnet18"])
    (tmp_path / "digits-mobilenet_v2" / "eval" / "seed0" / "inference.json").write_text(
        '{"measured": false, "reason": "evaluate.inference is false in params.yaml"}')
    runs = load_runs(tmp_path).runs.query("seed == 0").set_index("run")
    assert runs.at["digits-resnet18", "latency_cpu_b1_1t_ms"] == pytest.approx(5.0)
    assert runs.at["digits-resnet18", "latency_cpu_b1_all_ms"] == pytest.approx(3.0)
    assert runs.at["digits-resnet18", "weights_bytes"] == 4 * 11_181_642 + 30_000
    assert runs.at["digits-resnet18", "inference_cpu"] == "Test CPU @ 2.0GHz"
    # switched off, or not evaluated yet: blank, not an error
    assert np.isnan(runs.at["digits-mobilenet_v2", "latency_cpu_b1_1t_ms"])
    assert np.isnan(runs.at["cifar10-resnet18", "latency_cpu_b1_1t_ms"])
