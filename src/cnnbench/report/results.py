"""`cnnbench results`: a suite's comparison in the terminal, at most 120 columns, from what its stages wrote.

Per dataset: each run's test top-1 with its 95 % interval (over seeds and test images), seconds per
epoch, and every pair of runs with the difference, its interval and the verdict, computed as the
report computes them (report.compare: the calibrated rule, Holm over the dataset's pairs). The README
the report stage renders says the same at length, with figures; this is the view to read after a run.
"""

from __future__ import annotations

import math
import textwrap

import pandas as pd

from cnnbench.report.compare import (
    VERDICT_RULE_DOC,
    Comparisons,
    dataset_comparisons,
    recipe_intervals,
    verdict_words,
)
from cnnbench.report.runs import RunsData
from cnnbench.report.tables import fmt, group_replicates, points, short_run_name

WIDTH = 120


def suite_results(data: RunsData) -> dict[str, dict]:
    """Per dataset: its runs (top-1, interval, seeds, s/epoch) and its pairs, as plain data (`--json`)."""
    book = Comparisons(data.predictions)
    out = {}
    for dataset in data.datasets:
        groups = recipe_intervals(group_replicates(data.of_dataset(dataset)), book)
        pairs, alone = dataset_comparisons(book, list(groups.index))
        runs = [{"run": run, "seeds": g["seeds"], "test_top1": _number(g["test_top1"]),
                 "top1_low": _number(g["top1_low"]), "top1_high": _number(g["top1_high"]),
                 "sec_per_epoch": _number(g["sec_per_epoch"])} for run, g in groups.iterrows()]
        out[dataset] = {"runs": runs, "pairs": [_pair(r) for _, r in pairs.iterrows()], "not_compared": alone}
    return out


def format_results(results: dict[str, dict]) -> str:
    """The text view of suite_results: two small tables per dataset."""
    blocks = []
    for dataset, found in results.items():
        runs = sorted(found["runs"], key=lambda r: (-(r["test_top1"] or -1), r["run"]))
        rows = [(short_run_name(r["run"], dataset), ", ".join(map(str, r["seeds"])), fmt(r["test_top1"], kind="pct"),
                 f"{fmt(r['top1_low'], kind='pct')} … {fmt(r['top1_high'], kind='pct')}"
                 if r["top1_low"] is not None else "",
                 fmt(r["sec_per_epoch"] if r["sec_per_epoch"] is not None else math.nan, kind="sec"))
                for r in runs]
        lines = [f"{dataset}: {len(runs)} run{'s' if len(runs) != 1 else ''}", *text_table(
            ("run", "seeds", "test top-1 %", "95 % interval", "s/epoch"), rows)]
        if found["pairs"]:
            pairs = [(short_run_name(p["a"], dataset), short_run_name(p["b"], dataset),
                      f"{p['seeds_a']} vs {p['seeds_b']}", points(p["diff"]),
                      f"{points(p['low'])} … {points(p['high'])}" if p["low"] is not None else "", p["verdict"])
                     for p in found["pairs"]]
            lines += ["", *text_table(("A", "B", "seeds", "A − B", "95 % interval", "verdict"), pairs)]
        if found["not_compared"]:
            lines += ["", textwrap.fill("Not compared (no other run scored the same test images): "
                                        + ", ".join(found["not_compared"]), WIDTH)]
        blocks.append("\n".join(lines))
    blocks.append(textwrap.fill(
        "Test top-1's interval and A − B's are over training seeds and test images; A beats B only when the "
        "Holm-adjusted p-value over the dataset's pairs is under 0.05, and a pair with under 3 seeds a side is "
        f"undecided ({VERDICT_RULE_DOC}). Seconds per epoch are this machine's at the time.", WIDTH))
    return "\n\n".join(blocks)


def _pair(row: pd.Series) -> dict:
    return {"a": row["a"], "b": row["b"], "seeds_a": int(row["seeds_a"]), "seeds_b": int(row["seeds_b"]),
            "diff": float(row["diff"]), "low": _number(row["low"]), "high": _number(row["high"]),
            "p_holm": _number(row["p_holm"]), "verdict": verdict_words(row)}


def text_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    """Left-aligned columns two spaces apart, one line per row under the header."""
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header, *rows]]


def _number(value) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)
