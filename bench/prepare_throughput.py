"""Prepare throughput: images/s of `prepare_dataset` on a synthetic Kaggle-layout zip of 224x224 JPEGs.

    python bench/prepare_throughput.py --classes 30 --per-class 100 --workers 0   # 0: the default
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from cnnbench.data.arrays import write_prepared
from cnnbench.data.fetch import fetch_source
from cnnbench.data.prepare import prepare_dataset
from cnnbench.params.config import DatasetConfig, SourceConfig


def photo_like(rng: np.random.Generator, size: int) -> bytes:
    """A smooth random image plus noise: JPEG-compresses like a photo, unlike pure noise."""
    coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(coarse).resize((size, size), Image.BICUBIC), np.int16)
    pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def build_zip(path: Path, classes: int, per_class: int, size: int) -> int:
    rng = np.random.default_rng(0)
    rows, n = [["class id", "filepaths", "labels", "data set"]], 0
    splits = {"train": per_class * 8 // 10, "valid": per_class // 10, "test": per_class - per_class * 9 // 10}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for split, count in splits.items():
            for c in range(classes):
                for _ in range(count):
                    n += 1
                    member = f"{split}/CLASS {c:03d}/{n:05d}.jpg"
                    zf.writestr(member, photo_like(rng, size))
                    rows.append([c, member, f"CLASS {c:03d}", split])
        text = io.StringIO()
        csv.writer(text).writerows(rows)
        zf.writestr("butterflies and moths.csv", text.getvalue())
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, default=30)
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--workers", type=int, default=0, help="decoding processes; 0 = prepare's default")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        n = build_zip(tmp / "bench.zip", args.classes, args.per_class, args.size)
        fetch_source(SourceConfig("bench", str(tmp / "bench.zip"), "image-csv"), tmp / "raw")
        cfg = DatasetConfig("bench", "bench", image_size=args.size, val_fraction=0.0, test_fraction=0.0)
        print(f"{n} JPEGs of {args.size}x{args.size}, {os.cpu_count()} CPUs")
        for attempt in range(2):
            t0 = time.perf_counter()
            prepared = prepare_dataset(cfg, tmp / "raw", workers=args.workers or None)
            t1 = time.perf_counter()
            write_prepared(prepared, tmp / "out")
            t2 = time.perf_counter()
            kept = sum(len(y) for y in prepared.y.values())
            print(f"run {attempt + 1}: prepare {kept / (t1 - t0):.0f} img/s ({t1 - t0:.2f} s), "
                  f"with writing the arrays {kept / (t2 - t0):.0f} img/s")


if __name__ == "__main__":
    main()
