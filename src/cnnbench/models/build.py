"""Model variants as data: specs parsed from params.yaml, and one builder per family.

Choices behind the registered variants (quoted by docs/models.md):

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

from typing import Any

import torch
from torch import nn

from cnnbench.core.errors import ConfigError
from cnnbench.models.specs import ModelSpec, ResNetSpec

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
    # Imported here: torchvision costs seconds to import, and only this family needs it.
    from torchvision.models import MobileNetV2

    model = MobileNetV2(num_classes=num_classes, width_mult=spec.width_mult,
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
