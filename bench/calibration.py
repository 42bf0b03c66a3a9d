"""The verdict rule against worlds whose answer is known: false "A beats B" rate (A/A) and power.

Each world is a two-level simulation of a recipe trained under several seeds and scored on a test
set: every image has a difficulty (logit), every seed a global effect (its accuracy moves as a
whole), every (seed, image) a small flip effect, and the outcome is a Bernoulli draw. Worlds are
set at the sizes and seed spreads of the suites (docs/reading-a-comparison.md, "How a verdict is reached"):

    python bench/calibration.py --sims 2000

prints, per world, the measured accuracy, seed std and two-seed disagreement, then the rate at
which the rule says "beats" for two runs of one recipe (nominal 5 %), for the rule cnnbench used
before (a paired bootstrap over test images, seeds pooled: its normal approximation here), and the
power on a planted difference. tests/test_evaluation_stats_calibration.py runs the same worlds.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats as scipy_stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cnnbench.evaluation.stats import GREATER, LESS, decide, recipe_difference  # noqa: E402


@dataclass(frozen=True)
class World:
    """A recipe's outcomes: n test images, difficulty ~ N(logit_mean, image_sd) on the logit scale, a
    per-seed shift ~ N(0, seed_sd), a per-(seed, image) shift ~ N(0, flip_sd)."""

    name: str
    images: int
    logit_mean: float
    image_sd: float
    seed_sd: float
    flip_sd: float

    def draw(self, rng: np.random.Generator, seeds: int, shifts: tuple[float, ...] = (0.0, 0.0)) -> list[np.ndarray]:
        """(seeds, images) 0/1 outcomes of one recipe per shift (a logit added to every image), scored
        on one and the same draw of test images."""
        z = rng.normal(self.logit_mean, self.image_sd, self.images)
        out = []
        for shift in shifts:
            logit = (z + shift + rng.normal(0, self.seed_sd, (seeds, 1))
                     + rng.normal(0, self.flip_sd, (seeds, self.images)))
            out.append(rng.random((seeds, self.images)) < 1 / (1 + np.exp(-logit)))
        return out


# digits: 360 test images, ~98 % (seed std 0.83 points measured over 24 seeds of digits-resnet18);
# CIFAR-10: 10,000 test images at ~95 %, seed std ~0.3 points; the butterflies: 500 test images.
WORLDS = (World("digits", 360, 7.5, 3.2, 0.55, 0.5), World("butterflies", 500, 4.5, 3.0, 0.35, 0.5),
          World("cifar10", 10_000, 6.0, 3.0, 0.1, 0.4))


def describe(world: World, rng: np.random.Generator, seeds: int = 24) -> dict:
    """What the world looks like as a suite would measure it: accuracy, seed std, two-seed disagreement."""
    (y,) = world.draw(rng, seeds, (0.0,))
    acc = y.mean(axis=1)
    disagree = np.mean([np.mean(y[i] != y[j]) for i in range(seeds) for j in range(i)])
    return {"accuracy": float(acc.mean()), "seed_std": float(acc.std(ddof=1)), "disagreement": float(disagree)}


def old_rule_beats(a: np.ndarray, b: np.ndarray) -> bool:
    """The rule before: a test over images only, seeds pooled per image (the bootstrap's normal form)."""
    d = a.mean(axis=0) - b.mean(axis=0)
    se = d.std(ddof=1) / np.sqrt(len(d))
    return bool(se > 0 and abs(d.mean()) / se > scipy_stats.norm.ppf(0.975))


def rates(world: World, rng: np.random.Generator, sims: int, seeds: int = 3, shift: float = 0.0) -> dict:
    """How often each rule says one recipe beats the other, over `sims` draws (shift 0: an A/A pair)."""
    new = old = 0
    for _ in range(sims):
        a, b = world.draw(rng, seeds, (0.0, shift))
        new += decide(recipe_difference(a, b)) in (GREATER, LESS)
        old += old_rule_beats(a, b)
    return {"new": new / sims, "old": old / sims}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sims", type=int, default=2000, help="draws per world and setting (default: %(default)s)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds a side (default: %(default)s)")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    print("| world | test images | accuracy (%) | seed std (points) | two seeds disagree (%) | A/A 'beats', "
          "rule before (%) | A/A 'beats', this rule (%) | planted difference (points) | power (%) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for world in WORLDS:
        d = describe(world, rng)
        aa = rates(world, rng, args.sims, args.seeds)
        shift = 1.0  # a logit shift of every image: about 1-2 points of accuracy at these levels
        planted = np.mean([np.subtract(*[y.mean() for y in world.draw(rng, 8, (shift, 0.0))]) for _ in range(50)])
        power = rates(world, rng, args.sims // 2, args.seeds, shift)
        print(f"| {world.name} | {world.images:,} | {100 * d['accuracy']:.1f} | {100 * d['seed_std']:.2f} | "
              f"{100 * d['disagreement']:.1f} | {100 * aa['old']:.1f} | {100 * aa['new']:.1f} | "
              f"{100 * planted:.2f} | {100 * power['new']:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
