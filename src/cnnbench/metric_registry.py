"""The one registry of the per-run numbers cnnbench can gate: name, unit, and which way is better.

The gate (check.py) reads each metric's direction and range here; params.yaml's `check.metrics`
may name only these. Values come from a run's eval/metrics.json, then its train/metrics.json.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    """A number a run reports, as the gate and the claims must read it."""

    unit: str
    better: str                # higher | lower
    fraction: bool = False     # a proportion: must lie in [0, 1]


METRICS: dict[str, Metric] = {
    **{name: Metric("fraction", "higher", fraction=True)
       for name in ("test_top1", "test_top5", "test_top1_tta", "test_macro_f1", "best_val_acc", "final_val_acc")},
    "test_loss": Metric("nats", "lower"),
    "sec_per_epoch": Metric("s", "lower"),
    "train_seconds": Metric("s", "lower"),
    "images_per_sec": Metric("images/s", "higher"),
    "peak_mem_mb": Metric("MB", "lower"),
    "params": Metric("weights", "lower"),
    "flops_per_image": Metric("FLOPs", "lower"),
}
