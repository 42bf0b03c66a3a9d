"""A prepared dataset on disk: one format, written by `prepare` and read by `train` and `evaluate`.

Per split, `<split>_x.npy` (uint8 NHWC images) and `<split>_y.npy` (int64 labels); `classes.json`;
`meta.json` with the image size, the training split's channel statistics, counts and image ids.
NumPy only: the prepare stage needs no torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cnnbench.core.errors import CnnbenchError
from cnnbench.core.files import read_json_object, staging_dir

SPLITS = ("train", "val", "test")


@dataclass
class Prepared:
    """The cleaned dataset, in memory: uint8 NHWC images and int labels per split."""

    classes: list[str]
    x: dict[str, np.ndarray]
    y: dict[str, np.ndarray]
    ids: dict[str, list[str]]
    report: dict = field(default_factory=dict)
    # (near-duplicate pair entry, (held-out pixels, other pixels)) for the prepare stage's sheet; not written
    near_pairs: list = field(default_factory=list)


def write_prepared(prepared: Prepared, out_dir: str | Path) -> None:
    """Write the arrays (NumPy .npy, memory-mappable), classes.json and meta.json atomically."""
    mean, std = channel_stats(prepared.x["train"])
    meta = {
        "classes": prepared.classes,
        "image_size": int(prepared.x["train"].shape[1]),
        # Normalisation statistics from the training split only: nothing leaks from val/test.
        "mean": mean,
        "std": std,
        "counts": {split: int(len(prepared.y[split])) for split in SPLITS},
        "ids": prepared.ids,
    }
    with staging_dir(out_dir) as tmp:
        for split in SPLITS:
            np.save(tmp / f"{split}_x.npy", prepared.x[split])
            np.save(tmp / f"{split}_y.npy", prepared.y[split])
        (tmp / "classes.json").write_text(json.dumps(prepared.classes, indent=1) + "\n")
        (tmp / "meta.json").write_text(json.dumps(meta) + "\n")


def channel_stats(x: np.ndarray, chunk: int = 1 << 22) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 NHWC images, in [0, 1], from exact per-channel histograms.

    A float64 copy of a split would need 8x its size (12 GB for 10k 224x224 images); counting the
    256 values of each channel, `chunk` pixels at a time, is exact and about 5x faster.
    """
    if not len(x):
        return [0.5] * 3, [0.25] * 3
    pixels = x.reshape(-1, 3)
    hist = np.zeros((3, 256), np.int64)
    for start in range(0, len(pixels), chunk):
        part = pixels[start:start + chunk]
        for channel in range(3):
            hist[channel] += np.bincount(part[:, channel], minlength=256)
    values = np.arange(256, dtype=np.float64) / 255.0
    count = hist.sum(axis=1)
    mean = hist @ values / count
    std = np.sqrt(np.maximum(hist @ values ** 2 / count - mean ** 2, 0.0))
    return mean.round(6).tolist(), std.round(6).tolist()


@dataclass
class SplitArrays:
    x: np.ndarray  # (N, S, S, 3) uint8
    y: np.ndarray  # (N,) int64
    ids: list[str]


@dataclass
class PreparedData:
    """A prepared dataset as training reads it."""

    classes: list[str]
    mean: list[float]
    std: list[float]
    image_size: int
    splits: dict[str, SplitArrays]


def load_prepared(path: str | Path, splits: tuple[str, ...] = SPLITS) -> PreparedData:
    """Load a prepared dataset directory written by write_prepared; a damaged one is a clear error."""
    path = Path(path)
    meta = read_json_object(path / "meta.json")
    if meta is None:
        raise CnnbenchError(f"{path} is not a prepared dataset (no meta.json): run its prepare stage first.")
    try:
        loaded = {s: SplitArrays(np.load(path / f"{s}_x.npy"), np.load(path / f"{s}_y.npy"), list(meta["ids"][s]))
                  for s in splits}
        return PreparedData(list(meta["classes"]), meta["mean"], meta["std"], int(meta["image_size"]), loaded)
    except (OSError, ValueError, KeyError, TypeError) as err:  # np.load refuses pickled arrays: ValueError
        raise CnnbenchError(f"{path}: a damaged prepared dataset ({type(err).__name__}: {err}); "
                            f"re-run the stage that writes it.") from None
