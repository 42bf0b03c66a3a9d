"""What `train` writes and `evaluate` / `predict` read: two typed checkpoints of tensors and plain data.

Both load with `torch.load(weights_only=True)`, which refuses any pickled object but tensors and
containers of plain values: a checkpoint handed over by a user or pulled from a DVC remote can
hold weights, never code. A checkpoint's bytes depend only on what determines the weights
(wall-clock timings live in TIMINGS beside it), so a seeded CPU rerun reproduces them.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cnnbench.core.errors import CnnbenchError
from cnnbench.core.files import atomic_path

# What a best.pt may describe before a model is built from it: the bounds of params (specs.py: the network)
from cnnbench.params.limits import MAX_CLASSES, MAX_IMAGE_SIZE

LAST, BEST = "last.pt", "best.pt"  # the resumable state of the run, and its best-validation model
TIMINGS = "timings.json"           # per-epoch wall-clock seconds, beside the checkpoints (see .dvcignore)


@dataclass(frozen=True)
class ModelCheckpoint:
    """best.pt: the network and everything needed to preprocess its inputs and name its outputs."""

    weights: dict[str, torch.Tensor]
    spec: dict[str, Any]          # config.spec_to_dict of the model spec
    run: str
    dataset: str
    classes: list[str]
    image_size: int
    mean: list[float]
    std: list[float]
    epoch: int                    # 1-based epoch that produced these weights
    val_acc: float | None         # its validation accuracy; None when the run has no validation split


@dataclass(frozen=True)
class TrainingState:
    """last.pt: where an unfinished run stands, to resume it exactly."""

    epoch: int                    # epochs completed
    weights: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    schedule: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)  # per epoch: losses, accuracies, lr
    best_val_acc: float = -1.0
    config_hash: str = ""         # what the run was trained with: resuming other settings would be wrong


def save_checkpoint(checkpoint: ModelCheckpoint | TrainingState, path: str | Path) -> Path:
    """Write a checkpoint atomically: a kill mid-save leaves the previous one intact."""
    with atomic_path(path) as tmp:
        torch.save(dataclasses.asdict(checkpoint), tmp)
    return Path(path)


def load_model_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> ModelCheckpoint:
    """Read a best.pt safely; a clear error for anything that is not one, or that describes a model too large."""
    ckpt = _load(path, ModelCheckpoint, device)
    size, classes = ckpt.image_size, ckpt.classes
    if not (isinstance(size, int) and 4 <= size <= MAX_IMAGE_SIZE):
        raise CnnbenchError(f"{path}: image_size must be an integer in 4..{MAX_IMAGE_SIZE}; not a checkpoint "
                            f"cnnbench writes.")
    names = isinstance(classes, list) and all(isinstance(c, str) for c in classes)
    if not (names and 1 <= len(classes) <= MAX_CLASSES):
        raise CnnbenchError(f"{path}: classes must be a list of 1..{MAX_CLASSES:,} names; not a checkpoint cnnbench "
                            f"writes.")
    if not isinstance(ckpt.spec, dict):
        raise CnnbenchError(f"{path}: spec must be a mapping; not a checkpoint cnnbench writes.")
    return ckpt


def load_training_state(path: str | Path, device: torch.device | str = "cpu") -> TrainingState:
    """Read a last.pt safely; a clear error for anything that is not one."""
    return _load(path, TrainingState, device)


def _load(path: str | Path, cls, device):
    path = Path(path)
    try:
        data = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise CnnbenchError(f"{path}: no such checkpoint") from None
    except Exception as err:  # weights_only refuses code with UnpicklingError; garbage raises many types
        first = next(iter(str(err).strip().splitlines()), "")
        raise CnnbenchError(f"{path}: not a cnnbench checkpoint ({type(err).__name__}: {first}). cnnbench loads "
                            f"only tensors and plain data from a checkpoint, never code.") from None
    names = {f.name for f in dataclasses.fields(cls)}
    if not isinstance(data, dict) or not names <= set(data):
        missing = sorted(names - set(data)) if isinstance(data, dict) else ["(not a mapping)"]
        raise CnnbenchError(f"{path}: not a cnnbench {Path(_file_of(cls)).stem} checkpoint "
                            f"(missing {', '.join(missing)}); re-run the train stage that writes it.")
    return cls(**{k: data[k] for k in names})


def _file_of(cls) -> str:
    return BEST if cls is ModelCheckpoint else LAST


def weights_digest(weights: dict[str, torch.Tensor]) -> str:
    """A short sha256 of a state dict's names, dtypes, shapes and bytes (any device, any dtype).

    The train stage's summary records it beside the weights it describes, so a log and a checkpoint that come
    from two trainings (a log restored from git beside weights trained on another machine) are told apart."""
    digest = hashlib.sha256()
    for name, tensor in weights.items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]
