"""Readers: turn each raw format into one list of items, without decoding images yet."""

from __future__ import annotations

import csv
import io
import pickle
import posixpath
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cnnbench.core.errors import CnnbenchError, DataError, one_line
from cnnbench.data.fetch import MANIFEST, check_zip_directory, read_manifest

# Files that operating systems and archivers leave behind; reported as junk, never decoded.
JUNK_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini"}
CSV_COLUMNS = ("filepaths", "labels", "data set")
# What torchvision's ImageFolder accepts as images; any other file in a class folder is reported as skipped.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
SPLIT_NAMES = {"train": "train", "valid": "val", "validation": "val", "val": "val", "test": "test"}
# The Kaggle CSV lists 13,594 images in about 1 MB; one of 64 MB would list millions (and is read whole).
MAX_CSV_BYTES = 64 << 20


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
    path, fmt = raw_dir / manifest["file"], manifest["format"]
    readers: dict[str, Callable[[Path], SourceData]] = {
        "cifar10-python": read_cifar10, "image-csv": read_image_csv, "image-folder": read_image_folder,
        "npz": read_npz}
    if fmt not in readers:
        raise DataError(f"{raw_dir / MANIFEST}: unknown format {fmt!r} (known: {', '.join(readers)}); "
                        f"re-run its fetch stage.")
    try:
        data = readers[fmt](path)
    except (OSError, EOFError, tarfile.TarError, zipfile.BadZipFile, zlib.error, csv.Error, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot be read as {fmt}: {one_line(err)}. Check the source's `format` in "
                        f"params.yaml, or re-run its fetch stage.") from None
    if isinstance(manifest.get("unverified"), str):  # a download accepted without a checksum: the report says so
        data.description += f" (UNVERIFIED: {manifest['unverified']})"
    # What fetch left out of a directory source (links, special files) is reported with the rest.
    data.skipped += [{"split": "", "label": "", **entry} for entry in manifest.get("skipped", [])
                     if isinstance(entry, dict)]
    return data


# ------------------------------------------------------------------ CIFAR-10 python batches


def _latin1_bytes(text: str, encoding: str) -> bytes:
    """`_codecs.encode` as Python 3 pickles bytes at protocol 2 (latin-1), and no other codec."""
    if encoding != "latin1":
        raise pickle.UnpicklingError(f"refused _codecs.encode to {encoding!r}")
    return text.encode("latin1")


# The published batches are Python 2 pickles written by numpy 1.x: dicts of byte strings, lists, ints
# and one uint8 array each. Unpickling may build those and nothing else, because a pickle can call any
# importable function (os.system...) and an archive fetched without an md5 could hold anything. The
# array function is taken from numpy's own reduce, so numpy 1.x and 2.x module paths both resolve to it.
_RECONSTRUCT = np.zeros(0).__reduce__()[0]
CIFAR_PICKLE_GLOBALS: dict[tuple[str, str], object] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,   # numpy 1.x, as published
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,  # numpy 2.x: batches re-pickled today
    ("_codecs", "encode"): _latin1_bytes,                      # bytes pickled by Python 3 at protocol 2
}
# The published batches are 31 MB each: a member far larger is not one, and would be read whole.
MAX_BATCH_BYTES = 256 << 20


class _CifarUnpickler(pickle.Unpickler):
    """An unpickler that builds only what CIFAR_PICKLE_GLOBALS names; any other global is a DataError."""

    def __init__(self, file, where: str):
        super().__init__(file, encoding="bytes")
        self.where = where

    def find_class(self, module: str, name: str) -> object:
        try:
            return CIFAR_PICKLE_GLOBALS[(module, name)]
        except KeyError:
            reason = "a CIFAR-10 batch holds only dicts, lists, byte strings and numpy arrays"
            raise DataError(f"{self.where}: refused to unpickle the global {module}.{name} ({reason}); this is not "
                            f"the official archive and nothing from it was run. Fetch the official one, with the "
                            f"source's md5 set.") from None


def _unpickle(tar: tarfile.TarFile, member: tarfile.TarInfo, where: str) -> object:
    """One batch, unpickled with the allow-list; any failure is a DataError that says `where`."""
    if member.size > MAX_BATCH_BYTES:
        raise DataError(f"{where}: {member.size:,} bytes, more than any CIFAR-10 batch (limit {MAX_BATCH_BYTES:,}).")
    try:
        return _CifarUnpickler(tar.extractfile(member), where).load()
    except DataError:
        raise
    except Exception as err:  # damaged or crafted pickles raise almost any type; none is a bug here
        raise DataError(f"{where}: not a CIFAR-10 pickle ({type(err).__name__}: {one_line(err)}).") from None


