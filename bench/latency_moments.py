"""How much a model's batch-1 CPU latency moves between separate measurements, and what that does to a
latency claim's verdict: the A/A test of the latency rule.

evaluate measures each run's latency in its own stage, at its own moment. This script does the same
thing many times: each round starts one fresh process per model (as a stage is), which builds the
model and times it as evaluate does (cnnbench.evaluation.latency.measure_inference). Afterwards it reports:
- sigma_moment: the standard deviation, between processes, of the log of one model's median latency,
  pooled over the models;
- the A/A rate: how often the latency rule calls the same model, measured in two processes, "different",
  with and without the between-moment term;
- the power: how often the rule decides between two different models.

    python bench/latency_moments.py --rounds 15 --models resnet18 mobilenet_v2 --image-size 16
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

MEASURE = """
import json, sys
sys.path.insert(0, {src!r})
import torch
from cnnbench.params.config import load_params
from cnnbench.evaluation.latency import measure_inference
from cnnbench.models.build import build_model
params = load_params({params!r})
model = build_model(params.model({model!r}), 10, {size}).eval()
(cost,) = measure_inference([model], {size})
print(json.dumps(list(cost.latency_cpu_b1_1t_samples_ms)))
"""


def measure(model: str, size: int) -> list[float]:
    code = MEASURE.format(src=str(ROOT / "src"), params=str(ROOT / "params.yaml"), model=model, size=size)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--models", nargs="+", default=["resnet18", "mobilenet_v2"])
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--out", type=Path, default=None, help="write the samples and the summary as JSON")
    args = parser.parse_args()

    from cnnbench.evaluation.stats import GREATER, LESS, MOMENT_SIGMA, decide, timing_difference

    samples: dict[str, list[list[float]]] = {m: [] for m in args.models}
    for r in range(args.rounds):
        order = args.models if r % 2 == 0 else args.models[::-1]
        for model in order:
            samples[model].append(measure(model, args.image_size))
        print(f"round {r + 1}: " + "  ".join(f"{m} {np.median(samples[m][-1]):.3f} ms" for m in args.models),
              flush=True)

    logs = {m: np.log([np.median(s) for s in runs]) for m, runs in samples.items()}
    pooled = math.sqrt(sum(((v - v.mean()) ** 2).sum() for v in logs.values())
                       / sum(len(v) - 1 for v in logs.values()))
    print(f"\nsigma_moment (sd of log median latency between processes, pooled): {pooled:.3f}")

    def rate(pairs, sigma: float) -> float:
        decided = [decide(timing_difference(a, b, moment_sigma=sigma)) in (GREATER, LESS) for a, b in pairs]
        return sum(decided) / len(decided)

    summary = {"sigma_moment": pooled, "rounds": args.rounds, "image_size": args.image_size}
    for model in args.models:
        pairs = list(itertools.combinations(samples[model], 2))
        old, new = rate(pairs, 0.0), rate(pairs, MOMENT_SIGMA)
        summary[f"aa_{model}"] = {"pairs": len(pairs), "without_moment_term": old, "with_moment_term": new}
        print(f"A/A {model}: {len(pairs)} pairs of processes called different: {old:.1%} by the calls alone, "
              f"{new:.1%} with sigma_moment {MOMENT_SIGMA}")
    # Power: the same model's pairs of processes, one side's calls scaled by a planted ratio (a model that
    # much faster), decided as faster by the rule with the moment term.
    for planted in (0.8, 0.67, 0.5):
        pairs = [(np.asarray(a) * planted, b) for m in args.models for a, b in itertools.combinations(samples[m], 2)]
        found = rate(pairs, MOMENT_SIGMA)
        summary[f"power_{planted}"] = found
        print(f"power at a planted ratio of {planted}: decided in {found:.1%} of {len(pairs)} pairs")
    for a, b in itertools.combinations(args.models, 2):
        pairs = list(zip(samples[a], samples[b]))
        ratio = float(np.exp(np.median(logs[a] - logs[b][: len(logs[a])])))
        old, new = rate(pairs, 0.0), rate(pairs, MOMENT_SIGMA)
        summary[f"{a}_vs_{b}"] = {"pairs": len(pairs), "median_ratio": ratio, "without_moment_term": old,
                                  "with_moment_term": new}
        print(f"{a} vs {b} (median ratio {ratio:.2f}): decided in {old:.1%} of {len(pairs)} rounds by the calls "
              f"alone, {new:.1%} with the moment term")
    if args.out:
        args.out.write_text(json.dumps({"summary": summary, "samples": samples}, indent=1))


if __name__ == "__main__":
    main()
