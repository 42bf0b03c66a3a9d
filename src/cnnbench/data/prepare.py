"""prepare: decode, validate, clean, resize and split a fetched source into fast arrays.

Scraped image sets are dirty. Every image that does not make it into the arrays is listed in the
data report with its reason; nothing is dropped silently and nothing dirty crashes the stage.
"""

from __future__ import annotations

import os
import zipfile
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cnnbench.core.errors import CnnbenchError
from cnnbench.core.files import write_json_atomic
from cnnbench.data.arrays import SPLITS, Prepared
from cnnbench.data.images import BACKGROUND, MAX_FILE_BYTES, Decoded, decode_image
from cnnbench.data.near_duplicates import find_near_pairs, phash_pair
from cnnbench.data.readers import Item, SourceData, read_source
from cnnbench.params.config import ConfigError, DatasetConfig

# When the same image sits in two splits, the copy in the later split is the one kept: the test set
# must stay untouched, and a validation image may not be trained on either.
SPLIT_PRIORITY = {"test": 0, "val": 1, "train": 2}


# ------------------------------------------------------------------ decoding in several processes

# Decoding processes by default: each holds one image at a time (see data/images.py), so at most
# DEFAULT_WORKERS x 1 GB in the worst case (every worker on a file at both limits at once).
DEFAULT_WORKERS = 4


_WORKER_ARCHIVE = None


def _worker_init(archive_path: str | None) -> None:
    """Open the archive once per decoding process (None: close it)."""
    global _WORKER_ARCHIVE
    if _WORKER_ARCHIVE is not None:
        _WORKER_ARCHIVE.close()
    _WORKER_ARCHIVE = zipfile.ZipFile(archive_path) if archive_path is not None else None


def _decode_member(args: tuple[str, int, Callable | None]) -> Decoded:
    member, size, hasher = args
    try:
        declared = _WORKER_ARCHIVE.getinfo(member).file_size  # zipfile never returns more than this
        if declared > MAX_FILE_BYTES:
            return Decoded(None, error=f"too large: a {declared:,}-byte file (limit {MAX_FILE_BYTES:,})")
        data = _WORKER_ARCHIVE.read(member)
    except (zipfile.BadZipFile, OSError, EOFError) as err:  # one damaged member must not stop the stage
        return Decoded(None, error=f"unreadable in the archive: {err}")
    return decode_image(data, size, hasher)


def decode_all(source: SourceData, items: list[Item], size: int, workers: int | None = None,
               hasher: Callable | None = None) -> list[Decoded]:
    """Decode every item, in several processes when they are encoded files in an archive.

    `hasher` (see decode_image) is applied to each full-size image; its results are in `Decoded.hashes`.
    """
    if not items:
        return []
    if source.archive is None:  # pixels already in memory (CIFAR-10, digits): one process is fastest
        return [decode_image(item.payload, size, hasher) for item in tqdm(items, desc="decode", unit="img",
                                                                           mininterval=2, leave=False)]
    workers = workers or min(DEFAULT_WORKERS, os.cpu_count() or 1)
    jobs = [(item.payload, size, hasher) for item in items]
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


def _stacked(classes: list[str], good: list, labels: np.ndarray, splits: np.ndarray, image_size: int) -> Prepared:
    """The kept images as one array per split, with their labels and ids."""
    prepared = Prepared(classes=classes, x={}, y={}, ids={})
    empty = np.zeros((0, image_size, image_size, 3), np.uint8)
    for split in SPLITS:
        index = np.flatnonzero(splits == split)
        # Stacked split by split: one copy of the pixels at a time, not a whole-dataset array as well.
        prepared.x[split] = np.stack([good[i][1].pixels for i in index]) if len(index) else empty
        prepared.y[split] = labels[index]
        prepared.ids[split] = [good[i][0].id for i in index]
    return prepared


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

    decoded = decode_all(source, items, cfg.image_size, workers, hasher=phash_pair)
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
    # Near-duplicates are looked for in the final splits, so carved val/test splits are covered too.
    pairs, near_drop = near_duplicates([item for item, _ in good], [d.hashes for _, d in good], splits, cfg)
    for i, reason in near_drop.items():
        dropped.append(_drop(good[i][0], reason, str(splits[i])))
    near_pixels = [(good[p["index"][0]][1].pixels, good[p["index"][1]][1].pixels)
                   for p in pairs if p["cross_split"]][:MAX_SHEET_PAIRS]
    if near_drop:
        keep = np.array([i not in near_drop for i in range(len(good))])
        good = [pair for pair, k in zip(good, keep) if k]
        labels, splits = labels[keep], splits[keep]

    prepared = _stacked(classes, good, labels, splits, cfg.image_size)
    prepared.report = _data_report(cfg, source, prepared, dropped, dropped_classes,
                                   decoding_counts([d for _, d in good], splits))
    if pairs:  # absent when none is found, so a clean dataset's report is unchanged
        for p in pairs:
            del p["index"]
        prepared.report["near_duplicates"] = {
            "max_distance": cfg.near_duplicates.max_distance, "pairs": pairs,
            "cross_split": sum(p["cross_split"] for p in pairs), "removed": len(near_drop),
            "label_conflicts": [p for p in pairs if p["label_conflict"]]}
    prepared.near_pairs = list(zip([p for p in pairs if p["cross_split"]], near_pixels))
    return prepared


