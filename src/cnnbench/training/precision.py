"""The precision of a run's training steps: bf16 autocast where it is asked for, native and reproducible; else fp32.

On CUDA `train.amp` decides. On a CPU `train.cpu_amp` asks for bf16, which is honoured only where the CPU
multiplies bf16 natively (elsewhere it is slower than fp32), and, when the run is deterministic, only for a
model whose bf16 steps are: oneDNN's bf16 weight gradient of a strided convolution onto a one-pixel map
differs from run to run (ResNet18's layer4.0.conv1 at 16 px). tests/test_training_loop.py holds the rule below
against the kernels themselves.
"""

from __future__ import annotations

import torch

from cnnbench.core.device import cpu_computes_bf16
from cnnbench.models.summary import ModelSummary
from cnnbench.params.config import TrainConfig


def bf16_on_offer(cfg: TrainConfig, device: torch.device) -> bool:
    """Whether the run asks for bf16 steps on a device that computes bf16 natively (the model aside)."""
    return cfg.amp if device.type == "cuda" else cfg.cpu_amp and cpu_computes_bf16()


def unreproducible_in_bf16(summary: ModelSummary) -> list[str]:
    """The convolutions whose bf16 weight gradient the CPU does not reproduce, as 'name (HxW -> HxW, stride S)':
    those with a stride over 1 along an axis whose output is one pixel."""
    found = []
    for row in summary.rows:
        if row.type == "Conv2d" and any(s > 1 and n == 1 for s, n in zip(row.stride, row.output_shape[2:])):
            size_in, size_out = ("x".join(map(str, shape[2:])) for shape in (row.input_shape, row.output_shape))
            stride = row.stride[0] if row.stride[0] == row.stride[1] else "x".join(map(str, row.stride))
            found.append(f"{row.name} ({size_in} -> {size_out}, stride {stride})")
    return found


def step_precision(cfg: TrainConfig, device: torch.device, summary: ModelSummary) -> tuple[bool, str | None]:
    """Whether the steps run under bf16 autocast, and why train.cpu_amp is not honoured (None when it is, or when
    it is off)."""
    if device.type == "cuda" or not cfg.cpu_amp:
        return bf16_on_offer(cfg, device), None
    if not cpu_computes_bf16():
        return False, "this CPU has no native bf16 (AMX)"
    convs = unreproducible_in_bf16(summary) if cfg.deterministic else []
    if convs:
        more = f" and {len(convs) - 1} more" if len(convs) > 1 else ""
        return False, (f"its bf16 steps are not reproducible on a CPU for a strided conv onto a 1-pixel map "
                       f"({convs[0]}{more}; train.deterministic: false allows them)")
    return True, None
