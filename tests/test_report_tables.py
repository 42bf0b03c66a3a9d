"""Tables and sentences: one dataset's runs as the markdown table and the trade-off sentence the README shows."""

from __future__ import annotations

import pytest

from cnnbench.evaluation.stats import accuracy_interval
from cnnbench.report.compare import Comparisons, dataset_comparisons, recipe_intervals
from cnnbench.report.runs import load_runs
from cnnbench.report.tables import (
    dataset_summary,
    dataset_table,
    fmt,
    group_replicates,
    inference_table,
    interval_note,
    suite_metrics,
    suite_timings,
)
from report_fixtures import REFERENCE, make_suite, parse_table


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The whole fake suite, loaded."""
    return load_runs(make_suite(tmp_path_factory.mktemp("runs")))


@pytest.fixture(scope="module")
def groups(data):
    """dataset -> its runs, one row per run (seeds averaged)."""
    book = Comparisons(data.predictions)
    return {dataset: recipe_intervals(group_replicates(data.of_dataset(dataset)), book) for dataset in data.datasets}


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
    assert stem3["epochs"] == "6" and stem3["training (s)"] == "18.00"  # 6 epochs of 3 s: the whole training
    assert stem3["images/s"] == "500"
    assert stem3["best val acc (%)"] == "98.00"
    assert stem3["test top-1 (%)"] == "98.5 (96.8 … 99.3) †"  # 394/400: Wilson's interval, test sampling only
    assert stem3["top-5 (%)"] == "100.00"
    assert stem3["macro-F1"] == "0.985"  # from its predictions
    assert stem3["device"] == "cpu"
    bfly = rows(groups, "butterflies")["butterflies-resnet18-imagenet"]
    assert bfly["FLOPs/image"] == "1.82 G"
    assert bfly["peak memory (MB)"] == "812 GPU allocated"
    assert bfly["pretrained"] == "imagenet"


def test_a_runs_seeds_are_one_row_with_the_recipe_interval_of_top1_and_std_of_the_rest(data, groups):
    digits = rows(groups, "digits")
    row = digits["digits-resnet18"]
    assert "n=2" in row["run"] and "seeds 0, 1" in row["run"]
    # over seeds and test images, from each seed's predictions; with 2 seeds (1 df) its top end is cut at 100
    interval = accuracy_interval(Comparisons(data.predictions).outcomes("digits-resnet18").correct)
    assert interval.high == 1.0 and interval.n == 2
    assert row["test top-1 (%)"] == f"96.0 ({100 * interval.low:.1f} … 100.0)"
    assert row["s/epoch"] == "1.10 ± 0.14"
    assert row["epochs"] == "6" and row["training (s)"].startswith("6.60 ± ")  # one config; times vary by seed
    assert row["params (M)"] == "11.18"
    assert "† one seed: Wilson's interval over the test images, which covers test sampling only" in \
        interval_note(groups["digits"])
    assert "over seeds and test images both" in interval_note(groups["digits"])
    assert "over seeds and test images" not in interval_note(groups["butterflies"])
    assert interval_note(groups["cifar10"]) == ""


def test_reference_columns_beside_our_figures(groups):
    digits = rows(groups, "digits")
    assert digits["digits-resnet18_stem3"]["study s/epoch"] == "40.00"
    assert digits["digits-resnet18_stem3"]["study acc (%)"] == "76.10"
    assert digits["digits-mobilenet_v2"]["study s/epoch"] == ""
    cifar = rows(groups, "cifar10")["cifar10-resnet18"]
    assert cifar["study s/epoch"] == "186" and cifar["study acc (%)"] == "84.60"
    assert cifar["s/epoch"] == "41.50" and cifar["test top-1 (%)"] == ""  # not evaluated: blank
    assert "study s/epoch" not in dataset_table(groups["butterflies"], REFERENCE)


def test_trade_off_sentence_says_whether_the_gain_is_beyond_noise(data, groups):
    comparisons, _ = dataset_comparisons(Comparisons(data.predictions), list(groups["digits"]["run"]))
    digits = dataset_summary(groups["digits"], comparisons)
    assert "the fastest run, `digits-mobilenet_v2`, takes 0.80 s/epoch for 93.0 %" in digits
    # one seed a side: the gain is shown, and no verdict is given on it
    assert ("`digits-resnet18_stem3`, takes 3.00 s/epoch (3.8× as long) for 98.5 % (undecided, needs seeds: 1 and 1, "
            "at least 3 a side: difference +5.5 points)") in digits
    beats = comparisons.assign(low=0.03, high=0.08, beyond_noise=True, verdict="greater")
    assert "for 98.5 % (difference +5.5 points, 95 % interval +3.0 … +8.0)" in dataset_summary(groups["digits"], beats)
    within = beats.assign(low=-0.01, beyond_noise=False, verdict="within noise")
    assert "(within noise: difference +5.5 points, 95 % interval −1.0 … " in dataset_summary(groups["digits"], within)
    assert "(not compared image by image)" in dataset_summary(groups["digits"])
    assert dataset_summary(groups["cifar10"]) == ""  # nothing evaluated: no trade-off to state


def test_suite_metrics_keep_only_measured_numbers(tmp_path):
    data = load_runs(make_suite(tmp_path, ["digits-resnet18", "cifar10-resnet18"]))
    metrics = suite_metrics(recipe_intervals(group_replicates(data.runs), Comparisons(data.predictions)))
    assert metrics["digits-resnet18"]["test_top1"] == 0.96 and metrics["digits-resnet18"]["seeds"] == 2
    assert metrics["digits-resnet18"]["test_top1_ci_low"] < 0.96 < metrics["digits-resnet18"]["test_top1_ci_high"]
    assert "test_top1" not in metrics["cifar10-resnet18"] and metrics["cifar10-resnet18"]["params"] > 0


def test_wall_clock_figures_stay_out_of_the_metrics_dvc_diffs(tmp_path):
    groups = group_replicates(load_runs(make_suite(tmp_path, ["digits-resnet18"])).runs)
    metrics, timings = suite_metrics(groups)["digits-resnet18"], suite_timings(groups)["digits-resnet18"]
    clock = {"sec_per_epoch", "train_seconds", "images_per_sec", "peak_mem_mb"}
    assert not clock & set(metrics) and {"sec_per_epoch", "images_per_sec", "peak_mem_mb"} <= set(timings)


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


@pytest.mark.parametrize("value, kind, cell", [
    (1320.4, "sec", "1,320"), (186.0, "sec", "186"), (8.4147, "sec", "8.41"), (0.95, "pct", "95.00"),
    (1234567.0, "num", "1,234,567"), (12.345, "num", "12.3"), (0.5, "num", "0.500"), (0.0000123, "num", "0.0000123"),
    (-0.0456, "num", "-0.0456"), (0.0, "num", "0"),
])
def test_cells_are_never_in_scientific_notation(value, kind, cell):
    assert fmt(value, kind=kind) == cell
