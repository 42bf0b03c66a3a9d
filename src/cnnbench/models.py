"""Model variants as data: specs parsed from params.yaml, and one builder per family.

Choices behind the registered variants (quoted by the README):

- `resnet18` is exactly torchvision's ImageNet ResNet18 (7x7/2 stem, 3x3/2 max-pool, four
  stages of two basic blocks); its state dict maps one-to-one onto torchvision's, so the
  ImageNet weights load unchanged.
- The CIFAR-style variants (`resnet18_stem3*`, `resnet18_stem1_l3`) use stride-1 stems and
  no max-pool, so a 32x32 input reaches stage 1 at full resolution.
- The three-conv stem is 32, 32, 64 wide: timm's 'deep' stem, the ResNet-C stem of
  "Bag of Tricks" (He et al. 2019).
- Bottleneck stages follow torchvision: `widths` are the inner widths, the output is 4x wider.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
import torchvision
from torch import nn

from cnnbench.config import ConfigError

# ------------------------------------------------------------------ specs


@dataclass(frozen=True)
class StemSpec:
    """The ResNet stem: one conv+BN+ReLU per width, then an optional 3x3/2 max-pool."""

    kernel: int
    widths: tuple[int, ...]
    strides: tuple[int, ...]
    pool: bool


@dataclass(frozen=True)
class ResNetSpec:
    """A ResNet: a stem, then stages of `depths[i]` blocks of `widths[i]` channels."""

    name: str
    stem: StemSpec
    block: str
    depths: tuple[int, ...]
    widths: tuple[int, ...]
    strides: tuple[int, ...]
    torchvision_weights: str | None = None
    family: str = field(default="resnet", init=False)

    def __post_init__(self) -> None:
        where = f"models.{self.name}"
        stem = self.stem
        _check(_is_int(stem.kernel) and stem.kernel > 0 and stem.kernel % 2 == 1, f"{where}.stem.kernel",
               f"must be a positive odd integer, not {stem.kernel!r}")
        _check_int_list(stem.widths, f"{where}.stem.widths")
        _check_int_list(stem.strides, f"{where}.stem.strides")
        _check(len(stem.strides) == len(stem.widths), f"{where}.stem.strides",
               f"must have one entry per stem conv ({len(stem.widths)}, as stem.widths), "
               f"not {len(stem.strides)}")
        _check(isinstance(stem.pool, bool), f"{where}.stem.pool", f"must be true or false, not {stem.pool!r}")
        _check(isinstance(self.block, str) and self.block in BLOCKS, f"{where}.block",
               f"must be one of {', '.join(BLOCKS)}, not {self.block!r}")
        for key in ("depths", "widths", "strides"):
            _check_int_list(getattr(self, key), f"{where}.{key}")
        for key in ("widths", "strides"):
            n, stages = len(getattr(self, key)), len(self.depths)
            _check(n == stages, f"{where}.{key}",
                   f"must have one entry per stage ({stages}, as depths), not {n}")


@dataclass(frozen=True)
class MobileNetV2Spec:
    """torchvision's MobileNetV2 with its stem stride and inverted-residual table as arguments."""

    name: str
    width_mult: float
    stem_stride: int
    setting: tuple[tuple[int, int, int, int], ...]  # rows of (expansion t, channels c, repeats n, stride s)
    dropout: float
    torchvision_weights: str | None = None
    family: str = field(default="mobilenet_v2", init=False)

    def __post_init__(self) -> None:
        where = f"models.{self.name}"
        _check(_is_number(self.width_mult) and self.width_mult > 0, f"{where}.width_mult",
               f"must be a number > 0, not {self.width_mult!r}")
        _check(_is_int(self.stem_stride) and self.stem_stride > 0, f"{where}.stem_stride",
               f"must be a positive integer, not {self.stem_stride!r}")
        _check(isinstance(self.setting, (list, tuple)) and len(self.setting) > 0, f"{where}.setting",
               "must be a non-empty list of [t, c, n, s] rows")
        for i, row in enumerate(self.setting):
            # torchvision's InvertedResidual only implements strides 1 and 2.
            ok = (isinstance(row, (list, tuple)) and len(row) == 4 and all(_is_int(v) and v > 0 for v in row)
                  and row[3] in (1, 2))
            _check(ok, f"{where}.setting[{i}]",
                   f"must be [t, c, n, s]: positive integers, s 1 or 2, not {row!r}")
        _check(_is_number(self.dropout) and 0 <= self.dropout < 1, f"{where}.dropout",
               f"must be a number in [0, 1), not {self.dropout!r}")


ModelSpec = ResNetSpec | MobileNetV2Spec
FAMILIES: dict[str, type] = {"resnet": ResNetSpec, "mobilenet_v2": MobileNetV2Spec}


def spec_from_dict(name: str, d: dict) -> ModelSpec:
    """Parse one params.yaml `models:` entry; raise ConfigError naming the first bad field."""
    where = f"models.{name}"
    family = d.get("family")
    _check(isinstance(family, str) and family in FAMILIES, f"{where}.family",
           f"must be one of {', '.join(FAMILIES)}, not {family!r}")
    cls = FAMILIES[family]
    values = _fields_of(cls, {k: v for k, v in d.items() if k != "family"}, where)
    if "stem" in values:
        values["stem"] = StemSpec(**_fields_of(StemSpec, values["stem"], f"{where}.stem"))
    return cls(name=name, **values)


def _fields_of(cls: type, d: Any, where: str) -> dict[str, Any]:
    """`d` checked against dataclass `cls`'s fields (unknown, missing), lists made tuples."""
    _check(isinstance(d, dict), where, "must be a mapping")
    fields = [f for f in dataclasses.fields(cls) if f.init and f.name != "name"]
    names = {f.name for f in fields}
    unknown = sorted(set(d) - names)
    _check(not unknown, f"{where}.{unknown[0]}" if unknown else where,
           f"unknown field; expected one of {', '.join(sorted(names))}")
    for f in fields:
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        _check(f.name in d or not required, f"{where}.{f.name}", "is required")
    return {k: _freeze(v) for k, v in d.items()}


def _freeze(value: Any) -> Any:
    # Tuples, not lists, so specs stay hashable and immutable like the rest of the config.
    return tuple(_freeze(v) for v in value) if isinstance(value, list) else value


def _check(ok: bool, where: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"params: {where}: {message}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_int_list(value: Any, where: str) -> None:
    ok = isinstance(value, (list, tuple)) and len(value) > 0 and all(_is_int(v) and v > 0 for v in value)
    _check(ok, where, "must be a non-empty list of positive integers")


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
