"""Builders of small raw sources in their real formats, and a local HTTP server to fetch them from.

Plain functions (no pytest here), so any test module can `from fixtures import ...` them:
- make_cifar10_tarball: the CIFAR-10 python tarball (pickled batches, protocol 2, as published);
- make_kaggle_tree / zip_tree: the Kaggle image-csv layout, with every dirty case planted and listed;
- write_flat_png: a real PNG far larger decoded than on disk, as a decompression bomb is;
- serve_directory / serve_truncated / closed_port_url: HTTP on 127.0.0.1 only, never the internet;
- run_with_peak_rss: a command in a child process, with the peak memory it and its workers used;
- registry / randomise_bn_stats / TINY_RESNET: the declared model variants, and helpers for model tests;
- run_cnnbench: the `cnnbench` command run in-process against the project's params.yaml;
- dvc / pipeline_project: the `dvc` command, and this project's pipeline committed in a fresh git+DVC repo.
"""

from __future__ import annotations

import csv
import hashlib
import http.server
import io
import os
import pickle
import shutil
import socket
import struct
import subprocess
import sys
import tarfile
import threading
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

from cnnbench.params.config import load_params

ROOT = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------ CIFAR-10 python tarball

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"


@dataclass
class Cifar10Fixture:
    path: Path
    md5: str
    classes: list[str]
    train_x: np.ndarray          # (N, 32, 32, 3) uint8, data_batch_1..5 in order, NHWC
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    marked_id: str = "data_batch_1[0]"  # the image whose top-left pixel is pure red


