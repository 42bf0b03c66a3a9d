"""The report's per-dataset figures: what each draws from the runs, and its wording."""

from __future__ import annotations

import pandas as pd

from cnnbench.report.figures import confused_pairs


def test_confused_pairs_are_off_diagonal_and_sorted():
    preds = pd.DataFrame({"run": "r", "true": list("aaabbc"), "predicted": list("abbaac")})
    pairs = confused_pairs(preds, "r")
    assert list(zip(pairs["true"], pairs["predicted"], pairs["count"])) == [("a", "b", 2), ("b", "a", 2)]
