"""The report's per-dataset figures: what each draws from the runs, and its wording."""

from __future__ import annotations

import pandas as pd
import pytest

from cnnbench.params.config import ReportConfig
from cnnbench.report import render_report
from cnnbench.report.figures import (
    confused_pairs,
    plot_acc_vs_latency,
    plot_confused_pairs,
    plot_family_curves,
    plot_per_class,
)
from cnnbench.report.runs import load_runs
from cnnbench.report.tables import group_replicates
from report_fixtures import DATASETS, DIGITS_RUNS, make_suite


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """The digits runs of the fake suite: ResNets (one with two seeds) and a MobileNetV2."""
    return load_runs(make_suite(tmp_path_factory.mktemp("runs"), DIGITS_RUNS))


@pytest.fixture(scope="module")
def runs(digits):
    """One row per run, as the figures take them."""
    return group_replicates(digits.runs)


def legend_texts(fig) -> list[str]:
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes)]
    return [t.get_text() for legend in legends if legend is not None for t in legend.get_texts()]


def test_confused_pairs_are_off_diagonal_and_sorted():
    preds = pd.DataFrame({"run": "r", "true": list("aaabbc"), "predicted": list("abbaac")})
    pairs = confused_pairs(preds, "r")
    assert list(zip(pairs["true"], pairs["predicted"], pairs["count"])) == [("a", "b", 2), ("b", "a", 2)]


def test_family_figure_is_titled_with_the_declared_display_names(digits, runs):
    names = {"resnet": "Residual", "mobilenet_v2": "Inverted residual"}
    fig = plot_family_curves(digits.mean_curves(), runs, "digits", names)
    assert fig._suptitle.get_text() == "digits: Residual (blues) vs Inverted residual (oranges), per epoch"
    labels = legend_texts(fig)
    assert labels.index("resnet18 (resnet18)") < labels.index("mobilenet_v2 (mobilenet_v2)")


def test_family_without_a_display_name_shows_its_key_in_alphabetical_order(digits, runs):
    fig = plot_family_curves(digits.mean_curves(), runs, "digits", {})
    assert fig._suptitle.get_text() == "digits: mobilenet_v2 (blues) vs resnet (oranges), per epoch"


def test_one_family_alone_has_no_family_figure(digits, runs):
    resnets = runs[runs["family"] == "resnet"]
    assert plot_family_curves(digits.mean_curves(), resnets, "digits", {"resnet": "ResNet"}) is None


def test_highlight_legends_use_the_declared_label():
    per_class = pd.DataFrame({"run": "r", "class": ["a", "b"], "precision": 0.5, "recall": [0.4, 0.9],
                              "f1": 0.5, "support": 10})
    fig = plot_per_class(per_class, "r", "toy", {"a"}, "hard for people")
    assert legend_texts(fig) == ["hard for people", "other classes"]
    pairs = pd.DataFrame({"true": ["a", "b"], "predicted": ["b", "c"], "count": [3, 1]})
    fig = plot_confused_pairs(pairs, "r", "toy", {"a"}, "hard for people")
    assert legend_texts(fig) == ["true or predicted class: hard for people"]


def test_report_wording_comes_from_params_not_the_study(tmp_path):
    runs = make_suite(tmp_path / "runs", DIGITS_RUNS)
    cfg = ReportConfig(highlight_classes=("3",), highlight_label="hard for people", family_names={"resnet": "Residual"})
    readme = render_report(runs, tmp_path / "out", cfg, "demo", DATASETS, tmp_path / "none").read_text()
    assert ("**Residual vs mobilenet_v2 training curves (mean over seeds)** ([figures/digits_family_curves.png]"
            in readme)
    assert (tmp_path / "out" / "figures" / "digits_family_curves.png").is_file()
    assert "MobileNetV2" not in readme and "ResNet" not in readme and "noisy" not in readme


def test_accuracy_vs_latency_plots_the_one_thread_latency(digits):
    groups = group_replicates(digits.runs)
    fig = plot_acc_vs_latency(groups, "digits")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "batch-1 inference latency on the CPU, 1 thread (ms, median)"
    assert ax.get_title() == "digits: test top-1 vs batch-1 CPU latency"
    unmeasured = groups.assign(latency_cpu_b1_1t_ms=float("nan"))
    assert plot_acc_vs_latency(unmeasured, "digits") is None
