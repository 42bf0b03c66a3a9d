"""Pretrained weights: torchvision's ImageNet files or saved state dicts, loaded into cnnbench models.

A torchvision ResNet's state dict differs from ours only in the stem's names (see
`torchvision_to_cnnbench_keys`); MobileNetV2 is torchvision's own module, so its keys match.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnbench.core.errors import CnnbenchError
from cnnbench.models.specs import ModelSpec
from cnnbench.params.config import ConfigError


def _get_weight(name: str):
    # Imported on use: torchvision costs seconds to import, and only pretrained runs need it.
    from torchvision.models import get_weight

    return get_weight(name)


def check_weights_name(name: str | None, where: str) -> None:
    """Raise ConfigError unless `name` is None or names torchvision weights (ResNet18_Weights.IMAGENET1K_V1)."""
    if name is None:
        return
    try:
        _get_weight(name)
    except (ValueError, KeyError, AttributeError):
        raise ConfigError(f"{where}: unknown torchvision weights {name!r} "
                          "(expected e.g. ResNet18_Weights.IMAGENET1K_V1)") from None


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
    # params.yaml is validated without torch, so the weights name is first checked here.
    check_weights_name(spec.torchvision_weights, f"params: models.{spec.name}.torchvision_weights")
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
        imagenet = _get_weight(spec.torchvision_weights)
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