# At most this many cross-split pairs are drawn on the near-duplicate sheet (all are in the report).
MAX_SHEET_PAIRS = 40


def near_duplicates(items: list[Item], hashes: list, splits: np.ndarray, cfg: DatasetConfig
                    ) -> tuple[list[dict], dict[int, str]]:
    """The near-duplicate pairs, each with its action, and the indices to drop with reasons.

    In a pair, `held_out` is the copy in the higher-priority split (test, val, train; then by id). Across
    splits the train copy is removed when params say so: no held-out image keeps a near twin in train.
    """
    opts = cfg.near_duplicates
    found = find_near_pairs(np.array([h[0] for h in hashes], np.uint64), np.array([h[1] for h in hashes], np.uint64),
                            opts.max_distance) if hashes else []
    pairs, drop = [], {}
    for pair in found:
        a, b = sorted((pair.a, pair.b), key=lambda i: (SPLIT_PRIORITY[str(splits[i])], items[i].id))
        cross = splits[a] != splits[b]
        conflict = items[a].label != items[b].label
        if cross and splits[b] == "train" and opts.remove_train_copies:
            action = "train copy removed"
            relabelled = f" (labelled {items[a].label} there)" if conflict else ""
            drop.setdefault(b, f"near-duplicate: pHash distance {pair.distance}{' (mirrored)' if pair.flipped else ''} "
                               f"to {items[a].id} in the {splits[a]} split{relabelled}; that copy is kept")
        else:
            action = "kept"
        pairs.append({"held_out": items[a].id, "held_out_split": str(splits[a]), "held_out_label": items[a].label,
                      "other": items[b].id, "other_split": str(splits[b]), "other_label": items[b].label,
                      "distance": pair.distance, "mirrored": pair.flipped, "cross_split": bool(cross),
                      "label_conflict": conflict, "action": action, "index": (a, b)})
    _check_removed_share(len(drop), int(np.sum(splits == "train")), cfg)
    return pairs, drop


def _check_removed_share(removed: int, train: int, cfg: DatasetConfig) -> None:
    """Stop when near-duplicate removal would take more of the train split than max_removed_share: on small or
    uniform images (synthetic shapes, tiny thumbnails) pHash calls unrelated images twins."""
    opts, where = cfg.near_duplicates, f"datasets.{cfg.name}.near_duplicates"
    if train and removed > opts.max_removed_share * train:
        raise ConfigError(
            f"params: {where}: removing {removed} of {train} training images ({removed / train:.0%}) as near-"
            f"duplicates of held-out images, more than max_removed_share ({opts.max_removed_share:.0%}); pHash at "
            f"max_distance {opts.max_distance} may be calling unrelated images twins on this data. Look at the "
            f"pairs, then lower {where}.max_distance, or raise {where}.max_removed_share to remove them anyway.")


def _drop(item: Item, reason: str, split: str | None = None) -> dict:
    return {"id": item.id, "split": split or item.split, "label": item.label, "reason": reason}


# Decoded's flags -> the data report's names for them (docs/datasets.md).
VIEWER_FIXES = {"oriented": "rotated_by_exif", "composited": "composited_on_background",
                "rescaled": "rescaled_to_8_bits"}


def decoding_counts(decoded: list[Decoded], splits: np.ndarray) -> dict:
    """What decoding changed in the kept images: original modes converted to RGB, and per final split
    how many were turned upright by EXIF, composited on the background, rescaled to 8 bits."""
    viewer: dict = {"background_rgb": list(BACKGROUND)}
    for flag, key in VIEWER_FIXES.items():
        viewer[key] = {split: sum(bool(getattr(d, flag)) for d, s in zip(decoded, splits) if s == split)
                       for split in SPLITS}
    return {"converted_to_rgb": dict(Counter(d.mode for d in decoded if d.mode != "RGB")),
            "decoded_as_viewer": viewer}


def _data_report(cfg, source, prepared: Prepared, dropped, dropped_classes, decoding: dict) -> dict:
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
        **decoding,
        "dropped_by_reason": dict(sorted(reasons.items())),
        "dropped": sorted(dropped, key=lambda e: (e["reason"], e["id"])),
    }


# ------------------------------------------------------------------ writing and loading


def write_data_report(report: dict, path: str | Path) -> None:
    write_json_atomic(path, report)