def read_cifar10(path: Path) -> SourceData:
    """The official CIFAR-10 python tarball: data_batch_1..5 are train, test_batch is test.

    Batches are unpickled with CIFAR_PICKLE_GLOBALS only, and checked for the published layout.
    """
    with tarfile.open(path, "r:gz") as tar:
        members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
        missing = [n for n in ("batches.meta", "test_batch", *(f"data_batch_{i}" for i in range(1, 6)))
                   if n not in members]
        if missing:
            raise DataError(f"{path}: not a CIFAR-10 python archive (missing {', '.join(missing)}).")
        meta = _unpickle(tar, members["batches.meta"], f"{path}: batches.meta")
        names = meta.get(b"label_names") if isinstance(meta, dict) else None
        if not isinstance(names, list) or not names or not all(isinstance(n, bytes) for n in names):
            raise DataError(f"{path}: batches.meta: no `label_names` list of class names.")
        classes = [n.decode("latin1") for n in names]
        items = []
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            where = f"{path}: {name}"
            data, labels = _cifar_batch(_unpickle(tar, members[name], where), len(classes), where)
            images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            split = "test" if name == "test_batch" else "train"
            for i, (image, label) in enumerate(zip(images, labels.tolist())):
                items.append(Item(f"{name}[{i}]", classes[label], split, image))
    return SourceData(items, classes, f"CIFAR-10 python archive {path.name}")


