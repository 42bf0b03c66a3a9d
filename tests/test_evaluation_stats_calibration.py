"""The verdict rule's calibration: how often it calls "A beats B" on two runs of one recipe (an A/A pair,
nominal 5 %), and its power on a planted difference, in simulated worlds at the suites' test-set sizes
(digits 360, butterflies 500, CIFAR-10 10,000). The worlds are bench/calibration.py's."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from calibration import WORLDS, describe, rates  # noqa: E402  (bench/ is no package: imported by path)

SIMS = 1000
# The A/A rate may exceed 5 % by Monte-Carlo error only: 2.33 standard errors of a binomial rate (1 % one-sided).
BOUND = 0.05 + 2.33 * math.sqrt(0.05 * 0.95 / SIMS)
# Power on a planted logit shift of 1.0 (about 1 point of accuracy on digits, 4 on the butterflies, 2 on
# CIFAR-10), 3 seeds a side; measured with 2,000 draws: 13 %, 52 % and 100 % (docs/reading-a-comparison.md).
# The floors sit about three Monte-Carlo standard errors below, and above the 5 % a rule that never decides
# would pass with.
POWER_FLOOR = {"digits": 0.07, "butterflies": 0.42, "cifar10": 0.95}


@pytest.mark.parametrize("world", WORLDS, ids=[w.name for w in WORLDS])
def test_same_recipe_pairs_are_called_different_at_most_five_percent_of_the_time(world):
    rng = np.random.default_rng(11)
    looks = describe(world, rng)
    assert 0.85 < looks["accuracy"] < 0.995 and looks["seed_std"] > 0.002  # a world with real seed noise
    aa = rates(world, rng, SIMS)
    assert aa["new"] <= BOUND, aa
    assert aa["old"] > 0.15, aa  # the rule before, on the same draws: the miscalibration this rule fixes


@pytest.mark.parametrize("world", WORLDS, ids=[w.name for w in WORLDS])
def test_a_planted_difference_is_found_with_the_power_the_readme_reports(world):
    power = rates(world, np.random.default_rng(12), SIMS // 2, shift=1.0)["new"]
    assert power >= POWER_FLOOR[world.name], power


# ------------------------------------------------------------------ latency claims, timed in separate stages

LATENCY_SAMPLES = Path(__file__).resolve().parents[1] / "reports" / "benchmarks" / "latency_moments.json"


def _decided(pairs, sigma: float) -> float:
    from cnnbench.evaluation.stats import GREATER, LESS, decide, timing_difference

    return float(np.mean([decide(timing_difference(a, b, moment_sigma=sigma)) in (GREATER, LESS) for a, b in pairs]))


def test_one_model_timed_in_two_processes_is_not_called_faster_than_itself():
    """The A/A test of the latency rule on this machine's own timings (bench/latency_moments.py: each model timed
    as evaluate times it, in 15 separate processes). By its timed calls alone the rule called a model different
    from itself in most pairs of processes; with the between-moment term, at most 5 % + Monte-Carlo error."""
    import itertools

    from cnnbench.evaluation.stats import MOMENT_SIGMA

    samples = json.loads(LATENCY_SAMPLES.read_text())["samples"]
    pairs = [pair for runs in samples.values() for pair in itertools.combinations(runs, 2)]
    assert len(pairs) >= 200
    bound = 0.05 + 2.33 * math.sqrt(0.05 * 0.95 / len(pairs))
    assert _decided(pairs, MOMENT_SIGMA) <= bound
    assert _decided(pairs, 0.0) > 0.5  # the rule before: the miscalibration this term fixes


def test_a_planted_speedup_of_the_deployed_size_is_still_found():
    """Power on the same timings, one side's calls scaled: a model 2.8x faster (MobileNetV2 against ResNet18 at
    224 px measures 0.27-0.36x) is found in most pairs; 1.25x faster, about as often as chance."""
    import itertools

    from cnnbench.evaluation.stats import MOMENT_SIGMA

    samples = json.loads(LATENCY_SAMPLES.read_text())["samples"]
    same = [pair for runs in samples.values() for pair in itertools.combinations(runs, 2)]
    assert _decided([(np.asarray(a) * 0.36, b) for a, b in same], MOMENT_SIGMA) >= 0.6
    assert _decided([(np.asarray(a) * 0.8, b) for a, b in same], MOMENT_SIGMA) <= 0.2
