"""Paired comparisons in the report: a winner is named only beyond noise, and the numbers can be recomputed
from the predictions the runs wrote."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex
from report_fixtures import DATASETS, DIGITS, REPORT_CFG, section, write_run
from scipy.stats import binomtest

from cnnbench.errors import CnnbenchError
from cnnbench.report import render_report
from cnnbench.report.compare import NOISE, dataset_comparisons, plot_comparisons
from cnnbench.report.runs import load_runs

NUMBER = r"[+\u2212]\d+\.\d"


def render(tmp_path, runs: dict[str, tuple[int, float, int]]) -> str:
    """The digits section of a report over `runs` (name: seed, test top-1, epochs), written as the stages write."""
    for name, (seed, top1, epochs) in runs.items():
        write_run(tmp_path / "runs", name, "digits", "resnet18", seed, None, DIGITS, 0.9, top1, 1.0, True, epochs)
    readme = render_report(tmp_path / "runs", tmp_path / "out", REPORT_CFG, "demo", DATASETS, tmp_path / "none")
    return section(readme.read_text(), "digits")


def correct(tmp_path, run: str) -> np.ndarray:
    """The run's per-image correctness, read straight from its (one seed's) predictions.csv."""
    [path] = (tmp_path / "runs" / run).glob("eval/seed*/predictions.csv")
    table = pd.read_csv(path, dtype=str)
    return (table["true"] == table["predicted"]).to_numpy()


def signed(text: str) -> float:
    return float(text.replace("\u2212", "-"))


def test_two_runs_differing_only_in_seed_have_no_winner_and_the_sentence_gives_the_interval(tmp_path):
    digits = render(tmp_path, {"digits-resnet18-a": (0, 0.95, 6), "digits-resnet18-b": (1, 0.94, 6)})
    assert "` beats `" not in digits and "Most accurate" not in digits and "A beats B |" not in digits
    sentence = re.search(rf"`digits-resnet18-a` and `digits-resnet18-b` are within noise \(difference ({NUMBER}) "
                         rf"points, 95 % interval ({NUMBER}) … ({NUMBER})\)", digits)
    assert sentence, digits
    diff, low, high = (signed(g) for g in sentence.groups())
    assert diff == pytest.approx(100 * (correct(tmp_path, "digits-resnet18-a").mean()
                                        - correct(tmp_path, "digits-resnet18-b").mean()), abs=0.05)
    assert low < 0 < high
    assert "| `digits-resnet18-a` | `digits-resnet18-b` |" in digits and "| within noise |" in digits
    assert "in test top-1 it is within noise of `digits-resnet18-b`." in digits  # the trade-off sentence too


def test_a_clearly_worse_run_is_named_and_the_test_matches_one_computed_by_hand(tmp_path):
    digits = render(tmp_path, {"digits-resnet18": (0, 0.97, 12), "digits-resnet18-1epoch": (0, 0.70, 1)})
    assert re.search(r"\*\*Most accurate:\*\* `digits-resnet18` \(97\.0 %, 95 % interval \d\d\.\d … \d\d\.\d\) beats every other run", digits)
    row = re.search(rf"\| `digits-resnet18` \| `digits-resnet18-1epoch` \| ({NUMBER}) \| ({NUMBER}) … ({NUMBER}) \| "
                    r"(\S+) \| A beats B \|", digits)
    assert row, digits
    diff, low, high = (signed(g) for g in row.groups()[:3])
    p_printed = float(row.group(4))

    a, b = correct(tmp_path, "digits-resnet18"), correct(tmp_path, "digits-resnet18-1epoch")
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))  # the discordant cells of the 2x2 table
    exact = binomtest(min(only_a, only_b), only_a + only_b, 0.5).pvalue
    assert p_printed == pytest.approx(exact, rel=0.05)  # printed to two significant digits
    d = a.astype(float) - b
    assert diff == pytest.approx(100 * d.mean(), abs=0.05)
    half = 100 * 1.96 * d.std(ddof=1) / np.sqrt(len(d))  # the normal approximation of the paired difference
    assert (low, high) == pytest.approx((100 * d.mean() - half, 100 * d.mean() + half), abs=0.6)


def test_runs_on_other_test_images_are_never_compared(tmp_path):
    write_run(tmp_path, "digits-a", "digits", "resnet18", 0, None, DIGITS, 0.9, 0.95, 1.0, True)
    write_run(tmp_path, "digits-b", "digits", "resnet18", 0, None, DIGITS[:5], 0.9, 0.95, 1.0, True)
    comparisons, alone = dataset_comparisons(load_runs(tmp_path).predictions, ["digits-a", "digits-b"])
    assert len(comparisons) == 0 and alone == ["digits-a", "digits-b"]


def test_seeds_of_one_run_on_other_images_are_a_user_error(tmp_path):
    write_run(tmp_path, "digits-a", "digits", "resnet18", 0, None, DIGITS, 0.9, 0.95, 1.0, True)
    write_run(tmp_path, "digits-a", "digits", "resnet18", 1, None, DIGITS[:5], 0.9, 0.95, 1.0, True)
    with pytest.raises(CnnbenchError, match="seed 1 was evaluated on other test images than seed 0"):
        dataset_comparisons(load_runs(tmp_path).predictions, ["digits-a"])


def test_the_figure_draws_each_pair_against_zero_and_greys_those_within_noise():
    comparisons = pd.DataFrame({"a": ["digits-x", "digits-x"], "b": ["digits-y", "digits-z"], "diff": [0.05, 0.01],
                                "low": [0.02, -0.01], "high": [0.08, 0.03], "beyond_noise": [True, False]})
    fig = plot_comparisons(comparisons, "digits")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["x \u2212 y", "x \u2212 z"]
    assert any(list(line.get_xdata()) == [0, 0] for line in ax.get_lines())
    colours = [to_hex(line.get_color()) for line in ax.get_lines() if line.get_marker() == "o"]
    assert colours[1] == NOISE and colours[0] != NOISE
    assert plot_comparisons(comparisons.iloc[:0], "digits") is None