def make_cifar10_tarball(directory: Path, per_batch: int = 20, seed: int = 0,
                         replace: dict[str, bytes] | None = None) -> Cifar10Fixture:
    """Write `cifar-10-python.tar.gz` with the official layout and pickles, `per_batch` images per batch.

    Labels are balanced inside each batch; pixels are random per image; the first image of
    data_batch_1 has a pure red top-left pixel (and no other pure red pixel) to check orientation.
    `replace` maps member names (`batches.meta`, `data_batch_3`...) to the bytes stored instead.
    """
    assert per_batch % len(CIFAR10_CLASSES) == 0, "per_batch must keep the classes balanced"
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CIFAR10_ARCHIVE
    batches, xs, ys = {}, [], []
    for b, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        labels = rng.permutation(np.repeat(np.arange(len(CIFAR10_CLASSES)), per_batch // len(CIFAR10_CLASSES)))
        images = rng.integers(0, 250, size=(per_batch, 32, 32, 3), dtype=np.uint8)  # < 250: no pure red
        if b == 0:
            images[0, 0, 0] = (255, 0, 0)
        # The published layout: each row holds the R plane, then G, then B, each 32x32 row-major.
        data = images.transpose(0, 3, 1, 2).reshape(per_batch, 3072).copy()
        title = "testing batch 1 of 1" if name == "test_batch" else f"training batch {b + 1} of 5"
        batches[name] = {
            b"batch_label": title.encode(),
            b"labels": [int(v) for v in labels],
            b"data": data,
            b"filenames": [f"{CIFAR10_CLASSES[v]}_s_{b:02d}{i:04d}.png".encode() for i, v in enumerate(labels)],
        }
        xs.append(images)
        ys.append(labels)
    batches["batches.meta"] = {
        b"label_names": [c.encode() for c in CIFAR10_CLASSES],
        b"num_cases_per_batch": per_batch,
        b"num_vis": 3072,
    }
    with tarfile.open(path, "w:gz") as tar:
        folder = tarfile.TarInfo("cifar-10-batches-py")
        folder.type, folder.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(folder)
        # Protocol 2 and numpy 1.x's module path, as published (numpy 2 would write numpy._core).
        as_published = (b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
        members = {name: pickle.dumps(batch, protocol=2).replace(*as_published) for name, batch in batches.items()}
        members["readme.html"] = b"<html>CIFAR-10 (test fixture)</html>\n"
        members.update(replace or {})
        for name, payload in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size, info.mode = len(payload), 0o644
            tar.addfile(info, io.BytesIO(payload))
    return Cifar10Fixture(path=path, md5=md5_of(path), classes=list(CIFAR10_CLASSES),
                          train_x=np.concatenate(xs[:5]), train_y=np.concatenate(ys[:5]),
                          test_x=xs[5], test_y=ys[5])


# ------------------------------------------------------------------ Kaggle image-csv layout

KAGGLE_CLASSES = ["ADONIS", "AFRICAN GIANT SWALLOWTAIL", "BLUE SPOTTED CROW"]  # sorted, as prepare orders them
KAGGLE_CSV = "butterflies and moths.csv"
SPLIT_DIRS = {"train": "train", "val": "valid", "test": "test"}


@dataclass
class KaggleFixture:
    """What a correct prepare must do with the tree: which files it keeps and why it drops the others."""

    root: Path
    classes: list[str]
    kept: dict[str, list[str]] = field(default_factory=dict)   # split -> member paths kept, CSV order
    dropped: dict[str, str] = field(default_factory=dict)      # member path -> reason category
    converted: dict[str, int] = field(default_factory=dict)    # original mode -> images converted to RGB
    files_per_class: dict[str, int] = field(default_factory=dict)  # decodable-or-not files present and listed
    pixels: dict[str, np.ndarray] = field(default_factory=dict)    # member -> RGB pixels as written (lossless ones)
    png_as_jpg: str = ""
    cmyk: str = ""
    gray: str = ""
    wide: str = ""               # 40x30: red left band, blue right band, green centre square
    duplicate: tuple[str, str] = ("", "")  # (kept, dropped), same pixels, both in train
    leak: tuple[str, str] = ("", "")       # (kept test copy, dropped train copy)

    def kept_labels(self, split: str) -> list[str]:
        return [member.split("/")[1] for member in self.kept[split]]


def random_image(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Smooth random RGB content: distinct per call, and small once JPEG-encoded."""
    coarse = rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC))


def blob_image(rng: np.random.Generator, width: int = 224, height: int = 224) -> np.ndarray:
    """A striped colour gradient under a few random ellipses: structure that pHash sees, distinct per call.

    Pure noise would give pHash nothing stable to hash; smooth blobs are closer to what photos give it.
    """
    from PIL import ImageDraw

    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    a, b, c = rng.uniform(-1, 1, 3)
    base = np.stack([(a * x + b * y + c + k) % 1 for k in rng.uniform(0, 1, 3)], -1) * 255
    image = Image.fromarray(base.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.integers(4, 9)):
        x0, y0 = rng.uniform(-0.2, 0.9, 2) * (width, height)
        side = rng.uniform(0.1, 0.5) * width
        draw.ellipse([x0, y0, x0 + side, y0 + side * rng.uniform(0.5, 1.5)],
                     fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    return np.asarray(image)


def plant_in_kaggle_tree(fx: KaggleFixture, split: str, label: str, name: str, data: bytes) -> str:
    """Add one image to a tree from make_kaggle_tree, file and CSV row; returns its member path."""
    path = f"{SPLIT_DIRS[split]}/{label}/{name}"
    (fx.root / path).parent.mkdir(parents=True, exist_ok=True)
    (fx.root / path).write_bytes(data)
    with open(fx.root / KAGGLE_CSV, "a", newline="") as fh:
        csv.writer(fh).writerow([KAGGLE_CLASSES.index(label), path, label, SPLIT_DIRS[split]])
    return path


def jpeg_bytes(pixels: np.ndarray, mode: str = "RGB", quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buf, "JPEG", quality=quality, subsampling=0)
    return buf.getvalue()


def png_bytes(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def make_kaggle_tree(root: Path, per_split: dict[str, int] | None = None, seed: int = 0,
                     sizes: tuple[tuple[int, int], ...] = ((40, 30), (224, 224))) -> KaggleFixture:
    """The Kaggle butterflies layout under `root`: train/valid/test/<CLASS>/<n>.jpg plus the CSV.

    Good images per split and class come from `per_split` (default train 3, val 2, test 2), alternating
    over `sizes`. The dirty cases below are planted on top, each recorded in the returned fixture.
    """
    per_split = per_split or {"train": 3, "val": 2, "test": 2}
    rng = np.random.default_rng(seed)
    fx = KaggleFixture(root=root, classes=list(KAGGLE_CLASSES), kept={s: [] for s in SPLIT_DIRS})
    rows: list[tuple[str, str, str]] = []  # (member, label, split)
    files: dict[str, bytes] = {}
    adonis, african, crow = KAGGLE_CLASSES

    def member(split: str, label: str, name: str) -> str:
        return f"{SPLIT_DIRS[split]}/{label}/{name}"

    def add(split: str, label: str, name: str, data: bytes | None, outcome: str = "kept", listed: bool = True) -> str:
        path = member(split, label, name)
        if data is not None:
            files[path] = data
        if listed:
            rows.append((path, label, split))
        if outcome == "kept":
            fx.kept[split].append(path)
        else:
            fx.dropped[path] = outcome
        return path

    n = 0
    for split in SPLIT_DIRS:
        for label in KAGGLE_CLASSES:
            for _ in range(per_split[split]):
                n += 1
                width, height = sizes[n % len(sizes)]
                add(split, label, f"{n:03d}.jpg", jpeg_bytes(random_image(rng, width, height)))

    # Kept although unusual: a PNG under a .jpg name, a CMYK JPEG, a grayscale JPEG, a non-square one.
    png = random_image(rng, 224, 224)
    fx.png_as_jpg = add("train", crow, "png_named.jpg", png_bytes(png))
    fx.pixels[fx.png_as_jpg] = png
    fx.cmyk = add("train", adonis, "cmyk.jpg", jpeg_bytes(random_image(rng, 40, 30), mode="CMYK"))
    fx.gray = add("val", african, "gray.jpg", jpeg_bytes(random_image(rng, 224, 224), mode="L"))
    fx.converted = {"CMYK": 1, "L": 1}
    wide = np.zeros((30, 40, 3), np.uint8)
    wide[:, :5], wide[:, 5:35], wide[:, 35:] = (255, 0, 0), (0, 255, 0), (0, 0, 255)
    fx.wide = add("train", african, "wide.jpg", jpeg_bytes(wide, quality=95))

    # Dropped, each for its own reason.
    add("train", adonis, "random_bytes.jpg", rng.bytes(3000), outcome="undecodable")
    whole = jpeg_bytes(random_image(rng, 224, 224))
    add("train", adonis, "truncated.jpg", whole[: len(whole) // 2], outcome="undecodable")
    add("train", african, "empty.jpg", b"", outcome="empty file")
    add("test", adonis, "missing.jpg", None, outcome="missing file")
    add("train", adonis, ".DS_Store", b"\x00\x00\x00\x01Bud1" + rng.bytes(200), outcome="junk file", listed=False)
    same = jpeg_bytes(random_image(rng, 224, 224))
    fx.duplicate = (add("train", crow, "dup_a.jpg", same), add("train", crow, "dup_b.jpg", same, outcome="duplicate"))
    leaked = jpeg_bytes(random_image(rng, 40, 30))
    fx.leak = (add("test", african, "leak.jpg", leaked), add("train", african, "leak.jpg", leaked, outcome="leak"))

    for path, data in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
    order = {split: i for i, split in enumerate(SPLIT_DIRS)}
    rows.sort(key=lambda r: (order[r[2]], r[1], r[0]))  # the Kaggle CSV lists split by split, class by class
    with open(root / KAGGLE_CSV, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["class id", "filepaths", "labels", "data set"])
        for path, label, split in rows:
            writer.writerow([KAGGLE_CLASSES.index(label), path, label, SPLIT_DIRS[split]])
    position = {path: i for i, (path, _, _) in enumerate(rows)}
    for split in fx.kept:
        fx.kept[split].sort(key=position.__getitem__)
    listed = set(position)
    fx.files_per_class = {c: sum(1 for p in files if p in listed and p.split("/")[1] == c) for c in KAGGLE_CLASSES}
    return fx


def zip_tree(root: Path, path: Path, prefix: str = "") -> Path:
    """Zip every file under `root` (names relative to it, under `prefix`), as Kaggle serves a dataset."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for file in sorted(p for p in root.rglob("*") if p.is_file()):
            zf.write(file, prefix + file.relative_to(root).as_posix())
    return path


def rgba_png(width: int, height: int, idat: bytes = b"") -> bytes:
    """An 8-bit RGBA PNG of width x height whose compressed pixel stream is `idat`.

    With no `idat` it opens (the header gives its size) and fails to decode: opening reads nothing else.
    """
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)  # 8 bits, RGBA, no interlace
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def write_flat_png(path: Path, width: int, height: int, rgba: tuple[int, ...] = (200, 120, 40, 255)) -> Path:
    """A one-colour RGBA PNG of width x height, compressed row by row so it is never whole in memory here.

    13,000 x 13,000 is 676 MB decoded and 0.7 MB on disk. Compressing it takes seconds, so an existing
    `path` is kept: test modules share one through pytest's session temp directory.
    """
    if path.exists():
        return path
    row = b"\x00" + bytes(rgba) * width  # filter type 0 (none), then the pixels
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_bytes(rgba_png(width, height, idat))
    tmp.replace(path)
    return path


def huge_png(directory: Path) -> Path:
    """The 13,000 x 13,000 RGBA PNG (169 MP) in `directory`: pass pytest's session temp dir to share it."""
    return write_flat_png(directory / "flat_13000x13000.png", 13_000, 13_000)


# ------------------------------------------------------------------ local HTTP

class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        pass


@contextmanager
def _serve(handler) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextmanager
def serve_directory(directory: Path) -> Iterator[str]:
    """Serve `directory` over HTTP on 127.0.0.1 (a free port); yields the base URL."""
    with _serve(partial(_QuietHandler, directory=str(directory))) as url:
        yield url


@contextmanager
def serve_truncated(payload: bytes, sent_fraction: float = 0.5) -> Iterator[str]:
    """A server that announces all of `payload` (Content-Length) but closes after sending a part of it."""

    class Handler(_QuietHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload[: int(len(payload) * sent_fraction)])
            self.wfile.flush()
            self.close_connection = True

    with _serve(Handler) as url:
        yield url


def closed_port_url(name: str = CIFAR10_ARCHIVE) -> str:
    """A URL on 127.0.0.1 where nothing listens: connecting is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/{name}"


# ------------------------------------------------------------------ processes

_RSS_WRAPPER = """
import resource, subprocess, sys
code = subprocess.call(sys.argv[2:])
with open(sys.argv[1], "w") as fh:
    fh.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(code)
"""


def run_with_peak_rss(args: list[str], rss_file: Path, **kwargs) -> tuple[subprocess.CompletedProcess, float]:
    """Run `args` in a child process: its result, and the peak RSS in MB of the child or any of its workers.

    A wrapper process measures it (RUSAGE_CHILDREN), so earlier children of the test process cannot
    raise the figure; the peak is that of the largest single process, not a sum.
    """
    result = subprocess.run([sys.executable, "-c", _RSS_WRAPPER, str(rss_file), *args], capture_output=True,
                            text=True, **kwargs)
    return result, int(rss_file.read_text()) / 1024  # ru_maxrss is in KiB on Linux


def md5_of(path: Path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


# A ResNet of ~5k parameters: trains on 8x8 digits in a second, through the same code as the real ones.
TINY_RESNET = {"family": "resnet", "stem": {"kernel": 3, "widths": [8], "strides": [1], "pool": False},
               "block": "basic", "depths": [1, 1], "widths": [8, 16], "strides": [1, 2]}


# ------------------------------------------------------------------ models


def registry() -> dict:
    """The model specs declared in the repository's params.yaml, by name: what the model tests run over."""
    return load_params(Path(__file__).resolve().parents[1] / "params.yaml").models


def randomise_bn_stats(model: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial running stats, so loading them (or not) changes eval outputs."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
    return model


# ------------------------------------------------------------------ the command


def run_cnnbench(capsys, *argv: str) -> tuple[int, str, str]:
    """Run `cnnbench ARGV` in-process with the project's params.yaml: exit code, stdout, stderr."""
    from cnnbench import cli

    try:
        cli.main(["--params", str(ROOT / "params.yaml"), *argv])
    except SystemExit as exit_:
        out, err = capsys.readouterr()
        return exit_.code, out, err
    raise AssertionError("cnnbench returned instead of exiting with a status")


def dvc(cwd: Path, *args: str, check: bool = True, timeout: float = 480) -> subprocess.CompletedProcess:
    """`dvc ARGS` in `cwd` with this interpreter's environment first on PATH (the stages' `python`); with
    `check`, a failure is an AssertionError showing DVC's output. PYTHONPATH is dropped: each stage puts its own
    tree's src/ first, as in a clone. A command still running after `timeout` seconds (below pytest-timeout's
    600, so that its output is kept) is killed, and the AssertionError shows what it printed until then."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("PYTHONPATH", None)
    try:
        proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired as late:  # its stages end with it (they ask for SIGTERM when DVC dies)
        said = [(out or b"").decode(errors="replace") if isinstance(out, bytes) else out or ""
                for out in (late.stdout, late.stderr)]
        raise AssertionError(f"dvc {' '.join(args)} still ran after {timeout:.0f} s:\n{said[0]}\n{said[1]}") from None
    if check and proc.returncode != 0:
        raise AssertionError(f"dvc {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def pipeline_project(repo: Path, runs: dict, suites: dict | None = None, link_cache: bool = False) -> Path:
    """This project's pipeline and code (dvc.yaml, stages/, src/, its params.yaml with the digits at 8 px, the tiny
    model and `runs`, no claims) committed in a fresh git+DVC repo at `repo`, as a clone has them; nothing run.
    `link_cache`: DVC links outputs into its cache instead of copying them (for tests that reproduce often)."""
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(ROOT / name, repo / name)
    shutil.copytree(ROOT / "stages", repo / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "src", repo / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["datasets"]["digits"]["image_size"] = 8
    params["models"]["tiny"] = TINY_RESNET
    params["runs"] = runs
    params["suites"] = suites or params["suites"]
    params["claims"] = []  # the project's claims name its own runs
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for args in (["init", "-q"], ["config", "user.email", "t@example.com"], ["config", "user.name", "t"]):
        subprocess.run(["git", *args], cwd=repo, check=True)
    dvc(repo, "init", "-q")
    shutil.copytree(ROOT / ".dvc" / "plots", repo / ".dvc" / "plots", dirs_exist_ok=True)  # the plot templates
    if link_cache:
        dvc(repo, "config", "cache.type", "reflink,hardlink,copy")
    (repo / ".gitignore").write_text("/data/\n__pycache__/\n")
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", "commit", "-qm", "project"], cwd=repo, check=True)
    return repo
