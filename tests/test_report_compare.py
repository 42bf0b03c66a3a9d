"""Comparisons in the report: a winner is named only with seeds enough and beyond noise, Holm-corrected over a
table, and the numbers can be recomputed from the predictions the runs wrote."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex
from scipy.stats import ttest_ind

from cnnbench.core.errors import CnnbenchError
from cnnbench.evaluation.stats import holm
from cnnbench.report import compare as compare_module
from cnnbench.report import render_report
from cnnbench.report.compare import NOISE, Comparisons, compare_runs, dataset_comparisons, plot_comparisons
from cnnbench.report.runs import load_runs
from report_fixtures import CLAIMS, DATASETS, DIGITS, DIGITS_RUNS, REPORT_CFG, make_suite, section, write_run

NUMBER = r"[+\u2212]\d+\.\d"


def render(tmp_path, runs: dict[str, tuple[tuple[int, ...], tuple[float, ...], int]]) -> str:
    """The digits section of a report over `runs` (name: seeds, test top-1 per seed, epochs), written as the
    stages write them."""
    for name, (seeds, top1s, epochs) in runs.items():
        for seed, top1 in zip(seeds, top1s):
            write_run(tmp_path / "runs", name, "digits", "resnet18", seed, None, DIGITS, 0.9, top1, 1.0, True, epochs)
    readme = render_report(tmp_path / "runs", tmp_path / "out", REPORT_CFG, "demo", DATASETS, tmp_path / "none")
    return section(readme.read_text(), "digits")


def correct(tmp_path, run: str) -> np.ndarray:
    """The run's per-image correctness, (seeds, images), read straight from its predictions.csv files."""
    rows = []
    for path in sorted((tmp_path / "runs" / run).glob("eval/seed*/predictions.csv")):
        table = pd.read_csv(path, dtype=str)
        rows.append((table["true"] == table["predicted"]).to_numpy())
    return np.vstack(rows)


def signed(text: str) -> float:
    return float(text.replace("\u2212", "-"))


def test_one_seed_a_side_gets_no_verdict_and_says_how_many_seeds_would_decide(tmp_path):
    digits = render(tmp_path, {"digits-resnet18-a": ((0,), (0.95,), 6), "digits-resnet18-b": ((1,), (0.90,), 6)})
    assert "` beats `" not in digits and "Most accurate" not in digits and "A beats B |" not in digits
    assert "`digits-resnet18-a` and `digits-resnet18-b` are undecided, needs seeds: 1 and 1, at least 3 a side " \
           "(difference +5.0 points, no interval)" in digits
    assert "| `digits-resnet18-a` | `digits-resnet18-b` | 1 vs 1 | +5.0 |  |  | undecided: needs seeds |" in digits


def test_two_seed_sets_of_one_recipe_are_within_noise_and_the_sentence_gives_the_interval(tmp_path):
    digits = render(tmp_path, {"digits-resnet18-a": ((0, 1, 2), (0.95, 0.94, 0.955), 6),
                               "digits-resnet18-b": ((3, 4, 5), (0.945, 0.95, 0.94), 6)})
    assert "` beats `" not in digits and "Most accurate" not in digits
    sentence = re.search(rf"`digits-resnet18-a` and `digits-resnet18-b` are within noise \(difference ({NUMBER}) "
                         rf"points, 95 % interval ({NUMBER}) … ({NUMBER}); Holm-adjusted p = ([0-9.e-]+)", digits)
    assert sentence, digits
    diff, low, high = (signed(g) for g in sentence.groups()[:3])
    a, b = correct(tmp_path, "digits-resnet18-a"), correct(tmp_path, "digits-resnet18-b")
    assert diff == pytest.approx(100 * (a.mean() - b.mean()), abs=0.05)
    assert low < 0 < high and float(sentence.group(4)) > 0.05
    assert re.search(r"\| `digits-resnet18-a` \| `digits-resnet18-b` \| 3 vs 3 \| .* \| within noise", digits)
    assert "in test top-1 it does not beat `digits-resnet18-b`" in digits  # the trade-off sentence too


def test_a_clearly_worse_recipe_is_named_with_a_statistic_wider_than_seeds_alone(tmp_path):
    digits = render(tmp_path, {"digits-resnet18": ((0, 1, 2), (0.97, 0.96, 0.975), 12),
                               "digits-resnet18-1epoch": ((0, 1, 2), (0.70, 0.72, 0.69), 1)})
    assert re.search(r"\*\*Most accurate:\*\* `digits-resnet18` \(96\.8 %, 95 % interval \d\d\.\d … \d\d\.\d\) beats "
                     r"every other run", digits), digits
    row = re.search(rf"\| `digits-resnet18` \| `digits-resnet18-1epoch` \| 3 vs 3 \| ({NUMBER}) \| ({NUMBER}) … "
                    rf"({NUMBER}) \| (\S+) \| A beats B \|", digits)
    assert row, digits
    diff, low, high = (signed(g) for g in row.groups()[:3])
    p_printed = float(row.group(4))
    a, b = correct(tmp_path, "digits-resnet18"), correct(tmp_path, "digits-resnet18-1epoch")
    assert diff == pytest.approx(100 * (a.mean() - b.mean()), abs=0.05)
    # Welch's t on the seeds' accuracies alone is the narrowest the rule can be: test sampling widens it
    welch = ttest_ind(a.mean(axis=1), b.mean(axis=1), equal_var=False)
    ci = welch.confidence_interval(0.95)
    assert high - low >= 100 * (ci.high - ci.low) - 0.1 and p_printed >= 0.95 * welch.pvalue
    assert 0 < low < diff < high and p_printed < 0.05


