"""prepare: decode, validate, clean, resize and split a fetched source into fast arrays.

Scraped image sets are dirty. Every image that does not make it into the arrays is listed in the
data report with its reason; nothing is dropped silently and nothing dirty crashes the stage.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
import zipfile
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from cnnbench.config import ConfigError, DatasetConfig
from cnnbench.data.readers import Item, SourceData, read_source
from cnnbench.errors import CnnbenchError
from cnnbench.files import read_json_object, staging_dir, write_json_atomic

SPLITS = ("train", "val", "test")
# When the same image sits in two splits, the copy in the later split is the one kept: the test set
# must stay untouched, and a validation image may not be trained on either.
SPLIT_PRIORITY = {"test": 0, "val": 1, "train": 2}


@dataclass
class Prepared:
    """The cleaned dataset, in memory: uint8 NHWC images and int labels per split."""

    classes: list[str]
    x: dict[str, np.ndarray]
    y: dict[str, np.ndarray]
    ids: dict[str, list[str]]
    report: dict = field(default_factory=dict)


# ------------------------------------------------------------------ decoding


# Decoding limits, so that no file from anywhere can exhaust memory. Every image here ends at a few
# hundred pixels a side and camera photos are 12-50 MP: 64 MP refuses only what no dataset for this tool
# needs. It is checked from the header, before decoding. At the limit one decode holds 4 bytes a pixel
# decoded, then 2 x 3 as RGB (the conversion and its hashed copy): a 64 MP RGBA PNG peaks at 650 MB,
# plus the file itself; a typical photo needs a few MB.
MAX_IMAGE_PIXELS = 64_000_000
# No image within the pixel limit is larger encoded than raw RGBA; a zip member declaring more is refused
# before it is read (read whole, a zip-bomb member would take gigabytes).
MAX_FILE_BYTES = 4 * MAX_IMAGE_PIXELS
# Decoding processes by default: each holds one image at a time, so at most DEFAULT_WORKERS x 1 GB in
# the worst case (every worker on a file at both limits at once).
DEFAULT_WORKERS = 4


@dataclass
class Decoded:
    pixels: np.ndarray | None  # (S, S, 3) uint8, or None when the image was rejected
    digest: str = ""           # hash of the decoded RGB pixels, for duplicate detection
    mode: str = ""             # the original PIL mode (CMYK, L, P, ...), reported when converted
    error: str = ""


def decode_image(data: bytes | np.ndarray, size: int) -> Decoded:
    """Decode one image (encoded bytes or a pixel array) to RGB at size x size, or say why not.

    An image over MAX_IMAGE_PIXELS is refused before it is decoded. A JPEG at least twice the target
    size is decoded at a reduced scale (1/2 to 1/8, never below `size`), which saves memory and time.
    """
    if isinstance(data, np.ndarray):
        image = Image.fromarray(data)
    else:
        if len(data) == 0:
            return Decoded(None, error="empty file")
        try:
            image = _open_within_limits(data, size)
            image.load()  # decodes fully: truncated files fail here, not later in training
        except _TooLarge as err:
            return Decoded(None, error=str(err))
        except UnidentifiedImageError:  # its message names a BytesIO address: not stable across runs
            return Decoded(None, error="undecodable: not an image format Pillow knows")
        except Exception as err:  # PIL raises many types for bad data
            return Decoded(None, error=f"undecodable: {type(err).__name__}: {err}")
    mode = image.mode
    try:
        rgb = image if mode == "RGB" else image.convert("RGB")
    except Exception as err:  # modes without an RGB conversion
        return Decoded(None, error=f"undecodable: cannot convert mode {mode} to RGB: {err}")
    del image  # the decoded original (up to 4 bytes a pixel) is not needed past the conversion
    pixels = np.asarray(rgb, dtype=np.uint8)  # the one copy out of PIL; hashed without another
    digest = hashlib.sha1(pixels)
    digest.update(repr(rgb.size).encode())
    if rgb.size != (size, size):
        # Centre-crop to square, then resize: keeps the aspect ratio of non-square images.
        pixels = np.asarray(ImageOps.fit(rgb, (size, size), Image.BILINEAR), dtype=np.uint8)
    return Decoded(pixels, digest.hexdigest(), mode)


class _TooLarge(Exception):
    """An image refused for its size before decoding; the message is the reason reported."""


def _open_within_limits(data: bytes, size: int) -> Image.Image:
    """The image in `data`, opened (header only) and checked against MAX_IMAGE_PIXELS, ready to load."""
    limit = f"limit {MAX_IMAGE_PIXELS // 10**6} MP"
    try:
        with warnings.catch_warnings():  # Pillow warns from 89 MP; the check below refuses those anyway
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:  # over twice Pillow's own limit: it refuses to open it at all
        raise _TooLarge(f"too large: over {2 * (Image.MAX_IMAGE_PIXELS or 0) // 10**6} MP ({limit})") from None
    width, height = image.size
    if width * height > MAX_IMAGE_PIXELS:
        raise _TooLarge(f"too large: {width}x{height} pixels ({limit})")
    if min(width, height) >= 2 * size:
        image.draft("RGB", (size, size))  # JPEG only; other formats ignore it
    return image


_WORKER_ARCHIVE = None


def _worker_init(archive_path: str | None) -> None:
    """Open the archive once per decoding process (None: close it)."""
    global _WORKER_ARCHIVE
    if _WORKER_ARCHIVE is not None:
        _WORKER_ARCHIVE.close()
    _WORKER_ARCHIVE = zipfile.ZipFile(archive_path) if archive_path is not None else None


def _decode_member(args: tuple[str, int]) -> Decoded:
    member, size = args
    try:
        declared = _WORKER_ARCHIVE.getinfo(member).file_size  # zipfile never returns more than this
        if declared > MAX_FILE_BYTES:
            return Decoded(None, error=f"too large: a {declared:,}-byte file (limit {MAX_FILE_BYTES:,})")
        data = _WORKER_ARCHIVE.read(member)
    except (zipfile.BadZipFile, OSError, EOFError) as err:  # one damaged member must not stop the stage
        return Decoded(None, error=f"unreadable in the archive: {err}")
    return decode_image(data, size)


def decode_all(source: SourceData, items: list[Item], size: int, workers: int | None = None) -> list[Decoded]:
    """Decode every item, in several processes when they are encoded files in an archive."""
    if not items:
        return []
    if source.archive is None:  # pixels already in memory (CIFAR-10, digits): one process is fastest
        return [decode_image(item.payload, size) for item in tqdm(items, desc="decode", unit="img",
                                                                   mininterval=2, leave=False)]
    workers = workers or min(DEFAULT_WORKERS, os.cpu_count() or 1)
    jobs = [(item.payload, size) for item in items]
    if workers <= 1:
        _worker_init(str(source.archive))
        try:
            return [_decode_member(job) for job in tqdm(jobs, desc="decode", unit="img", mininterval=2)]
        finally:
            _worker_init(None)
    with ProcessPoolExecutor(workers, initializer=_worker_init, initargs=(str(source.archive),)) as pool:
        return list(tqdm(pool.map(_decode_member, jobs, chunksize=32), total=len(jobs),
                         desc="decode", unit="img", mininterval=2))


# ------------------------------------------------------------------ cleaning and splitting


def find_duplicates(items: list[Item], digests: list[str]) -> dict[int, str]:
    """Indices to drop, with reasons: repeats inside a split, and train/val copies of a later split's image.

    The copy kept is the one in the highest-priority split (test, then val, then train), and the
    first by id inside a split, so the outcome does not depend on the order of the files.
    """
    first: dict[str, int] = {}
    order = sorted(range(len(items)), key=lambda i: (SPLIT_PRIORITY.get(items[i].split, 3), items[i].id))
    drop = {}
    for i in order:
        kept = first.setdefault(digests[i], i)
        if kept == i:
            continue
        other = items[kept]
        relabelled = f" (labelled {other.label} there)" if other.label != items[i].label else ""
        if other.split == items[i].split:
            drop[i] = f"duplicate: same pixels as {other.id}{relabelled}, which is kept"
        else:
            drop[i] = (f"leak: the same image is in the {other.split} split as {other.id}{relabelled}; "
                       f"that copy is kept")
    return drop


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (rest, carved) with `fraction` of each class carved out (scikit-learn, seeded)."""
    from sklearn.model_selection import train_test_split

    index = np.arange(len(labels))
    try:
        rest, carved = train_test_split(index, test_size=fraction, stratify=labels, random_state=seed)
    except ValueError as err:
        raise CnnbenchError(f"cannot carve a stratified {fraction:.0%} split: {err}") from None
    return np.sort(rest), np.sort(carved)