def _cifar_batch(batch: object, num_classes: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    """The (N, 3072) uint8 `data` and the N `labels` of one unpickled batch, checked against the layout."""
    data = batch.get(b"data") if isinstance(batch, dict) else None
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        found = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{where}: `data` must be a uint8 array of shape (N, 3072), found {found}.")
    return data, _class_indices(batch.get(b"labels"), len(data), num_classes, where)


def _class_indices(labels: object, count: int, num_classes: int, where: str) -> np.ndarray:
    """`labels` as an integer array, or a DataError unless they are `count` indices into the classes.

    A list is checked item by item before numpy sees it: nested lists that share their items unpickle
    from a few hundred bytes, and numpy would expand them into gigabytes."""
    if isinstance(labels, (list, tuple)) and (len(labels) != count or not all(type(v) is int for v in labels)):
        labels = None
    try:
        array = np.asarray(labels if isinstance(labels, (list, tuple, np.ndarray)) else None)
    except ValueError:  # ragged nested lists
        array = np.asarray(None)
    if array.shape != (count,) or array.dtype.kind not in "iu" or not ((array >= 0) & (array < num_classes)).all():
        raise DataError(f"{where}: `labels` must be {count} class indices in 0..{num_classes - 1}.")
    return array


# ------------------------------------------------------------------ arrays and image archives


def read_npz(path: Path) -> SourceData:
    """An .npz with `images` (N,H,W[,3] uint8), `labels` (N,) and `classes` (names)."""
    if not zipfile.is_zipfile(path):  # else np.load would try it as a pickle, and advise trusting it
        raise DataError(f"{path}: not an .npz (that is a zip of .npy arrays).")
    try:
        with np.load(path) as data:  # allow_pickle stays False: an object array is refused, so no code runs
            images, labels, classes = data["images"], data["labels"], [str(c) for c in data["classes"]]
    except (KeyError, ValueError, TypeError) as err:  # a missing array, a pickled one, 0-d classes
        raise DataError(f"{path}: not an .npz with `images`, `labels` and `classes` arrays "
                        f"({type(err).__name__}: {one_line(err)}).") from None
    if images.dtype != np.uint8 or not (images.ndim == 3 or (images.ndim == 4 and images.shape[3] == 3)):
        raise DataError(f"{path}: `images` must be uint8 (N, H, W) or (N, H, W, 3), found {images.dtype} "
                        f"{images.shape}.")
    labels = _class_indices(labels, len(images), len(classes), str(path))
    items = [Item(f"{path.stem}[{i}]", classes[label], "train", image)
             for i, (image, label) in enumerate(zip(images, labels.tolist()))]
    return SourceData(items, classes, f"arrays {path.name}")


def read_image_csv(path: Path) -> SourceData:
    """The Kaggle layout: a zip of train/valid/test class folders and a CSV that lists every image.

    The CSV is the source of truth for labels and splits. Rows whose file is missing and files the
    CSV does not list (junk such as .DS_Store included) are reported as skipped.
    """
    with _open_zip(path) as zf:
        names = [n for n in zf.namelist() if not n.endswith("/")]
        csv_name = _find_csv(zf, names, path)
        base = posixpath.dirname(csv_name)
        if zf.getinfo(csv_name).file_size > MAX_CSV_BYTES:
            raise DataError(f"{path}: {csv_name} declares {zf.getinfo(csv_name).file_size:,} bytes, more than the "
                            f"limit of {MAX_CSV_BYTES:,} for an image list; refused before reading it.")
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


def _open_zip(path: Path) -> zipfile.ZipFile:
    """The zip at `path`, its central directory checked as fetch checks it (it may come from a DVC remote)."""
    zf = zipfile.ZipFile(path)
    try:
        check_zip_directory(zf.infolist(), str(path))
    except CnnbenchError as err:
        zf.close()
        raise DataError(str(err)) from None
    return zf


def _find_csv(zf: zipfile.ZipFile, names: list[str], path: Path) -> str:
    for name in sorted((n for n in names if n.lower().endswith(".csv")), key=len):
        with zf.open(name) as fh:  # the header only: a CSV is read whole once it is found and its size checked
            head = fh.read(4096).decode("utf-8-sig", "replace")
        header = next(csv.reader(io.StringIO(head)), [])  # an empty CSV has no header at all
        if all(col in [c.strip().lower() for c in header] for col in CSV_COLUMNS):
            return name
    raise DataError(f"{path}: no CSV with the columns {', '.join(CSV_COLUMNS)} (the Kaggle layout).")


def read_image_folder(path: Path) -> SourceData:
    """torchvision's ImageFolder layout in a zip: `<split>/<class>/<image>` (train, and optionally val/valid
    and test), or `<class>/<image>` with no split folders (all train, split by params' fractions).

    The folder names are the labels, sorted as ImageFolder sorts them. One enclosing folder around the
    whole tree (a zipped `mydata/`) is looked through. Files elsewhere, junk and non-images are skipped.
    """
    with _open_zip(path) as zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
    names = [i.filename for i in infos]
    sizes = {i.filename: i.file_size for i in infos}
    # One top-level folder that is not a split is a wrapper (a dataset of one class would teach nothing).
    real = [n for n in names if posixpath.basename(n) not in JUNK_NAMES]
    tops = {n.split("/")[0] for n in real}
    wrapper = ""
    if len(tops) == 1 and all("/" in n for n in real) and next(iter(tops)).lower() not in SPLIT_NAMES:
        wrapper = next(iter(tops)) + "/"
    split_layout = any(n[len(wrapper):].split("/")[0].lower() in SPLIT_NAMES for n in names if n.count("/") >= 2)
    depth = 3 if split_layout else 2
    items, skipped, classes = [], [], set()
    for name in sorted(names):
        parts = (name[len(wrapper):] if name.startswith(wrapper) else name).split("/")
        base = parts[-1]
        if base in JUNK_NAMES or base.startswith("._"):
            reason = "junk file"
        elif len(parts) != depth or (split_layout and parts[0].lower() not in SPLIT_NAMES):
            reason = "not in a class folder" + (" of a train/val/test folder" if split_layout else "")
        elif not base.lower().endswith(IMAGE_EXTENSIONS):
            reason = f"not an image file: extension not one of {', '.join(IMAGE_EXTENSIONS)}"
        elif sizes[name] == 0:
            reason = "empty file"
        else:
            reason = ""
        split = SPLIT_NAMES[parts[0].lower()] if split_layout and len(parts) == 3 and parts[0].lower() in SPLIT_NAMES \
            else "train"
        label = parts[-2] if len(parts) >= 2 else ""
        if reason:
            skipped.append({"id": name, "split": split if len(parts) == depth else "", "label": label,
                            "reason": reason})
            continue
        classes.add(label)
        items.append(Item(name, label, split, name))
    if not items:
        raise DataError(f"{path}: no image in class folders (expected [train|val|test/]<class>/<image>).")
    return SourceData(items, sorted(classes), f"image folders {path.name}", archive=path, skipped=skipped)
