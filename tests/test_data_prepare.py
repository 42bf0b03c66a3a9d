"""prepare: what goes into the arrays, what is dropped and why, and that the outputs are reproducible.

Sources are built by the tests in their real formats (tests/fixtures.py) and fetched with the real
fetch_source from local paths; nothing touches the network.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

import cnnbench.data.prepare as prepare_module
from cnnbench.cli import stage_main
from cnnbench.data.arrays import load_prepared, write_prepared
from cnnbench.data.fetch import fetch_source
from cnnbench.data.images import decode_image
from cnnbench.data.prepare import assign_splits, find_duplicates, prepare_dataset, write_data_report
from cnnbench.data.readers import Item
from cnnbench.params.config import ConfigError, DatasetConfig, NearDuplicatesConfig, SourceConfig
from fixtures import (
    CIFAR10_CLASSES,
    KAGGLE_CLASSES,
    KAGGLE_CSV,
    huge_png,
    jpeg_bytes,
    make_cifar10_tarball,
    make_kaggle_tree,
    random_image,
    rgba_png,
    run_with_peak_rss,
    zip_tree,
)

SPLITS = ("train", "val", "test")


def dataset(name="ds", image_size=224, val=0.0, test=0.0, seed=0, drop=(), near=8) -> DatasetConfig:
    return DatasetConfig(name=name, source="src", image_size=image_size, val_fraction=val, test_fraction=test,
                         split_seed=seed, drop_classes=tuple(drop),
                         near_duplicates=NearDuplicatesConfig(max_distance=near))


def per_class(prepared, split) -> dict[str, int]:
    counts = Counter(prepared.classes[i] for i in prepared.y[split].tolist())
    return {name: counts.get(name, 0) for name in prepared.classes}


def npy_bytes(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def kaggle(tmp_path_factory):
    """The dirty Kaggle-layout fixture, zipped and fetched: (what it holds, raw_dir)."""
    root = tmp_path_factory.mktemp("kaggle")
    fx = make_kaggle_tree(root / "tree")
    archive = zip_tree(fx.root, root / "butterflies.zip")
    raw_dir = root / "raw"
    fetch_source(SourceConfig(name="src", uri=str(archive), format="image-csv"), raw_dir)
    return fx, raw_dir


@pytest.fixture(scope="module")
def kaggle_prepared(kaggle):
    fx, raw_dir = kaggle
    return prepare_dataset(dataset(image_size=224), raw_dir, workers=2)


@pytest.fixture(scope="module")
def cifar10(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    fx = make_cifar10_tarball(root)
    raw_dir = root / "raw"
    fetch_source(SourceConfig(name="src", uri=str(fx.path), format="cifar10-python", md5=fx.md5), raw_dir)
    return fx, raw_dir


@pytest.fixture(scope="module")
def cifar10_prepared(cifar10):
    return prepare_dataset(dataset(image_size=32, val=0.1), cifar10[1])


@pytest.fixture(scope="module")
def digits_raw(tmp_path_factory):
    raw_dir = tmp_path_factory.mktemp("digits") / "raw"
    fetch_source(SourceConfig(name="src", uri="sklearn:digits", format="npz"), raw_dir)
    return raw_dir


# ------------------------------------------------------------------ Kaggle layout: what is kept


def test_kaggle_keeps_exactly_the_good_images(kaggle, kaggle_prepared):
    fx, _ = kaggle
    assert kaggle_prepared.classes == KAGGLE_CLASSES
    for split in SPLITS:
        assert kaggle_prepared.ids[split] == fx.kept[split], split  # in the CSV's order
        labels = [kaggle_prepared.classes[i] for i in kaggle_prepared.y[split]]
        assert labels == fx.kept_labels(split)


def test_kaggle_arrays_are_uint8_nhwc_at_image_size(kaggle_prepared):
    for split in SPLITS:
        x, y = kaggle_prepared.x[split], kaggle_prepared.y[split]
        assert x.dtype == np.uint8 and x.shape == (len(y), 224, 224, 3)
        assert y.dtype == np.int64
        assert len(kaggle_prepared.ids[split]) == len(y)


def test_each_dirty_file_is_reported_with_its_reason(kaggle, kaggle_prepared):
    fx, _ = kaggle
    report = kaggle_prepared.report
    reasons = {entry["id"]: entry["reason"].split(":")[0] for entry in report["dropped"]}
    assert reasons == fx.dropped
    assert report["dropped_by_reason"] == dict(sorted(Counter(fx.dropped.values()).items()))

    by_id = {entry["id"]: entry for entry in report["dropped"]}
    kept_copy, dropped_copy = fx.leak
    assert kept_copy in kaggle_prepared.ids["test"] and dropped_copy not in kaggle_prepared.ids["train"]
    assert f"in the test split as {kept_copy}" in by_id[dropped_copy]["reason"]
    first, repeat = fx.duplicate
    assert first in kaggle_prepared.ids["train"]
    assert f"same pixels as {first}" in by_id[repeat]["reason"]
    assert all(not key.startswith(("exact", "leak:")) for key in report["dropped_by_reason"])  # categories only


def test_unusual_but_valid_images_are_kept_as_rgb(kaggle, kaggle_prepared):
    fx, _ = kaggle

    def pixels(member):
        split = next(s for s in SPLITS if member in kaggle_prepared.ids[s])
        return kaggle_prepared.x[split][kaggle_prepared.ids[split].index(member)]

    np.testing.assert_array_equal(pixels(fx.png_as_jpg), fx.pixels[fx.png_as_jpg])  # PNG bytes, .jpg name
    gray = pixels(fx.gray).astype(int)
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    assert pixels(fx.cmyk).shape == (224, 224, 3)
    assert kaggle_prepared.report["converted_to_rgb"] == fx.converted


def test_non_square_images_are_centre_cropped_not_squashed(kaggle, kaggle_prepared):
    fx, _ = kaggle
    split = "train"
    image = kaggle_prepared.x[split][kaggle_prepared.ids[split].index(fx.wide)].astype(int)
    # The 40x30 source has red and blue 5-pixel bands outside its centre 30x30 square: a squash
    # would put them in the outer eighth of each side; a centre crop keeps only the green.
    assert image[..., 1].mean() > 200
    assert image[:, :28, 0].mean() < 60 and image[:, -28:, 2].mean() < 60


def test_report_counts_match_the_arrays(kaggle_prepared):
    report = kaggle_prepared.report
    assert report["num_classes"] == len(KAGGLE_CLASSES) and report["image_size"] == 224
    for split in SPLITS:
        assert report["counts"][split]["per_class"] == per_class(kaggle_prepared, split)
        assert report["counts"][split]["total"] == len(kaggle_prepared.y[split])
    assert report["dropped_classes"] == {}


def test_drop_classes_removes_a_class_entirely(kaggle):
    fx, raw_dir = kaggle
    noisy = "BLUE SPOTTED CROW"
    prepared = prepare_dataset(dataset(image_size=32, drop=[noisy]), raw_dir, workers=1)
    assert prepared.classes == [c for c in KAGGLE_CLASSES if c != noisy]
    for split in SPLITS:
        assert not any(f"/{noisy}/" in member for member in prepared.ids[split])
        assert set(prepared.y[split].tolist()) <= {0, 1}
        assert noisy not in prepared.report["counts"][split]["per_class"]
        assert prepared.ids[split] == [m for m in fx.kept[split] if f"/{noisy}/" not in m]
    assert prepared.report["dropped_classes"] == {noisy: fx.files_per_class[noisy]}
    assert not any(entry["label"] == noisy for entry in prepared.report["dropped"])


def test_unknown_class_in_drop_classes_is_named(kaggle):
    with pytest.raises(ConfigError, match=r"datasets\.ds\.drop_classes: no such class 'BLUE SPOTTED CROWS'"):
        prepare_dataset(dataset(drop=["ADONIS", "BLUE SPOTTED CROWS"]), kaggle[1])


def test_fraction_for_a_split_the_source_has_fails_before_decoding(kaggle, monkeypatch):
    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded before checking params")

    monkeypatch.setattr(prepare_module, "decode_all", no_decoding)
    with pytest.raises(ConfigError, match=r"datasets\.ds\.val_fraction: the source already has a val split"):
        prepare_dataset(dataset(val=0.1), kaggle[1])


def test_kaggle_outputs_are_byte_identical_across_runs_and_workers(kaggle, kaggle_prepared, tmp_path):
    _, raw_dir = kaggle
    again = prepare_dataset(dataset(image_size=224), raw_dir, workers=1)
    for split in SPLITS:
        np.testing.assert_array_equal(again.x[split], kaggle_prepared.x[split])
        np.testing.assert_array_equal(again.y[split], kaggle_prepared.y[split])
    write_prepared(kaggle_prepared, tmp_path / "a")
    write_prepared(again, tmp_path / "b")
    assert npy_bytes(tmp_path / "a") == npy_bytes(tmp_path / "b")
    write_data_report(kaggle_prepared.report, tmp_path / "a.json")
    write_data_report(again.report, tmp_path / "b.json")
    assert (tmp_path / "a.json").read_text() == (tmp_path / "b.json").read_text()  # git sees no churn


def test_a_directory_source_prepares_like_its_zip(kaggle, kaggle_prepared, tmp_path):
    fx, _ = kaggle
    fetch_source(SourceConfig(name="src", uri=str(fx.root), format="image-csv"), tmp_path / "raw")
    prepared = prepare_dataset(dataset(image_size=224), tmp_path / "raw", workers=1)
    assert prepared.ids == kaggle_prepared.ids
    for split in SPLITS:
        np.testing.assert_array_equal(prepared.x[split], kaggle_prepared.x[split])


PREPARE_AND_PRINT_REPORT = """
import json, sys
from cnnbench.params.config import DatasetConfig
from cnnbench.data.prepare import prepare_dataset
prepared = prepare_dataset(DatasetConfig("ds", "src", 32, 0.0, 0.0, 0, ()), sys.argv[1], workers=2)
print(json.dumps({"ids": prepared.ids, "dropped": prepared.report["dropped"]}))
"""


def test_an_image_too_large_to_decode_is_dropped_before_decoding(tmp_path_factory, tmp_path):
    fx = make_kaggle_tree(tmp_path / "tree")
    member = f"train/{KAGGLE_CLASSES[0]}/huge.png"
    (fx.root / member).write_bytes(huge_png(tmp_path_factory.getbasetemp()).read_bytes())
    with open(fx.root / KAGGLE_CSV, "a", newline="") as fh:
        csv.writer(fh).writerow([0, member, KAGGLE_CLASSES[0], "train"])
    raw = tmp_path / "raw"
    fetch_source(SourceConfig(name="src", uri=str(zip_tree(fx.root, tmp_path / "bfly.zip")), format="image-csv"), raw)

    # prepare_dataset alone: the stage script also imports torch (through params), which is not decoding.
    result, peak_mb = run_with_peak_rss([sys.executable, "-c", PREPARE_AND_PRINT_REPORT, str(raw)],
                                        tmp_path / "peak_rss", timeout=300)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert {e["id"]: e["reason"] for e in outcome["dropped"]}[member] == "too large: 13000x13000 pixels (limit 64 MP)"
    assert outcome["ids"] == fx.kept
    assert peak_mb < 1024, f"peak RSS {peak_mb:.0f} MB"


def test_a_zip_member_larger_than_any_image_is_not_read(kaggle, monkeypatch):
    fx, raw_dir = kaggle
    monkeypatch.setattr(prepare_module, "MAX_FILE_BYTES", 2000)  # the fixture's 40x30 JPEGs are smaller
    prepared = prepare_dataset(dataset(image_size=32), raw_dir, workers=1)
    reasons = {entry["id"]: entry["reason"] for entry in prepared.report["dropped"]}
    big = [m for s in SPLITS for m in fx.kept[s] if m not in prepared.ids[s]]
    assert big and all(re.fullmatch(r"too large: a [\d,]+-byte file \(limit 2,000\)", reasons[m]) for m in big)


def test_large_jpegs_decode_at_a_reduced_scale_close_to_the_full_decode(monkeypatch):
    from PIL import JpegImagePlugin

    drafted, real_draft = [], JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        result = real_draft(self, mode, size)
        drafted.append(self.size)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    rng = np.random.default_rng(0)
    big, small = jpeg_bytes(random_image(rng, 1000, 600)), jpeg_bytes(random_image(rng, 100, 100))
    reduced = decode_image(big, 64)
    assert decode_image(small, 64).pixels.shape == (64, 64, 3)
    assert drafted == [(125, 75)]  # 1/8 scale still covers 64x64; the 100x100 one is decoded whole
    full = np.asarray(ImageOps.fit(Image.open(io.BytesIO(big)).convert("RGB"), (64, 64), Image.BILINEAR))
    assert np.abs(reduced.pixels.astype(int) - full).mean() < 2  # the same picture, within rounding


# ------------------------------------------------------------------ CIFAR-10 python archive


def test_cifar10_splits_test_batch_and_stratified_val(cifar10, cifar10_prepared):
    fx, _ = cifar10
    prepared = cifar10_prepared
    assert {s: len(prepared.y[s]) for s in SPLITS} == {"train": 90, "val": 10, "test": 20}
    assert prepared.ids["test"] == [f"test_batch[{i}]" for i in range(20)]
    train_counts, val_counts = per_class(prepared, "train"), per_class(prepared, "val")
    for name in prepared.classes:
        total = train_counts[name] + val_counts[name]
        assert abs(val_counts[name] - 0.1 * total) <= 1, name
    assert not set(prepared.ids["train"]) & set(prepared.ids["val"])


def test_cifar10_pixels_survive_the_pickle_to_nhwc_conversion(cifar10, cifar10_prepared):
    fx, _ = cifar10
    prepared = cifar10_prepared
    split = next(s for s in SPLITS if fx.marked_id in prepared.ids[s])
    marked = prepared.x[split][prepared.ids[split].index(fx.marked_id)]
    assert marked[0, 0].tolist() == [255, 0, 0]  # top-left, red: rows, columns and channels in place
    assert (marked == [255, 0, 0]).all(axis=-1).sum() == 1

    for split in ("train", "val"):
        for row, member in enumerate(prepared.ids[split]):
            batch, index = member[len("data_batch_"):-1].split("[")
            position = (int(batch) - 1) * 20 + int(index)
            np.testing.assert_array_equal(prepared.x[split][row], fx.train_x[position])
            assert prepared.y[split][row] == fx.train_y[position]
    np.testing.assert_array_equal(prepared.x["test"], fx.test_x)
    np.testing.assert_array_equal(prepared.y["test"], fx.test_y)


def test_cifar10_classes_come_from_batches_meta_in_order(cifar10_prepared):
    assert cifar10_prepared.classes == CIFAR10_CLASSES
    assert cifar10_prepared.report["converted_to_rgb"] == {}
    assert cifar10_prepared.report["dropped"] == []


def test_cifar10_split_is_seeded(cifar10, cifar10_prepared, tmp_path):
    again = prepare_dataset(dataset(image_size=32, val=0.1), cifar10[1])
    assert again.ids == cifar10_prepared.ids
    write_prepared(cifar10_prepared, tmp_path / "a")
    write_prepared(again, tmp_path / "b")
    assert npy_bytes(tmp_path / "a") == npy_bytes(tmp_path / "b")
    other_seed = prepare_dataset(dataset(image_size=32, val=0.1, seed=1), cifar10[1])
    assert other_seed.ids["val"] != cifar10_prepared.ids["val"]


# ------------------------------------------------------------------ digits (sklearn, embedded)


def test_digits_gets_stratified_train_val_test(digits_raw):
    # near=0 as params.yaml sets for digits: 8x8 digits are too small for pHash (see there)
    prepared = prepare_dataset(dataset(image_size=16, val=0.1, test=0.2, near=0), digits_raw)
    assert prepared.classes == [str(i) for i in range(10)]
    total = sum(len(prepared.y[s]) for s in SPLITS)
    assert total + len(prepared.report["dropped"]) == 1797
    # Both fractions are of the whole: 20% test and 10% val, not 10% of the 80% left after test.
    assert len(prepared.y["test"]) == math.ceil(0.2 * total)
    assert abs(len(prepared.y["val"]) - 0.1 * total) <= 1
    counts = {s: per_class(prepared, s) for s in SPLITS}
    for name in prepared.classes:
        n = sum(counts[s][name] for s in SPLITS)
        assert abs(counts["test"][name] - 0.2 * n) <= 1, name
        assert abs(counts["val"][name] - 0.1 * n) <= 1.5, name
    for split in SPLITS:
        assert prepared.x[split].shape[1:] == (16, 16, 3) and prepared.x[split].dtype == np.uint8
    assert all(entry["reason"].startswith("duplicate:") for entry in prepared.report["dropped"])


def test_assign_splits_carves_exact_stratified_fractions():
    labels = np.repeat(np.arange(10), 20)
    splits = assign_splits(np.array(["train"] * len(labels)), labels, dataset(val=0.1, test=0.2))
    for label in range(10):
        got = Counter(splits[labels == label].tolist())
        assert got == {"train": 14, "test": 4, "val": 2}


@pytest.mark.parametrize("present, cfg, field", [
    (["train", "val"], dataset(val=0.1), "val_fraction"),
    (["train", "test"], dataset(test=0.2), "test_fraction"),
    (["train", "val", "test"], dataset(val=0.1, test=0.1), "test_fraction"),
])
def test_assign_splits_refuses_a_fraction_for_a_split_the_source_has(present, cfg, field):
    split_names = np.array(present * 10)
    labels = np.arange(len(split_names)) % 2
    with pytest.raises(ConfigError, match=rf"datasets\.ds\.{field}: the source already has a"):
        assign_splits(split_names, labels, cfg)


# ------------------------------------------------------------------ building blocks


def test_decode_image_reasons_are_stable_and_short():
    assert decode_image(b"", 8).error == "empty file"
    undecodable = decode_image(b"definitely not an image" * 10, 8)
    assert undecodable.pixels is None and undecodable.error.startswith("undecodable: ")
    assert "0x" not in undecodable.error  # no memory address: the report must not change between runs
    array = decode_image(np.full((8, 8), 7, np.uint8), 16)
    assert array.pixels.shape == (16, 16, 3) and array.mode == "L" and (array.pixels == 7).all()


@pytest.mark.parametrize("width, height, reason", [
    (13_000, 13_000, "too large: 13000x13000 pixels (limit 64 MP)"),
    (64_001, 1000, "too large: 64001x1000 pixels (limit 64 MP)"),
    (20_000, 20_000, "too large: over 178 MP (limit 64 MP)"),  # Pillow itself refuses to open it
])
def test_decode_image_refuses_an_oversize_image_from_its_header_alone(width, height, reason):
    decoded = decode_image(rgba_png(width, height), 32)  # no pixel data at all: nothing is decoded
    assert decoded.pixels is None and decoded.error == reason


def test_find_duplicates_does_not_depend_on_file_order():
    items = [Item("train/a/2.jpg", "a", "train", None), Item("val/a/1.jpg", "a", "val", None),
             Item("train/a/1.jpg", "a", "train", None), Item("test/b/9.jpg", "b", "test", None)]
    digests = ["same", "same", "same", "other"]
    drop = find_duplicates(items, digests)
    assert {items[i].id: reason.split(":")[0] for i, reason in drop.items()} == {
        "train/a/1.jpg": "leak", "train/a/2.jpg": "leak"}
    order = [3, 2, 1, 0]
    shuffled = find_duplicates([items[i] for i in order], [digests[i] for i in order])
    assert {items[order[i]].id for i in shuffled} == {items[i].id for i in drop}


# ------------------------------------------------------------------ writing and loading


def test_write_and_load_round_trip(cifar10_prepared, tmp_path):
    write_prepared(cifar10_prepared, tmp_path / "out")
    loaded = load_prepared(tmp_path / "out")
    assert loaded.classes == cifar10_prepared.classes and loaded.image_size == 32
    for split in SPLITS:
        np.testing.assert_array_equal(loaded.splits[split].x, cifar10_prepared.x[split])
        np.testing.assert_array_equal(loaded.splits[split].y, cifar10_prepared.y[split])
        assert loaded.splits[split].ids == cifar10_prepared.ids[split]
    train = cifar10_prepared.x["train"].reshape(-1, 3) / 255.0
    np.testing.assert_allclose(loaded.mean, train.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(loaded.std, train.std(axis=0), atol=1e-6)
    assert json.loads((tmp_path / "out" / "classes.json").read_text()) == CIFAR10_CLASSES


def test_write_prepared_is_atomic(cifar10_prepared, kaggle_prepared, tmp_path, monkeypatch):
    out = tmp_path / "prepared" / "ds"
    write_prepared(cifar10_prepared, out)
    before = npy_bytes(out)

    real_save, calls = np.save, []

    def save_then_fail(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(np, "save", save_then_fail)
    with pytest.raises(OSError, match="No space left"):
        write_prepared(kaggle_prepared, out)
    assert len(calls) == 3
    assert npy_bytes(out) == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["ds"]  # no partial directory beside it

    calls.clear()
    with pytest.raises(OSError):
        write_prepared(kaggle_prepared, tmp_path / "fresh" / "ds")
    assert list((tmp_path / "fresh").iterdir()) == []


def test_load_prepared_without_a_prepare_says_so(tmp_path):
    from cnnbench.core.errors import CnnbenchError

    with pytest.raises(CnnbenchError, match="run its prepare stage first"):
        load_prepared(tmp_path)


DAMAGE = {  # what a killed or hand-edited write can leave in a prepared dataset
    "truncated meta.json": lambda out: (out / "meta.json").write_text((out / "meta.json").read_text()[:100]),
    "meta.json a list": lambda out: (out / "meta.json").write_text("[]"),
    "meta.json without ids": lambda out: (out / "meta.json").write_text('{"classes": ["a"], "mean": [0.5]}'),
    "no train_x.npy": lambda out: (out / "train_x.npy").unlink(),
    "pickled train_y.npy": lambda out: np.save(out / "train_y.npy", np.array([{}], dtype=object), allow_pickle=True),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_prepared_dataset_exits_2_with_one_line(cifar10_prepared, tmp_path, capsys, damage):
    out = tmp_path / "out"
    write_prepared(cifar10_prepared, out)
    DAMAGE[damage](out)
    with pytest.raises(SystemExit) as exit_info:
        stage_main(lambda argv: load_prepared(out), [])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and err.startswith(f"error: {out}"), err
    assert "re-run the stage that writes it" in err


def test_gray_fixture_is_really_gray(kaggle):
    fx, _ = kaggle
    assert Image.open(fx.root / fx.gray).mode == "L"
    assert Image.open(fx.root / fx.cmyk).mode == "CMYK"
    assert Image.open(fx.root / fx.png_as_jpg).format == "PNG"