def assign_splits(split_names: np.ndarray, labels: np.ndarray, cfg: DatasetConfig) -> np.ndarray:
    """Final split name per item: the source's own splits, plus any carved out of train by params.

    Both fractions are of the source's train split as a whole (as DatasetConfig validates them), so
    val_fraction 0.1 with test_fraction 0.2 gives 10% val, not 10% of the 80% left after test.
    """
    split_names = split_names.copy()
    check_split_fractions(set(split_names), cfg)
    total = np.count_nonzero(split_names == "train")
    for name, fraction in (("test", cfg.test_fraction), ("val", cfg.val_fraction)):
        if fraction == 0:
            continue
        pool = np.flatnonzero(split_names == "train")
        if not len(pool):
            raise CnnbenchError(f"dataset {cfg.name}: no train images left to carve a {name} split from.")
        _, carved = stratified_split(labels[pool], min(fraction * total / len(pool), 1.0), cfg.split_seed)
        split_names[pool[carved]] = name
    return split_names


def check_split_fractions(present: set[str], cfg: DatasetConfig) -> None:
    """Refuse to carve a split out of train when the source already has one of that name."""
    for name, fraction in (("test", cfg.test_fraction), ("val", cfg.val_fraction)):
        if fraction and name in present:
            raise ConfigError(
                f"params: datasets.{cfg.name}.{name}_fraction: the source already has a {name} split; set it to 0")


