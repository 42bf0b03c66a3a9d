"""Model variants as data: the specs params.yaml's `models:` entries are parsed into.

A spec is the network's arguments, not code: `models.build_model` turns it into a module.
Part of the params layer (see config.py): torch-free, validated by the same one validator.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from cnnbench.errors import ConfigError
from cnnbench.validation import Validated, build, mapping, require


@dataclass(frozen=True)
class StemSpec(Validated):
    """The ResNet stem: one conv+BN+ReLU per width, then an optional 3x3/2 max-pool."""

    kernel: int
    widths: tuple[int, ...]
    strides: tuple[int, ...]
    pool: bool

    def validate(self) -> None:
        require(self.kernel > 0 and self.kernel % 2 == 1, "kernel", f"must be a positive odd integer, not {self.kernel}")
        _require_positive_list(self.widths, "widths")
        _require_positive_list(self.strides, "strides")
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
        for key in ("depths", "widths", "strides"):
            _require_positive_list(getattr(self, key), key)
        for key in ("widths", "strides"):
            n = len(getattr(self, key))
            require(n == len(self.depths), key, f"must have one entry per stage ({len(self.depths)}, as depths), not {n}")


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
        require(self.width_mult > 0, "width_mult", f"must be > 0, not {self.width_mult}")
        require(self.stem_stride > 0, "stem_stride", f"must be > 0, not {self.stem_stride}")
        require(len(self.setting) > 0, "setting", "must be a non-empty list of [t, c, n, s] rows")
        for i, row in enumerate(self.setting):
            # torchvision's InvertedResidual only implements strides 1 and 2.
            require(all(v > 0 for v in row) and row[3] in (1, 2), f"setting[{i}]",
                     f"must be [t, c, n, s]: positive integers, s 1 or 2, not {list(row)}")
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


def _require_positive_list(value: tuple, key: str) -> None:
    require(len(value) > 0 and all(v > 0 for v in value), key, "must be a non-empty list of positive integers")
