"""Model summaries: every leaf layer's shapes, parameters and FLOPs for one forward pass.

FLOPs are what `torch.utils.flop_counter.FlopCounterMode` counts: 2 per multiply-accumulate
of convolutions and matrix products; batch norm, activations, pooling and additions are free.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass(frozen=True)
class LayerRow:
    """One call of a leaf module: shapes are per image (no batch dimension)."""

    name: str
    type: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    params: int
    flops: int
    kernel: tuple[int, int] | None = None  # these four only for conv and pooling layers
    stride: tuple[int, int] | None = None
    padding: tuple[int, int] | None = None
    dilation: tuple[int, int] | None = None


@dataclass(frozen=True)
class ModelSummary:
    """Per-layer rows and totals for one forward pass of a single image."""

    rows: tuple[LayerRow, ...]
    params: int
    flops: int
    input_size: tuple[int, int, int]


def summarize(model: nn.Module, image_size: int, in_channels: int = 3) -> ModelSummary:
    """Run one zero image through `model` in eval mode and record every leaf layer's call."""
    leaves = {m: name for name, m in model.named_modules() if next(m.children(), None) is None}
    calls: list[tuple[nn.Module, tuple[int, ...], tuple[int, ...]]] = []

    def record(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        calls.append((module, tuple(inputs[0].shape[1:]), tuple(output.shape[1:])))

    first = next(model.parameters(), None)
    x = torch.zeros(1, in_channels, image_size, image_size,
                    device=first.device if first is not None else None,
                    dtype=first.dtype if first is not None else None)
    handles = [m.register_forward_hook(record) for m in leaves]
    modes = {m: m.training for m in model.modules()}  # per module: a caller may have frozen some
    counter = FlopCounterMode(display=False)
    try:
        model.eval()
        with torch.no_grad(), counter:
            model(x)
    finally:
        for m, training in modes.items():
            m.training = training
        for h in handles:
            h.remove()
    counts = counter.get_flop_counts()
    rows, seen = [], set()
    for module, in_shape, out_shape in calls:
        name = leaves[module]
        # A module called twice (ResNet blocks reuse their ReLU) gets a row per call but
        # its params and FLOPs once, as FlopCounterMode sums them per module.
        once = module not in seen
        seen.add(module)
        flops = sum(counts.get(_counter_name(model, name), {}).values()) if once else 0
        params = sum(p.numel() for p in module.parameters()) if once else 0
        rows.append(LayerRow(name, type(module).__name__, in_shape, out_shape, params, flops,
                             **_geometry(module)))
    return ModelSummary(rows=tuple(rows), params=sum(p.numel() for p in model.parameters()),
                        flops=counter.get_total_flops(), input_size=(in_channels, image_size, image_size))


def _counter_name(model: nn.Module, name: str) -> str:
    # FlopCounterMode names modules by the root's class name and the dotted path below it.
    root = type(model).__name__
    return f"{root}.{name}" if name else root


def _geometry(module: nn.Module) -> dict[str, tuple[int, int]]:
    """Kernel, stride, padding and dilation of a conv or pooling layer, as (h, w) pairs."""
    if not isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        return {}
    return {"kernel": _pair(module.kernel_size), "stride": _pair(module.stride),
            "padding": _pair(module.padding), "dilation": _pair(getattr(module, "dilation", 1))}


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def format_summary(summary: ModelSummary, title: str) -> str:
    """An aligned text table of the layers, with totals."""
    header = ("layer", "type", "output shape", "params", "FLOPs")
    body = [(r.name, r.type, "x".join(map(str, r.output_shape)), f"{r.params:,}", f"{r.flops:,}")
            for r in summary.rows]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        left = [c.ljust(w) for c, w in zip(cells[:3], widths)]
        right = [c.rjust(w) for c, w in zip(cells[3:], widths[3:])]
        return "  ".join(left + right).rstrip()

    rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
    size = "x".join(map(str, summary.input_size))
    return "\n".join([
        f"{title}  (input {size})", rule, line(header), rule, *map(line, body), rule,
        f"params: {summary.params:,}",
        f"FLOPs per image, forward: {summary.flops:,} ({summary.flops / 1e9:.3f} G)",
    ])


def summary_to_json(summary: ModelSummary) -> str:
    """The summary as JSON: params, flops, input_size and one dict per layer row."""
    return json.dumps({
        "params": summary.params,
        "flops": summary.flops,
        "input_size": list(summary.input_size),
        "layers": [dataclasses.asdict(r) for r in summary.rows],
    }, indent=2)
