"""Model variants as data: specs parsed from params.yaml, one builder per family, summaries.

Choices behind the registered variants (quoted by the README):

- `resnet18` is exactly torchvision's ImageNet ResNet18 (7x7/2 stem, 3x3/2 max-pool, four
  stages of two basic blocks); its state dict maps one-to-one onto torchvision's, so the
  ImageNet weights load unchanged.
- The CIFAR-style variants (`resnet18_stem3*`, `resnet18_stem1_l3`) use stride-1 stems and
  no max-pool, so a 32x32 input reaches stage 1 at full resolution.
- The three-conv stem is 32, 32, 64 wide: timm's 'deep' stem, the ResNet-C stem of
  "Bag of Tricks" (He et al. 2019).
- Bottleneck stages follow torchvision: `widths` are the inner widths, the output is 4x wider.
- FLOPs are what `torch.utils.flop_counter.FlopCounterMode` counts: 2 per multiply-accumulate
  of convolutions and matrix products; batch norm, activations, pooling and additions are free.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cnnbench.config import FAMILIES, ModelSpec, MobileNetV2Spec, ResNetSpec, StemSpec, parse_model_spec
from cnnbench.errors import CnnbenchError, ConfigError

# ------------------------------------------------------------------ ResNet


class ConvBNReLU(nn.Module):
    """One stem conv: 'same'-padded conv, batch norm, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, stride, padding=kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


def _shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module | None:
    """The 1x1 conv + BN projection when the block changes size or width; None for identity."""
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                         nn.BatchNorm2d(out_channels))


