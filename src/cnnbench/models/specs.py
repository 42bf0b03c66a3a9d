"""Model variants as data: the specs params.yaml's `models:` entries are parsed into.

A spec is the network's arguments, not code: `models.build_model` turns it into a module.
Part of the params layer (see params/config.py): torch-free, validated by the same one validator.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from cnnbench.core.errors import ConfigError
from cnnbench.params.limits import MAX_BLOCKS, MAX_CHANNELS, MAX_KERNEL, MAX_STRIDE, MAX_WIDTH_MULT
from cnnbench.params.validation import Validated, build, mapping, require


@dataclass(frozen=True)
class StemSpec(Validated):
    """The ResNet stem: one conv+BN+ReLU per width, then an optional 3x3/2 max-pool."""

    kernel: int
    widths: tuple[int, ...]
    strides: tuple[int, ...]
    pool: bool

    def validate(self) -> None:
        require(0 < self.kernel <= MAX_KERNEL and self.kernel % 2 == 1, "kernel",
                f"must be an odd integer in 1..{MAX_KERNEL}, not {self.kernel}")
        _require_positive_list(self.widths, "widths", MAX_CHANNELS)
        _require_positive_list(self.strides, "strides", MAX_STRIDE)
        require(len(self.strides) == len(self.widths), "strides",
                 f"must have one entry per stem conv ({len(self.widths)}, as widths), not {len(self.strides)}")


@dataclass(frozen=True)
class ResNetSpec(Validated):
    """A ResNet: a stem, then stages of `depths[i]` blocks of `widths[i]` channels."""

    name: str
    stem: StemSpec
    block: str
    depths: tuple[int, ...]
    widths: tuple[int, ...]
    strides: tuple[int, ...]
    torchvision_weights: str | None = None
    family: str = field(default="resnet", init=False)

    def validate(self) -> None:
        require(self.block in ("basic", "bottleneck"), "block", f"must be one of basic, bottleneck, not {self.block!r}")
        for key, most in (("depths", MAX_BLOCKS), ("widths", MAX_CHANNELS), ("strides", MAX_STRIDE)):
            _require_positive_list(getattr(self, key), key, most)
        for key in ("widths", "strides"):
            n = len(getattr(self, key))
            require(n == len(self.depths), key,
                    f"must have one entry per stage ({len(self.depths)}, as depths), not {n}")


@dataclass(frozen=True)
class MobileNetV2Spec(Validated):
    """torchvision's MobileNetV2 with its stem stride and inverted-residual table as arguments."""

    name: str
    width_mult: float
    stem_stride: int
    setting: tuple[tuple[int, int, int, int], ...]  # rows of (expansion t, channels c, repeats n, stride s)
    dropout: float
    torchvision_weights: str | None = None
    family: str = field(default="mobilenet_v2", init=False)

    def validate(self) -> None:
        require(0 < self.width_mult <= MAX_WIDTH_MULT, "width_mult", f"must be in (0, {MAX_WIDTH_MULT}]")
        require(0 < self.stem_stride <= MAX_STRIDE, "stem_stride", f"must be in 1..{MAX_STRIDE}")
        require(0 < len(self.setting) <= MAX_BLOCKS, "setting", f"must be a list of 1..{MAX_BLOCKS} [t, c, n, s] rows")
        for i, row in enumerate(self.setting):
            # torchvision's InvertedResidual only implements strides 1 and 2.
            t, c, n, s = row
            require(0 < t <= 64 and 0 < c <= MAX_CHANNELS and 0 < n <= MAX_BLOCKS and s in (1, 2), f"setting[{i}]",
                    f"must be [t, c, n, s]: t in 1..64, c in 1..{MAX_CHANNELS}, n in 1..{MAX_BLOCKS}, s 1 or 2, "
                    f"not {list(row)}")
        require(0 <= self.dropout < 1, "dropout", f"must be in [0, 1), not {self.dropout}")


ModelSpec = ResNetSpec | MobileNetV2Spec
FAMILIES: dict[str, type] = {"resnet": ResNetSpec, "mobilenet_v2": MobileNetV2Spec}


def parse_model_spec(name: str, raw: Any, where: str | None = None) -> ModelSpec:
    """One `models:` entry (a mapping with a `family`) as its spec; ConfigError naming the first bad field."""
    where = where or f"models.{name}"
    raw = dict(mapping(raw, where))
    family = raw.pop("family", None)
    if family not in FAMILIES:
        raise ConfigError(f"params: {where}.family: must be one of {', '.join(FAMILIES)}, not {family!r}")
    raw.pop("name", None)
    return build(FAMILIES[family], {"name": name, **raw}, where)


def spec_to_dict(spec: ModelSpec) -> dict:
    """A spec as plain data that parse_model_spec reads back (it travels inside checkpoints)."""
    return dataclasses.asdict(spec)


def _require_positive_list(value: tuple, key: str, most: int) -> None:
    require(0 < len(value) <= MAX_BLOCKS and all(0 < v <= most for v in value), key,
            f"must be a list of 1..{MAX_BLOCKS} integers in 1..{most}")
