"""Summaries: every layer's shapes, parameters and FLOPs for one forward pass, of a model or one layer.

FLOPs are what `torch.utils.flop_counter.FlopCounterMode` counts: 2 per multiply-accumulate
of convolutions and matrix products; batch norm, activations, pooling and additions are free.
They grow linearly with the batch, so a summary reports them per image and per batch.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cnnbench.models.build import build_model
from cnnbench.models.specs import ModelSpec, parse_model_spec
from cnnbench.params.config import ConfigError

LAYERS = ("conv", "maxpool", "avgpool")


@dataclass(frozen=True)
class LayerRow:
    """One call of a leaf module: shapes with the batch dimension, FLOPs per image."""

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
    """Per-layer rows and totals for one forward pass of a batch; `flops` is per image."""

    rows: tuple[LayerRow, ...]
    params: int
    flops: int
    input_size: tuple[int, int, int]
    batch_size: int = 1

    @property
    def flops_per_batch(self) -> int:
        return self.flops * self.batch_size


@dataclass(frozen=True)
class LayerSummary:
    """One ad-hoc layer: its module, shapes with the batch dimension, params and FLOPs per image."""

    module: str
    input_shape: tuple[int, int, int, int]
    output_shape: tuple[int, int, int, int]
    kernel: int
    stride: int
    padding: int
    params: int
    param_shapes: dict[str, tuple[int, ...]]
    flops: int

    @property
    def flops_per_batch(self) -> int:
        return self.flops * self.input_shape[0]


# ------------------------------------------------------------------ models


def summarize(model: nn.Module, image_size: int, in_channels: int = 3, batch_size: int = 1) -> ModelSummary:
    """Run a batch of zero images through `model` in eval mode and record every leaf layer's call."""
    first = next(model.parameters(), None)
    x = torch.zeros(batch_size, in_channels, image_size, image_size,
                    device=first.device if first is not None else None,
                    dtype=first.dtype if first is not None else None)
    rows, flops = _trace(model, x)
    return ModelSummary(rows=rows, params=sum(p.numel() for p in model.parameters()), flops=flops,
                        input_size=(in_channels, image_size, image_size), batch_size=batch_size)


def summarize_spec(spec: ModelSpec, num_classes: int, image_size: int, batch_size: int = 1) -> ModelSummary:
    """Summarise the network of `spec`, built on the meta device: exact shapes and FLOPs, no compute."""
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ConfigError(f"batch size must be a positive integer, not {batch_size!r}")
    with torch.device("meta"):
        model = build_model(spec, num_classes=num_classes, image_size=image_size)
    return summarize(model, image_size=image_size, batch_size=batch_size)


def _trace(model: nn.Module, x: torch.Tensor) -> tuple[tuple[LayerRow, ...], int]:
    """The rows of one eval-mode forward of `x`, and its total FLOPs per image."""
    leaves = {m: name for name, m in model.named_modules() if next(m.children(), None) is None}
    calls: list[tuple[nn.Module, tuple[int, ...], tuple[int, ...]]] = []

    def record(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        calls.append((module, tuple(inputs[0].shape), tuple(output.shape)))

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
    counts, batch = counter.get_flop_counts(), len(x)
    rows, seen = [], set()
    for module, in_shape, out_shape in calls:
        name = leaves[module]
        # A module called twice (ResNet blocks reuse their ReLU) gets a row per call but
        # its params and FLOPs once, as FlopCounterMode sums them per module.
        once = module not in seen
        seen.add(module)
        flops = sum(counts.get(_counter_name(model, name), {}).values()) // batch if once else 0
        params = sum(p.numel() for p in module.parameters()) if once else 0
        rows.append(LayerRow(name, type(module).__name__, in_shape, out_shape, params, flops,
                             **_geometry(module)))
    return tuple(rows), counter.get_total_flops() // batch


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
    """An aligned text table of the layers (kernel, stride, padding, output shape, params, FLOPs), with totals."""
    header = ("layer", "type", "kernel", "stride", "padding", "output shape", "params", "FLOPs/image")
    body = [(r.name, r.type, _hw(r.kernel, "x"), _hw(r.stride), _hw(r.padding), _shape(r.output_shape),
             f"{r.params:,}", f"{r.flops:,}") for r in summary.rows]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        # names and geometry left-aligned, the two counts right-aligned
        padded = [c.rjust(w) if i >= len(cells) - 2 else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))]
        return "  ".join(padded).rstrip()

    rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
    return "\n".join([
        f"{title}  (input {_shape((summary.batch_size, *summary.input_size))})", rule, line(header), rule,
        *map(line, body), rule,
        f"params: {summary.params:,}",
        *_flops_lines(summary.flops, summary.batch_size),
    ])


def _hw(pair: tuple[int, int] | None, square: str = "") -> str:
    """'3x3' (or '3' without `square`) for a square pair, '3x1' otherwise, '' for none."""
    if pair is None:
        return ""
    return f"{pair[0]}{square}{pair[1]}" if square or pair[0] != pair[1] else str(pair[0])