def test_a_table_of_pairs_is_corrected_with_holm(tmp_path):
    """Four recipes, six pairs: a pair whose own p-value is under 5 % but whose Holm-adjusted one is not is
    within noise; the table prints the adjusted value beside the verdict."""
    rng = np.random.default_rng(0)
    rows = []
    for run, accuracy in (("r-a", 0.94), ("r-b", 0.93), ("r-c", 0.925), ("r-d", 0.92)):
        for seed in range(3):
            right = rng.random(1000) < accuracy + rng.normal(0, 0.004)
            rows += [(run, seed, i, f"img{i}", "x", "x" if ok else "y", 0.9) for i, ok in enumerate(right)]
    predictions = pd.DataFrame(rows, columns=["run", "seed", "index", "id", "true", "predicted", "confidence"])
    table = compare_runs(Comparisons(predictions), ["r-a", "r-b", "r-c", "r-d"])
    assert list(table["p_holm"]) == pytest.approx(holm(list(table["pvalue"])))
    assert (table["p_holm"] >= table["pvalue"]).all()
    corrected = table[(table["pvalue"] < 0.05) & (table["p_holm"] >= 0.05)]
    assert len(corrected), table[["a", "b", "pvalue", "p_holm"]]
    assert set(corrected["verdict"]) == {"within noise"}
    assert (table.loc[table["p_holm"] < 0.05, "verdict"] == "greater").all()


def test_each_pair_is_computed_once_however_many_sections_show_it(tmp_path, monkeypatch):
    calls = []
    original = compare_module.recipe_difference
    monkeypatch.setattr(compare_module, "recipe_difference", lambda *a, **k: calls.append(1) or original(*a, **k))
    make_suite(tmp_path / "runs", DIGITS_RUNS)
    render_report(tmp_path / "runs", tmp_path / "out", REPORT_CFG, "demo", DATASETS, tmp_path / "none", CLAIMS[:1])
    assert len(calls) == 3  # three digits runs, three pairs: the table, sentences, figure and claim share them


def test_runs_on_other_test_images_are_never_compared(tmp_path):
    write_run(tmp_path, "digits-a", "digits", "resnet18", 0, None, DIGITS, 0.9, 0.95, 1.0, True)
    write_run(tmp_path, "digits-b", "digits", "resnet18", 0, None, DIGITS[:5], 0.9, 0.95, 1.0, True)
    comparisons, alone = dataset_comparisons(Comparisons(load_runs(tmp_path).predictions), ["digits-a", "digits-b"])
    assert len(comparisons) == 0 and alone == ["digits-a", "digits-b"]


def test_seeds_of_one_run_on_other_images_are_a_user_error(tmp_path):
    write_run(tmp_path, "digits-a", "digits", "resnet18", 0, None, DIGITS, 0.9, 0.95, 1.0, True)
    write_run(tmp_path, "digits-a", "digits", "resnet18", 1, None, DIGITS[:5], 0.9, 0.95, 1.0, True)
    with pytest.raises(CnnbenchError, match="seed 1 was evaluated on other test images than seed 0"):
        dataset_comparisons(Comparisons(load_runs(tmp_path).predictions), ["digits-a"])


def test_the_figure_draws_each_pair_against_zero_greys_those_within_noise_and_hollows_the_undecided():
    comparisons = pd.DataFrame({"a": ["digits-x"] * 3, "b": ["digits-y", "digits-z", "digits-w"],
                                "diff": [0.05, 0.01, 0.02], "low": [0.02, -0.01, np.nan], "high": [0.08, 0.03, np.nan],
                                "beyond_noise": [True, False, False]})
    fig = plot_comparisons(comparisons, "digits")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["x \u2212 y", "x \u2212 z", "x \u2212 w"]
    assert any(list(line.get_xdata()) == [0, 0] for line in ax.get_lines())
    dots = [line for line in ax.get_lines() if line.get_marker() == "o"]
    colours = [to_hex(line.get_color()) for line in dots]
    assert colours[1] == NOISE and colours[0] != NOISE
    assert to_hex(dots[2].get_markerfacecolor()) == "#ffffff"  # undecided: hollow, no interval
    assert plot_comparisons(comparisons.iloc[:0], "digits") is None
