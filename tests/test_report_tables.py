"""Tables and sentences: one dataset's runs as the markdown table and the summary the README shows."""

from __future__ import annotations

import pytest
from report_fixtures import REFERENCE, make_suite, parse_table

from cnnbench.report.runs import load_runs
from cnnbench.report.tables import dataset_summary, dataset_table, group_replicates, inference_table, suite_metrics


@pytest.fixture(scope="module")
def groups(tmp_path_factory):
    """dataset -> its runs grouped into replicates, from the whole fake suite."""
    data = load_runs(make_suite(tmp_path_factory.mktemp("runs")))
    return {dataset: group_replicates(data.of_dataset(dataset)) for dataset in data.datasets}


def rows(groups, dataset: str) -> dict[str, dict[str, str]]:
    return parse_table(dataset_table(groups[dataset], REFERENCE))


def test_table_rows_hold_the_formatted_numbers(groups):
    stem3 = rows(groups, "digits")["digits-resnet18_stem3"]
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
    bfly = rows(groups, "butterflies")["butterflies-resnet18-imagenet"]
    assert bfly["FLOPs/image"] == "1.82 G"
    assert bfly["peak memory (MB)"] == "812 GPU allocated"
    assert bfly["pretrained"] == "imagenet"


def test_replicates_are_one_row_with_mean_and_std(groups):
    digits = rows(groups, "digits")
    assert "digits-resnet18-s1" not in digits
    row = digits["digits-resnet18"]
    assert "n=2" in row["run"] and "seeds 0, 1" in row["run"]
    assert row["test top-1 (%)"] == "96.00 ± 1.41"
    assert row["s/epoch"] == "1.10 ± 0.14"
    assert row["params (M)"] == "11.18"


def test_reference_columns_beside_our_figures(groups):
    digits = rows(groups, "digits")
    assert digits["digits-resnet18_stem3"]["study s/epoch"] == "40.00"
    assert digits["digits-resnet18_stem3"]["study acc (%)"] == "76.10"
    assert digits["digits-mobilenet_v2"]["study s/epoch"] == ""
    cifar = rows(groups, "cifar10")["cifar10-resnet18"]
    assert cifar["study s/epoch"] == "186" and cifar["study acc (%)"] == "84.60"
    assert cifar["s/epoch"] == "41.50" and cifar["test top-1 (%)"] == ""  # not evaluated: blank
    assert "study s/epoch" not in dataset_table(groups["butterflies"], REFERENCE)


def test_best_model_and_trade_off_sentences(groups):
    digits = dataset_summary(groups["digits"])
    assert "**Best by test top-1:** `digits-resnet18_stem3` (resnet18_stem3, 98.50 %)" in digits
    assert "the fastest run, `digits-mobilenet_v2`, takes 0.80 s/epoch for 93.00 %" in digits
    assert "`digits-resnet18_stem3`, takes 3.00 s/epoch (3.8× as long) for 98.50 % (+5.50 points)" in digits
    assert "No run is evaluated on the test split yet" in dataset_summary(groups["cifar10"])


def test_suite_metrics_keep_only_measured_numbers(tmp_path):
    metrics = suite_metrics(load_runs(make_suite(tmp_path, ["digits-resnet18", "cifar10-resnet18"])).runs)
    assert metrics["digits-resnet18"]["test_top1"] == 0.97
    assert "test_top1" not in metrics["cifar10-resnet18"] and metrics["cifar10-resnet18"]["best_val_acc"] == 0.8


def test_inference_table_shows_latency_with_its_p95_size_and_throughput(groups):
    digits = parse_table(inference_table(groups["digits"]))
    resnet = digits["digits-resnet18"]  # two seeds measured 5.0 and 5.5 ms
    assert resnet["batch-1 latency, 1 thread (ms)"] == "5.25 ± 0.35 (p95 7.88)"
    assert resnet["batch-1 latency, 2 threads (ms)"] == "3.15 ± 0.21 (p95 5.25)"
    assert resnet["weights (MB)"] == "44.8" and resnet["params (M)"] == "11.18"
    assert digits["digits-mobilenet_v2"]["CPU images/s"] == "250 (batch 32)"
    assert "GPU images/s" not in digits["digits-mobilenet_v2"]  # measured on the CPU only
    bfly = parse_table(inference_table(groups["butterflies"]))["butterflies-resnet18-imagenet"]
    assert bfly["GPU images/s"] == "25,000 (batch 1024)"
    assert inference_table(groups["cifar10"]) is None  # not evaluated, not measured
