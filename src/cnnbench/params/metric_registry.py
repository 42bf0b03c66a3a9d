"""The one registry of the per-run numbers cnnbench can gate: name, unit, and which way is better.

The gate (evaluation/gate.py) reads each metric's direction and range here; params.yaml's `check.metrics`
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

# Measured only for runs deployed (runs.<name>.deploy: evaluate.deploy's default): ONNX Runtime fp32 and int8 and the
# 224 px eager model, batch 1, 1 thread, and the exports' agreement with PyTorch (deploy.deployment_record). A claim
# on one of these needs both its runs deployed.
DEPLOYED_METRICS: tuple[str, ...] = (
    *(f"latency_{r}_b1_1t_ms" for r in ("ort", "ort_int8", "cpu_224", "ort_224", "ort_int8_224")),
    "onnx_top1_agreement", "onnx_max_abs_logit_diff", "onnx_test_top1", "int8_top1_agreement", "int8_test_top1")
