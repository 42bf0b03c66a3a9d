"""Dataset pairs: datasets pair only as params.yaml declares them (same images, more classes dropped)."""

from __future__ import annotations

import dataclasses

import pytest
from report_fixtures import CIFAR, DATASETS, NOISY, REPORT_CFG, RUNS, make_suite, write_run

from cnnbench.config import DatasetConfig
from cnnbench.report.pairs import find_dataset_pairs, plot_dataset_pairs
from cnnbench.report.runs import load_runs

BUTTERFLY_RUNS = ["butterflies-resnet18-imagenet", "butterflies_clean-resnet18-imagenet"]


@pytest.fixture(scope="module")
def butterflies(tmp_path_factory):
    """The evaluated butterflies and butterflies_clean runs of the fake suite."""
    return load_runs(make_suite(tmp_path_factory.mktemp("runs"), BUTTERFLY_RUNS))


def test_declared_pair_lists_the_dropped_classes_and_matches_runs(butterflies):
    [pair] = find_dataset_pairs(butterflies, DATASETS)
    assert (pair.full, pair.reduced, pair.dropped) == ("butterflies", "butterflies_clean", NOISY)
    assert pair.settings == [("resnet18-imagenet", *BUTTERFLY_RUNS)]


def test_declared_pair_needs_no_evaluation(tmp_path):
    for run in BUTTERFLY_RUNS:
        *spec, _ = RUNS[run]
        write_run(tmp_path, run, *spec, evaluated=False)
    [pair] = find_dataset_pairs(load_runs(tmp_path), DATASETS)
    assert pair.dropped == NOISY


def test_cifar10_and_cifar100_never_pair_despite_the_shared_prefix(tmp_path):
    cifar100 = [f"class {i:02d}" for i in range(100)]
    for dataset, classes in (("cifar10", CIFAR), ("cifar100", cifar100)):
        for evaluated in (False, True):
            run = f"{dataset}-resnet18{'-eval' if evaluated else ''}"
            write_run(tmp_path, run, dataset, "resnet18", int(evaluated), None, classes, 0.8, 0.8, 40.0, evaluated)
    datasets = {"cifar10": DATASETS["cifar10"], "cifar100": DatasetConfig("cifar100", "cifar100", 32)}
    assert find_dataset_pairs(load_runs(tmp_path), datasets) == []


@pytest.mark.parametrize("change", [
    {"butterflies_clean": None},                                            # undeclared
    {"butterflies_clean": {"image_size": 128}},                             # other images
    {"butterflies_clean": {"split_seed": 1}},                               # another split
    {"butterflies_clean": {"drop_classes": ()}},                            # drops nothing more
    {"butterflies": {"drop_classes": ("SPECIES 00 NAME",)}},                # not a superset
], ids=["undeclared", "image_size", "split_seed", "same_classes", "not_a_superset"])
def test_datasets_not_declared_as_one_minus_classes_do_not_pair(butterflies, change):
    datasets = dict(DATASETS)
    for name, fields in change.items():
        if fields is None:
            del datasets[name]
        else:
            datasets[name] = dataclasses.replace(datasets[name], **fields)
    assert find_dataset_pairs(butterflies, datasets) == []


def test_pairs_figure_names_the_dropped_classes_by_the_highlight_label(butterflies):
    pairs = find_dataset_pairs(butterflies, DATASETS)
    highlight = set(REPORT_CFG.highlight_classes)
    fig = plot_dataset_pairs(pairs, butterflies.runs, highlight, "hard for people")
    assert fig._suptitle.get_text() == "Effect of dropping classes (hard for people) on test top-1 accuracy"
    fig = plot_dataset_pairs(pairs, butterflies.runs, highlight - {NOISY[0]}, "hard for people")
    assert fig._suptitle.get_text() == "Effect of dropping some classes on test top-1 accuracy"
