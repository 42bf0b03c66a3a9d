"""The verdict rule on real runs whose answer is known: many seeds of one recipe (A/A) and of a second one.

Point it at a suite's runs directory where several runs share one recipe (params.yaml runs that differ
only in `seeds:`), name the runs of each recipe, and it draws, from the seeds of all those runs,
random disjoint groups of k seeds a side:

    python bench/aa_control.py reports/runs/aa --same 'aa-s1l3-*' --other 'aa-s1l3e3-*' --draws 2000

It prints the rate at which the rule says "beats" for two groups of the same recipe (nominal 5 %),
the rate under the rule cnnbench used before (a paired bootstrap over test images, seeds pooled:
its normal approximation), 1 seed against 1 seed under that old rule, and the power against the
second recipe. Reads only predictions.csv (evaluate's per-image outcomes).
"""

from __future__ import annotations

import argparse
import fnmatch
import itertools
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from calibration import old_rule_beats  # noqa: E402
from cnnbench.evaluation.stats import GREATER, LESS, decide, recipe_difference  # noqa: E402


def seed_outcomes(runs_dir: Path, pattern: str) -> np.ndarray:
    """(seeds, images) 0/1 of every seed of the runs matching `pattern`, images in one order."""
    rows, ids = [], None
    for path in sorted(runs_dir.glob("*/eval/seed*/predictions.csv")):
        if not fnmatch.fnmatch(path.parts[-4], pattern):
            continue
        table = pd.read_csv(path, dtype={"id": str, "true": str, "predicted": str}).sort_values("index")
        if ids is None:
            ids = tuple(table["id"])
        elif tuple(table["id"]) != ids:
            raise SystemExit(f"{path}: other test images than the first run's")
        rows.append((table["true"] == table["predicted"]).to_numpy())
    if not rows:
        raise SystemExit(f"no predictions.csv under {runs_dir} for runs matching {pattern!r}")
    return np.vstack(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs_dir", type=Path)
    parser.add_argument("--same", required=True, help="glob of the runs of one recipe")
    parser.add_argument("--other", help="glob of the runs of a second recipe (power)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds a side (default: %(default)s)")
    parser.add_argument("--draws", type=int, default=2000)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    same = seed_outcomes(args.runs_dir, args.same)
    acc = same.mean(axis=1)
    disagree = np.mean([np.mean(same[i] != same[j]) for i, j in itertools.combinations(range(len(same)), 2)])
    print(f"{len(same)} seeds of one recipe: test top-1 mean {100 * acc.mean():.2f} %, std {100 * acc.std(ddof=1):.2f} "
          f"points, range {100 * acc.min():.2f}-{100 * acc.max():.2f}; two seeds disagree on "
          f"{100 * disagree:.1f} % of {same.shape[1]} test images")
    pairs = list(itertools.combinations(range(len(same)), 2))
    old_one = np.mean([old_rule_beats(same[[i]], same[[j]]) for i, j in pairs])
    print(f"1 seed vs 1 seed, every pair ({len(pairs)}): rule before says 'beats' {100 * old_one:.1f} %")
    k = args.seeds
    new = old = 0
    for _ in range(args.draws):
        pick = rng.choice(len(same), 2 * k, replace=False)
        a, b = same[pick[:k]], same[pick[k:]]
        new += decide(recipe_difference(a, b)) in (GREATER, LESS)
        old += old_rule_beats(a, b)
    print(f"{k} seeds vs {k} of the same recipe, {args.draws} random disjoint draws: "
          f"'beats' {100 * old / args.draws:.1f} % (rule before) -> {100 * new / args.draws:.1f} % (this rule)")
    groups = [same[i:i + k] for i in range(0, len(same) - k + 1, k)]
    fixed = [decide(recipe_difference(a, b)) in (GREATER, LESS) for a, b in itertools.combinations(groups, 2)]
    print(f"the {len(groups)} runs as declared ({k} seeds each), every pair: {sum(fixed)} of {len(fixed)} 'beats'")
    if args.other:
        other = seed_outcomes(args.runs_dir, args.other)
        print(f"{len(other)} seeds of the second recipe: test top-1 mean {100 * other.mean():.2f} % "
              f"(difference {100 * (acc.mean() - other.mean()):+.2f} points)")
        hits = 0
        for _ in range(args.draws):
            a = same[rng.choice(len(same), k, replace=False)]
            b = other[rng.choice(len(other), k, replace=False)]
            hits += decide(recipe_difference(a, b)) in (GREATER, LESS)
        print(f"power, {k} seeds a side: {100 * hits / args.draws:.1f} % of {args.draws} draws say the recipes differ")
    return 0


if __name__ == "__main__":
    sys.exit(main())