class BasicBlock(nn.Module):
    """Two 3x3 convs and a shortcut (ResNet18/34); module names as in torchvision."""

    expansion = 1

    def __init__(self, in_channels: int, width: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width, width, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.downsample = _shortcut(in_channels, width, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided, as torchvision's 'ResNet v1.5'), 1x1 expand by 4, and a shortcut."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int):
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn3(self.conv3(self.relu(self.bn2(self.conv2(out)))))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


BLOCKS: dict[str, type[nn.Module]] = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNet(nn.Module):
    """A ResNet with the stem and stages as arguments.

    Module names match torchvision's (`layer1`..`layerN`, `avgpool`, `fc`) except the stem,
    which is `stem.<i>.conv/bn/relu` (+ a final max-pool) so it can hold several convs.
    """

    def __init__(self, num_classes: int, stem_kernel: int, stem_widths: tuple[int, ...],
                 stem_strides: tuple[int, ...], stem_pool: bool, block: type[nn.Module],
                 depths: tuple[int, ...], widths: tuple[int, ...], strides: tuple[int, ...],
                 in_channels: int = 3):
        super().__init__()
        stem, channels = [], in_channels
        for width, stride in zip(stem_widths, stem_strides):
            stem.append(ConvBNReLU(channels, width, stem_kernel, stride))
            channels = width
        if stem_pool:
            stem.append(nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
        self.stem = nn.Sequential(*stem)
        self.num_stages = len(depths)
        for i, (depth, width, stride) in enumerate(zip(depths, widths, strides), start=1):
            blocks = []
            for j in range(depth):
                blocks.append(block(channels, width, stride if j == 0 else 1))
                channels = width * block.expansion
            self.add_module(f"layer{i}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # torchvision's init, so a from-scratch run of `resnet18` matches torchvision's resnet18.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for i in range(1, self.num_stages + 1):
            x = getattr(self, f"layer{i}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


# ------------------------------------------------------------------ building


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def build_model(spec: ModelSpec, num_classes: int, image_size: int) -> nn.Module:
    """The network for `spec`, freshly initialised; ConfigError when it cannot take the input."""
    if not (_is_int(num_classes) and num_classes >= 2):
        raise ConfigError(f"model {spec.name}: num_classes must be an integer >= 2, not {num_classes!r}")
    smallest = min_image_size(spec)
    if not (_is_int(image_size) and image_size >= smallest):
        raise ConfigError(f"model {spec.name}: image size {image_size!r} is too small; the smallest that "
                          f"keeps every feature map at least 1x1 is {smallest}")
    if isinstance(spec, ResNetSpec):
        return ResNet(num_classes, spec.stem.kernel, spec.stem.widths, spec.stem.strides, spec.stem.pool,
                      BLOCKS[spec.block], spec.depths, spec.widths, spec.strides)
    model = torchvision.models.MobileNetV2(num_classes=num_classes, width_mult=spec.width_mult,
                                           inverted_residual_setting=[list(r) for r in spec.setting],
                                           dropout=spec.dropout)
    # torchvision takes no argument for the stem stride; the conv reads it at every call.
    model.features[0][0].stride = (spec.stem_stride, spec.stem_stride)
    return model


def min_image_size(spec: ModelSpec) -> int:
    """Smallest square input for which every layer's output is at least 1x1.

    Walks the size-changing layers backwards with o = floor((n + 2p - f) / s) + 1:
    an output of m needs an input of at least (m - 1) * s + f - 2p.
    """
    needed = 1
    for kernel, stride, padding in reversed(_spatial_layers(spec)):
        needed = max(1, (needed - 1) * stride + kernel - 2 * padding)
    return needed


def _spatial_layers(spec: ModelSpec) -> list[tuple[int, int, int]]:
    """(kernel, stride, padding) of the layers that can change the size, in order.

    'Same'-padded stride-1 convs keep the size, and a block's 1x1 shortcut gives the same
    size as its strided 3x3 conv, so only each stage's first 3x3 conv is listed.
    """
    if isinstance(spec, ResNetSpec):
        layers = [(spec.stem.kernel, s, spec.stem.kernel // 2) for s in spec.stem.strides]
        layers += [(3, 2, 1)] if spec.stem.pool else []
        return layers + [(3, s, 1) for s in spec.strides]
    return [(3, spec.stem_stride, 1)] + [(3, s, 1) for _, _, _, s in spec.setting]


# ------------------------------------------------------------------ pretrained weights


def torchvision_to_cnnbench_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a torchvision state dict's keys to cnnbench's.

    The only difference is the ResNet stem: torchvision's `conv1.*` / `bn1.*` are our
    `stem.0.conv.*` / `stem.0.bn.*`. Every other key (`layerN.*`, `fc.*`, and all of
    MobileNetV2's) is the same, and cnnbench keys pass through unchanged.
    """
    renames = {"conv1.": "stem.0.conv.", "bn1.": "stem.0.bn."}
    mapped = {}
    for key, value in state_dict.items():
        prefix = next((p for p in renames if key.startswith(p)), None)
        mapped[renames[prefix] + key[len(prefix):] if prefix else key] = value
    return mapped


def load_pretrained(model: nn.Module, spec: ModelSpec, weights: str) -> None:
    """Load `imagenet` (torchvision's weights for the spec) or a saved state dict into `model`.

    Every tensor must fit except the classification head: when the class count differs the
    model keeps its freshly initialised head.
    """
    state = torchvision_to_cnnbench_keys(_read_weights(spec, weights))
    own = model.state_dict()
    head = _head_name(model) + "."
    for key, value in own.items():
        if key not in state and key.endswith("num_batches_tracked"):
            # Older torchvision checkpoints predate this counter; it does not affect the outputs.
            state[key] = value
        problem = _mismatch(key, state.get(key), value)
        if problem and key.startswith(head) and key in state:  # another class count: keep our head
            state[key] = value
        elif problem:
            raise CnnbenchError(f"pretrained weights {weights} do not fit model {spec.name}: {problem}")
    extra = next((k for k in state if k not in own), None)
    if extra is not None:
        raise CnnbenchError(f"pretrained weights {weights} do not fit model {spec.name}: "
                            f"unexpected key {extra!r}")
    model.load_state_dict(state)


def _read_weights(spec: ModelSpec, weights: str) -> dict[str, torch.Tensor]:
    if weights == "imagenet":
        if spec.torchvision_weights is None:
            raise CnnbenchError(f"model {spec.name} has no ImageNet weights (its torchvision_weights is null); "
                                "train from scratch or pass a path to a state dict")
        imagenet = torchvision.models.get_weight(spec.torchvision_weights)
        try:
            return imagenet.get_state_dict(progress=True)
        except (OSError, RuntimeError) as err:  # URLError is an OSError; a bad download a RuntimeError
            raise CnnbenchError(
                f"could not download {spec.torchvision_weights} ({err}); without network access pass a "
                f"local weights file path instead, e.g. `train.pretrained: /path/to/{spec.name}.pth`, "
                f"or put {imagenet.url.rsplit('/', 1)[-1]} in {torch.hub.get_dir()}/checkpoints") from None
    path = Path(weights)
    if not path.is_file():
        raise CnnbenchError(f"pretrained weights {path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load raises many types for a file it cannot read
        raise CnnbenchError(f"pretrained weights {path}: not a state dict saved with torch.save "
                            f"({err})") from None
    if not isinstance(state, dict):
        raise CnnbenchError(f"pretrained weights {path}: expected a state dict, found {type(state).__name__}")
    return state


def _mismatch(key: str, theirs: Any, ours: torch.Tensor) -> str | None:
    if theirs is None:
        return f"missing key {key!r}"
    if not isinstance(theirs, torch.Tensor) or theirs.shape != ours.shape:
        shape = tuple(theirs.shape) if isinstance(theirs, torch.Tensor) else type(theirs).__name__
        return f"{key}: shape {shape} in the file, {tuple(ours.shape)} in the model"
    return None


def _head_name(model: nn.Module) -> str:
    """The classification head: the last nn.Linear (`fc` for ResNet, `classifier.1` for MobileNetV2)."""
    names = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise CnnbenchError(f"{type(model).__name__} has no nn.Linear classification head")
    return names[-1]


# ------------------------------------------------------------------ summary


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