def _shape(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(map(str, shape)) + "]"


def _flops_lines(flops: int, batch_size: int) -> list[str]:
    return [f"FLOPs per image, forward: {_count(flops)}",
            f"FLOPs per batch of {batch_size}, forward: {_count(flops * batch_size)}"]


def _count(n: int) -> str:
    """'74,033,152 (74 M)': exact, then to 3 significant digits for reading at a glance."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n:,} ({n / scale:.3g} {unit})"
    return f"{n:,}"


def summary_to_json(summary: ModelSummary | LayerSummary) -> str:
    """The summary as JSON: its fields and flops_per_batch (a model's rows under `layers`)."""
    data = dataclasses.asdict(summary)
    if isinstance(summary, ModelSummary):
        data["layers"] = data.pop("rows")
    data["flops_per_batch"] = summary.flops_per_batch
    return json.dumps(data, indent=2)


# ------------------------------------------------------------------ one layer


def output_size(n: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a conv or pooling layer along one axis: floor((n + 2p - f) / s) + 1."""
    return (n + 2 * padding - kernel) // stride + 1


def output_size_formula(n: int, kernel: int, stride: int, padding: int) -> str:
    """The output-size formula, then with the numbers filled in, then its value."""
    return (f"out = floor((n + 2p - f) / s) + 1 = floor(({n} + 2*{padding} - {kernel}) / {stride}) + 1"
            f" = {output_size(n, kernel, stride, padding)}")


def summarize_layer(layer: str, input_shape: tuple[int, ...], kernel: int, stride: int | None = None,
                    padding: int = 0, out_channels: int | None = None, bias: bool = True) -> LayerSummary:
    """Summarise one `conv`, `maxpool` or `avgpool` layer on an N,C,H,W input; stride defaults as in torch."""
    module = _make_layer(layer, input_shape, kernel, stride, padding, out_channels, bias)
    (row,), flops = _trace(module, torch.zeros(input_shape, device="meta"))
    return LayerSummary(module=repr(module), input_shape=row.input_shape, output_shape=row.output_shape,
                        kernel=kernel, stride=row.stride[0], padding=padding, params=row.params,
                        param_shapes={n: tuple(p.shape) for n, p in module.named_parameters()}, flops=flops)


def _make_layer(layer: str, input_shape: tuple[int, ...], kernel: int, stride: int | None, padding: int,
                out_channels: int | None, bias: bool) -> nn.Module:
    """The module for `summarize_layer`, on meta, after checking every argument and the output size."""
    _require(layer in LAYERS, f"layer must be one of {', '.join(LAYERS)}, not {layer!r}")
    _require(len(input_shape) == 4 and all(_positive(v) for v in input_shape),
             f"input shape must be N,C,H,W, four positive integers, not {input_shape!r}")
    _require(_positive(kernel), f"kernel must be a positive integer, not {kernel!r}")
    # torch's own defaults: a conv steps by 1, a pooling layer by its kernel.
    stride = stride if stride is not None else (1 if layer == "conv" else kernel)
    _require(_positive(stride), f"stride must be a positive integer, not {stride!r}")
    _require(isinstance(padding, int) and padding >= 0, f"padding must be an integer >= 0, not {padding!r}")
    if layer == "conv":
        _require(_positive(out_channels), f"a conv needs out_channels, a positive integer, not {out_channels!r}")
    else:
        _require(out_channels is None, f"{layer} keeps the channels; out_channels does not apply")
        # torch rejects more padding than this for pooling: a window could then see only padding.
        _require(padding <= kernel // 2, f"{layer} padding must be at most half the kernel ({kernel // 2}), "
                                         f"not {padding}")
    for axis, n in zip("HW", input_shape[2:]):
        out = output_size(n, kernel, stride, padding)
        _require(out >= 1, f"input {axis} {n} is too small for kernel {kernel} with padding {padding}: "
                           f"{output_size_formula(n, kernel, stride, padding)}; it needs at least "
                           f"{kernel - 2 * padding}")
    with torch.device("meta"):
        if layer == "conv":
            return nn.Conv2d(input_shape[1], out_channels, kernel, stride, padding, bias=bias)
        pool = nn.MaxPool2d if layer == "maxpool" else nn.AvgPool2d
        return pool(kernel, stride, padding)


def format_layer_summary(summary: LayerSummary) -> str:
    """The layer, its input and output shapes, the output-size formula per axis, params and FLOPs."""
    n, _, h, w = summary.input_shape
    geometry = (summary.kernel, summary.stride, summary.padding)
    formulas = ([output_size_formula(h, *geometry)] if h == w else
                [f"{axis}: {output_size_formula(size, *geometry)}" for axis, size in (("H", h), ("W", w))])
    shapes = " + ".join(f"{name} {'x'.join(map(str, shape))}" for name, shape in summary.param_shapes.items())
    return "\n".join([
        summary.module,
        f"input shape:  {_shape(summary.input_shape)}",
        f"output shape: {_shape(summary.output_shape)}",
        *formulas,
        f"params: {summary.params:,}" + (f" ({shapes})" if shapes else ""),
        *_flops_lines(summary.flops, n),
    ])


def _positive(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


# ------------------------------------------------------------------ parsing


def parse_shape(text: str, where: str) -> tuple[int, int, int, int]:
    """'8,3,32,32' (or '[8, 3, 32, 32]', as summaries print shapes) as an N, C, H, W tuple."""
    try:
        shape = tuple(int(p) for p in text.strip().strip("[]()").split(","))
    except ValueError:
        shape = ()
    if len(shape) != 4 or not all(v > 0 for v in shape):
        raise ConfigError(f"{where}: expected N,C,H,W, four positive integers separated by commas, "
                          f"e.g. 8,3,32,32; not {text!r}")
    return shape


def parse_spec(text: str, name: str, where: str) -> ModelSpec:
    """A model spec from YAML (or JSON) text: the mapping of one params.yaml `models:` entry."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)  # where the parser gave up, when it knows
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{where}: not valid YAML{at}: {getattr(err, 'problem', None) or err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping such as '{{family: resnet, ...}}', "
                          f"not {type(raw).__name__}")
    return parse_model_spec(name, raw, where=where)


def read_spec(path: str | Path) -> ModelSpec:
    """The model spec in a YAML or JSON file, named after the file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the spec ({err.strerror or err})") from None
    return parse_spec(text, name=path.stem, where=str(path))
