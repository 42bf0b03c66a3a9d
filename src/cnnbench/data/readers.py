"""Readers: turn each raw format into one list of items, without decoding images yet."""

from __future__ import annotations

import csv
import io
import pickle
import posixpath
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from cnnbench.data.fetch import read_manifest
from cnnbench.errors import DataError

# Files that operating systems and archivers leave behind; reported as junk, never decoded.
JUNK_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini"}
CSV_COLUMNS = ("filepaths", "labels", "data set")
SPLIT_NAMES = {"train": "train", "valid": "val", "validation": "val", "val": "val", "test": "test"}


@dataclass
class Item:
    id: str                      # file path inside the archive, or "<batch>[<index>]"
    label: str                   # class name
    split: str                   # train | val | test as given by the source ("train" when it gives none)
    payload: object              # archive member name (str) or pixels (np.ndarray)


@dataclass
class SourceData:
    items: list[Item]
    classes: list[str]                      # every class the source declares, in its own order
    description: str
    archive: Path | None = None             # zip whose members the payloads name; None for arrays
    skipped: list[dict] = field(default_factory=list)  # rejected before decoding, with reasons

    def class_order(self, name: str) -> int:
        return self.classes.index(name)


def read_source(raw_dir: Path) -> SourceData:
    """Read a fetched source directory (see fetch.py) according to its recorded format."""
    manifest = read_manifest(raw_dir)
    path = raw_dir / manifest["file"]
    readers: dict[str, Callable[[Path], SourceData]] = {
        "cifar10-python": read_cifar10, "image-csv": read_image_csv, "npz": read_npz}
    try:
        return readers[manifest["format"]](path)
    except (OSError, tarfile.TarError, zipfile.BadZipFile, pickle.UnpicklingError, EOFError) as err:
        raise DataError(f"{path}: cannot be read as {manifest['format']}: {err}. Re-run its fetch stage.") from None


def read_cifar10(path: Path) -> SourceData:
    """The official CIFAR-10 python tarball: data_batch_1..5 are train, test_batch is test."""
    with tarfile.open(path, "r:gz") as tar:
        members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
        missing = [n for n in ("batches.meta", "test_batch", *(f"data_batch_{i}" for i in range(1, 6)))
                   if n not in members]
        if missing:
            raise DataError(f"{path}: not a CIFAR-10 python archive (missing {', '.join(missing)}).")

        def load(name: str) -> dict:
            return pickle.load(tar.extractfile(members[name]), encoding="bytes")

        classes = [c.decode() for c in load("batches.meta")[b"label_names"]]
        items = []
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            batch = load(name)
            images = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            split = "test" if name == "test_batch" else "train"
            for i, (image, label) in enumerate(zip(images, batch[b"labels"])):
                items.append(Item(f"{name}[{i}]", classes[label], split, image))
    return SourceData(items, classes, f"CIFAR-10 python archive {path.name}")


def read_npz(path: Path) -> SourceData:
    """An .npz with `images` (N,H,W[,3] uint8), `labels` (N,) and `classes` (names)."""
    with np.load(path) as data:
        images, labels, classes = data["images"], data["labels"], [str(c) for c in data["classes"]]
    items = [Item(f"{path.stem}[{i}]", classes[int(label)], "train", image)
             for i, (image, label) in enumerate(zip(images, labels))]
    return SourceData(items, classes, f"arrays {path.name}")


def read_image_csv(path: Path) -> SourceData:
    """The Kaggle layout: a zip of train/valid/test class folders and a CSV that lists every image.

    The CSV is the source of truth for labels and splits. Rows whose file is missing and files the
    CSV does not list (junk such as .DS_Store included) are reported as skipped.
    """
    with zipfile.ZipFile(path) as zf:
        names = [n for n in zf.namelist() if not n.endswith("/")]
        csv_name = _find_csv(zf, names, path)
        base = posixpath.dirname(csv_name)
        reader = csv.DictReader(io.StringIO(zf.read(csv_name).decode("utf-8-sig")))
        # _find_csv matches the columns ignoring case and spaces; read them the same way.
        reader.fieldnames = [(name or "").strip().lower() for name in reader.fieldnames or []]
        rows = list(reader)
        empty = {n for n in names if zf.getinfo(n).file_size == 0}
    present = set(names)
    items, skipped, listed = [], [], {csv_name}
    classes: list[str] = []
    for line, row in enumerate(rows, start=2):
        rel, label = (row.get("filepaths") or "").strip().replace("\\", "/"), (row.get("labels") or "").strip()
        split = SPLIT_NAMES.get((row.get("data set") or "").strip().lower())
        member = posixpath.normpath(posixpath.join(base, rel)) if rel else ""
        listed.add(member)
        if not rel or not label or split is None:
            skipped.append({"id": f"{csv_name}:{line}", "split": row.get("data set", ""), "label": label,
                            "reason": "bad CSV row: empty path or label, or unknown `data set`"})
            continue
        if label not in classes:
            classes.append(label)
        if member not in present:
            skipped.append({"id": member, "split": split, "label": label,
                            "reason": "missing file: listed in the CSV, absent from the archive"})
        elif member in empty:
            skipped.append({"id": member, "split": split, "label": label, "reason": "empty file"})
        else:
            items.append(Item(member, label, split, member))
    for name in sorted(present - listed):
        kind = "junk file" if posixpath.basename(name) in JUNK_NAMES else "not listed in the CSV"
        skipped.append({"id": name, "split": "", "label": "", "reason": kind})
    return SourceData(items, sorted(classes), f"image archive {path.name} ({csv_name})", archive=path,
                      skipped=skipped)


def _find_csv(zf: zipfile.ZipFile, names: list[str], path: Path) -> str:
    for name in sorted((n for n in names if n.lower().endswith(".csv")), key=len):
        head = zf.read(name)[:4096].decode("utf-8-sig", "replace")
        header = next(csv.reader(io.StringIO(head)), [])  # an empty CSV has no header at all
        if all(col in [c.strip().lower() for c in header] for col in CSV_COLUMNS):
            return name
    raise DataError(f"{path}: no CSV with the columns {', '.join(CSV_COLUMNS)} (the Kaggle layout).")
