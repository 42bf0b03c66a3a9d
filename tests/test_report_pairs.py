"""Dataset pairs: datasets pair only as params.yaml declares them (same images, more classes dropped), and
the two models are compared fairly, on the same images."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
from statsmodels.stats.proportion import proportion_confint

from cnnbench.params.config import ClaimConfig, DatasetConfig
from cnnbench.report.claims import evaluate_claims
from cnnbench.report.compare import Comparisons
from cnnbench.report.pairs import fair_settings, find_dataset_pairs, pairs_section, plot_dataset_pairs
from cnnbench.report.runs import load_runs
from report_fixtures import (
    CIFAR,
    DATASETS,
    NOISY,
    REPORT_CFG,
    RUNS,
    make_suite,
    parse_table,
    write_eval,
    write_run,
    write_train,
)

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
        dataset, model, (seed,), pretrained, classes, best_val, top1, sec, _ = RUNS[run]
        write_run(tmp_path, run, dataset, model, seed, pretrained, classes, best_val, top1, sec, evaluated=False)
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
    book = Comparisons(butterflies.predictions)
    fair = [(pair, fair_settings(pair, butterflies, book)) for pair in find_dataset_pairs(butterflies, DATASETS)]
    highlight = set(REPORT_CFG.highlight_classes)
    fig = plot_dataset_pairs(fair, highlight, "hard for people")
    assert fig._suptitle.get_text() == "Effect of dropping classes (hard for people) on test top-1 accuracy"
    fig = plot_dataset_pairs(fair, highlight - {NOISY[0]}, "hard for people")
    assert fig._suptitle.get_text() == "Effect of dropping some classes on test top-1 accuracy"


# ------------------------------------------------------------------ 10 classes against the same data minus 2


TOY = [f"c{i}" for i in range(10)]
TOY_DATASETS = {"toy": DatasetConfig("toy", "toy", 16, val_fraction=0.1, test_fraction=0.2),
                "toy_clean": DatasetConfig("toy_clean", "toy", 16, val_fraction=0.1, test_fraction=0.2,
                                           drop_classes=("c8", "c9"))}
PER = 40  # test images per class


def write_toy(root, seeds: int = 1):
    """A 10-class run and its 8-class twin, scored on the same images of the 8 shared classes.

    On the 320 shared-class images the full model is right on 256 (80 %); of its 64 mistakes, 32 answer
    a dropped class with the true class as runner-up (restricted to the shared classes: 288, 90 %).
    The reduced model is right on 280 (87.5 %). On the 80 images of the dropped classes the full
    model is always right, so its naive accuracy is 336/400 = 84 %. Seeds after the first get 4 more
    shared-class images wrong each, other ones per seed (a seed spread to measure).
    """
    true = np.repeat(np.arange(10), PER)
    ids = [f"c{t}/img{i % PER:02d}.jpg" for i, t in enumerate(true)]
    shared = np.flatnonzero(true < 8)
    pred, runner_up = true.copy(), (true + 1) % 10
    to_dropped, to_shared = shared[::10], shared[5::10]        # 32 images each
    pred[to_dropped], runner_up[to_dropped] = 8, true[to_dropped]
    pred[to_shared] = (true[to_shared] + 1) % 8
    reduced = true[shared].copy()
    wrong = np.arange(3, 320, 8)                                # 40 images
    reduced[wrong] = (reduced[wrong] + 1) % 8
    for seed in range(seeds):
        extra = shared[(7 + 13 * seed + np.arange(4) * 79) % 320] if seed else np.array([], dtype=int)
        full_seed, reduced_seed = pred.copy(), reduced.copy()
        full_seed[extra] = (true[extra] + 1) % 8
        reduced_seed[np.searchsorted(shared, extra)] = (true[extra] + 2) % 8
        for run, dataset in (("toy-resnet18", "toy"), ("toy_clean-resnet18", "toy_clean")):
            write_train(root / run / "train" / f"seed{seed}", run, dataset, "resnet18", seed, None, 0.9, 1.0)
        write_eval(root / "toy-resnet18" / "eval" / f"seed{seed}", TOY, ids, true, full_seed, np.full(400, 0.6),
                   runner_up)
        write_eval(root / "toy_clean-resnet18" / "eval" / f"seed{seed}", TOY[:8], [ids[i] for i in shared],
                   true[shared], reduced_seed, np.full(320, 0.7))
    return load_runs(root)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """The toy pair with one seed a side."""
    return write_toy(tmp_path_factory.mktemp("toy"))


@pytest.fixture(scope="module")
def toy3(tmp_path_factory):
    """The toy pair with three seeds a side."""
    return write_toy(tmp_path_factory.mktemp("toy3"), seeds=3)


def wilson_cell(correct: int, total: int) -> str:
    low, high = proportion_confint(correct, total, alpha=0.05, method="wilson")
    return f"{100 * correct / total:.1f} ({100 * low:.1f} … {100 * high:.1f})"


def test_both_models_are_scored_on_the_same_images_as_predicted_and_restricted(toy, tmp_path):
    [pair] = find_dataset_pairs(toy, TOY_DATASETS)
    assert (pair.full, pair.reduced, pair.dropped) == ("toy", "toy_clean", ["c8", "c9"])
    section = pairs_section([pair], toy, Comparisons(toy.predictions), tmp_path, set(), "noisy")
    fair_part, naive = section.split("Both models on the same images", 1)[1].split("Not comparable, kept for reference")
    fair = parse_table(fair_part)["resnet18"]
    assert fair["images"] == "320"
    assert fair["full model, as it predicts (%)"] == wilson_cell(256, 320) == "80.0 (75.3 … 84.0)"
    assert fair["full model, answers restricted to the 8 shared classes (%)"] == wilson_cell(288, 320)
    assert fair["reduced model (%)"] == wilson_cell(280, 320)
    # one seed a side: the differences are shown, and no verdict is given on them
    assert fair["reduced − full as it predicts (points, 95 % interval)"] == "+7.5 (undecided: needs seeds)"
    assert fair["reduced − full restricted (points, 95 % interval)"] == "−2.5 (undecided: needs seeds)"
    assert "On the same images, `toy_clean-resnet18` is undecided against `toy-resnet18` restricted to the shared " \
           "classes (difference −2.5 points, no interval; needs seeds: 1 and 1, at least 3 a side)" in section
    assert "| resnet18 | 84.0 | 87.5 | +3.5 |" in naive and "change (points), not comparable" in naive
    assert (tmp_path / "noisy_classes_effect.png").is_file()


def test_a_claim_across_the_pair_is_judged_on_the_restricted_comparison(toy, toy3):
    claim = ClaimConfig("clean", "Dropping c8 and c9 helps", "toy_clean-resnet18", "toy-resnet18", "a_better")
    [result] = evaluate_claims((claim,), toy, TOY_DATASETS, {}, Comparisons(toy.predictions))
    assert result.verdict == "undecided: needs seeds" and result.difference == "−2.5 points (no interval)"
    assert result.ours.startswith("87.5 vs 90.0 % on the 320 test images of the 8 shared classes, `toy-resnet18` "
                                  "restricted to the shared classes")
    book = Comparisons(toy3.predictions)
    [result] = evaluate_claims((claim,), toy3, TOY_DATASETS, {}, book)
    # the same difference the pairs section shows, read from the report's one computation of it
    [setting] = fair_settings(find_dataset_pairs(toy3, TOY_DATASETS)[0], toy3, book)
    assert book.computed == 2  # reduced − full, as predicted and restricted: each once
    assert re.fullmatch(r"−\d\.\d points \(−\d\.\d … [+−]\d\.\d\)", result.difference), result.difference
    assert result.verdict.startswith({"less": "refuted", "greater": "confirmed"}.get(setting.restricted["verdict"],
                                                                                     "within noise"))
    assert result.detectable.endswith(" points")
    [undeclared] = evaluate_claims((claim,), toy, {}, {}, Comparisons(toy.predictions))
    assert undeclared.verdict == "not comparable"