def prepare_dataset(cfg: DatasetConfig, raw_dir: str | Path, workers: int | None = None) -> Prepared:
    """Read a fetched source and return the cleaned, resized, split dataset with its data report."""
    source = read_source(Path(raw_dir))
    unknown = sorted(set(cfg.drop_classes) - set(source.classes))
    if unknown:
        example = f" (classes look like {source.classes[0]!r})" if source.classes else ""
        raise ConfigError(f"params: datasets.{cfg.name}.drop_classes: no such class {unknown[0]!r} in the data"
                          + example)
    check_split_fractions({item.split for item in source.items}, cfg)  # before minutes of decoding
    dropped: list[dict] = [dict(entry) for entry in source.skipped]
    drop_set = set(cfg.drop_classes)
    items = [item for item in source.items if item.label not in drop_set]
    dropped_classes = dict(Counter(item.label for item in source.items if item.label in drop_set))

    decoded = decode_all(source, items, cfg.image_size, workers)
    good = []
    for item, result in zip(items, decoded):
        if result.pixels is None:
            dropped.append(_drop(item, result.error))
        else:
            good.append((item, result))
    duplicate = find_duplicates([item for item, _ in good], [d.digest for _, d in good])
    for i, reason in duplicate.items():
        dropped.append(_drop(good[i][0], reason))
    good = [pair for i, pair in enumerate(good) if i not in duplicate]
    if not good:
        raise CnnbenchError(f"dataset {cfg.name}: no usable image is left after cleaning; see the dropped list.")

    classes = sorted({item.label for item, _ in good}, key=source.class_order)
    class_index = {name: i for i, name in enumerate(classes)}
    labels = np.array([class_index[item.label] for item, _ in good], dtype=np.int64)
    splits = assign_splits(np.array([item.split for item, _ in good]), labels, cfg)

    prepared = Prepared(classes=classes, x={}, y={}, ids={})
    empty = np.zeros((0, cfg.image_size, cfg.image_size, 3), np.uint8)
    for split in SPLITS:
        index = np.flatnonzero(splits == split)
        # Stacked split by split: one copy of the pixels at a time, not a whole-dataset array as well.
        prepared.x[split] = np.stack([good[i][1].pixels for i in index]) if len(index) else empty
        prepared.y[split] = labels[index]
        prepared.ids[split] = [good[i][0].id for i in index]
    converted = Counter(d.mode for _, d in good if d.mode not in ("RGB",))
    prepared.report = _data_report(cfg, source, prepared, dropped, dropped_classes, dict(converted))
    return prepared


def _drop(item: Item, reason: str) -> dict:
    return {"id": item.id, "split": item.split, "label": item.label, "reason": reason}


def _data_report(cfg, source, prepared: Prepared, dropped, dropped_classes, converted) -> dict:
    counts = {}
    for split in SPLITS:
        per_class = np.bincount(prepared.y[split], minlength=len(prepared.classes))
        counts[split] = {"total": int(per_class.sum()),
                         "per_class": {name: int(n) for name, n in zip(prepared.classes, per_class)}}
    reasons = Counter(entry["reason"].split(":")[0] for entry in dropped)
    return {
        "dataset": cfg.name,
        "source": source.description,
        "image_size": cfg.image_size,
        "num_classes": len(prepared.classes),
        "counts": counts,
        "dropped_classes": dropped_classes,
        "converted_to_rgb": converted,
        "dropped_by_reason": dict(sorted(reasons.items())),
        "dropped": sorted(dropped, key=lambda e: (e["reason"], e["id"])),
    }


# ------------------------------------------------------------------ writing and loading


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


def write_data_report(report: dict, path: str | Path) -> None:
    write_json_atomic(path, report)


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
