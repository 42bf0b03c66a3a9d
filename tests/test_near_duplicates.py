"""Near-duplicates in prepare: planted near copies of held-out images leave train; nothing else is flagged.

The tree is the Kaggle layout of tests/fixtures.py with images planted on top, fetched from a local
directory and prepared with the real functions.
"""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
from PIL import Image, ImageOps

from cnnbench.core.errors import ConfigError
from cnnbench.data.fetch import fetch_source
from cnnbench.data.near_duplicates import HASH_INPUT, find_near_pairs, hamming, phash_pair
from cnnbench.data.prepare import prepare_dataset
from cnnbench.params.config import DatasetConfig, NearDuplicatesConfig, SourceConfig
from fixtures import blob_image, jpeg_bytes, make_kaggle_tree, plant_in_kaggle_tree, random_image

ADONIS, AFRICAN, CROW = "ADONIS", "AFRICAN GIANT SWALLOWTAIL", "BLUE SPOTTED CROW"


def resized_and_cropped(pixels: np.ndarray, factor: float = 1.05) -> np.ndarray:
    """Enlarged by `factor`, then centre-cropped back to the original size."""
    image = Image.fromarray(pixels)
    w, h = image.size
    big = image.resize((round(w * factor), round(h * factor)), Image.BICUBIC)
    left, top = (big.width - w) // 2, (big.height - h) // 2
    return np.asarray(big.crop((left, top, left + w, top + h)))


def reencoded(pixels: np.ndarray, quality: int = 55) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(jpeg_bytes(pixels, quality=quality))).convert("RGB"))


VARIANTS = {
    "reencoded": reencoded,
    "resized": resized_and_cropped,
    "flipped": lambda p: np.asarray(ImageOps.mirror(Image.fromarray(p))),
}


@pytest.fixture
def planted(tmp_path):
    """A Kaggle tree with, per variant, a test image and its near copy in train; a relabelled near copy of
    a val image; and unrelated blob images in every split."""
    fx = make_kaggle_tree(tmp_path / "tree")
    rng = np.random.default_rng(7)
    pairs = {}
    for name, variant in VARIANTS.items():
        original = blob_image(rng)
        held = plant_in_kaggle_tree(fx, "test", ADONIS, f"orig_{name}.jpg", jpeg_bytes(original, quality=95))
        pairs[name] = (held, plant_in_kaggle_tree(fx, "train", ADONIS, f"copy_{name}.jpg",
                                                  jpeg_bytes(variant(original), quality=90)))
    original = blob_image(rng)
    held = plant_in_kaggle_tree(fx, "val", ADONIS, "orig_conflict.jpg", jpeg_bytes(original, quality=95))
    pairs["conflict"] = (held, plant_in_kaggle_tree(fx, "train", CROW, "copy_conflict.jpg",
                                                    jpeg_bytes(original, quality=60)))
    for i, split in itertools.product(range(4), ("train", "val", "test")):
        plant_in_kaggle_tree(fx, split, [ADONIS, AFRICAN, CROW][i % 3], f"unrelated_{split}_{i}.jpg",
                             jpeg_bytes(blob_image(rng)))
    raw = tmp_path / "raw"
    fetch_source(SourceConfig(name="src", uri=str(fx.root), format="image-csv"), raw)
    return raw, pairs


def dataset(remove: bool = True, share: float = 1.0) -> DatasetConfig:
    """The planted tree's dataset; its planted copies are 4 of 21 training images, so removal is allowed whole
    unless `share` says otherwise (the default of params, 0.05, would stop: see the small-data guard's test)."""
    return DatasetConfig(name="ds", source="src", image_size=32, val_fraction=0.0, test_fraction=0.0,
                         near_duplicates=NearDuplicatesConfig(remove_train_copies=remove, max_removed_share=share))


def test_removal_that_would_take_more_than_max_removed_share_of_train_stops_and_names_the_setting(planted):
    raw, _ = planted
    with pytest.raises(ConfigError) as err:
        prepare_dataset(dataset(share=0.05), raw, workers=1)
    assert str(err.value).startswith(
        "params: datasets.ds.near_duplicates: removing 4 of 21 training images (19%) as near-duplicates of held-out "
        "images, more than max_removed_share (5%)")
    assert "lower datasets.ds.near_duplicates.max_distance" in str(err.value)
    assert prepare_dataset(dataset(share=0.2), raw, workers=1).report["near_duplicates"]["removed"] == 4


def test_planted_near_copies_are_reported_and_kept_out_of_train(planted):
    raw, planted_pairs = planted
    prepared = prepare_dataset(dataset(), raw, workers=1)
    near = prepared.report["near_duplicates"]
    found = {(p["held_out"], p["other"]): p for p in near["pairs"]}
    assert set(found) == set(planted_pairs.values())  # every planted pair, and no other: no false positive
    for held, copy in planted_pairs.values():
        pair = found[(held, copy)]
        assert pair["cross_split"] and pair["action"] == "train copy removed"
        assert pair["distance"] <= near["max_distance"]
        assert copy not in prepared.ids["train"] and held in prepared.ids["test"] + prepared.ids["val"]
    assert found[planted_pairs["flipped"]]["mirrored"]
    assert near["removed"] == len(planted_pairs)
    reasons = {e["id"]: e["reason"] for e in prepared.report["dropped"]}
    assert all(reasons[copy].startswith("near-duplicate:") for _, copy in planted_pairs.values())
    assert len(prepared.near_pairs) == len(planted_pairs)  # the sheet's pixels, held-out copy first


def test_near_duplicates_with_different_labels_are_label_conflicts(planted):
    raw, planted_pairs = planted
    conflicts = prepare_dataset(dataset(), raw, workers=1).report["near_duplicates"]["label_conflicts"]
    assert [(c["held_out"], c["other"]) for c in conflicts] == [planted_pairs["conflict"]]
    assert (conflicts[0]["held_out_label"], conflicts[0]["other_label"]) == (ADONIS, CROW)


def test_switch_off_lists_near_copies_but_keeps_them(planted):
    raw, planted_pairs = planted
    prepared = prepare_dataset(dataset(remove=False), raw, workers=1)
    assert prepared.report["near_duplicates"]["removed"] == 0
    assert all(copy in prepared.ids["train"] for _, copy in planted_pairs.values())


def test_block_comparison_matches_a_python_double_loop(monkeypatch):
    import cnnbench.data.near_duplicates as nd

    monkeypatch.setattr(nd, "BLOCK", 7)  # several blocks, the last one partial
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**63, size=40, dtype=np.int64).astype(np.uint64)
    hashes[5] = hashes[30] ^ np.uint64(0b1011)  # distance 3
    mirrors = rng.integers(0, 2**63, size=40, dtype=np.int64).astype(np.uint64)
    mirrors[33] = hashes[2] ^ np.uint64(1)       # 2 is 33's mirror image, distance 1
    expected = [(i, j) for i, j in itertools.combinations(range(40), 2)
                if min(bin(int(hashes[i]) ^ int(hashes[j])).count("1"),
                       bin(int(hashes[i]) ^ int(mirrors[j])).count("1")) <= 12]
    assert [(p.a, p.b) for p in find_near_pairs(hashes, mirrors, 12)] == expected
    assert {(5, 30), (2, 33)} <= set(expected)
    assert hamming(np.array([0b1011], np.uint64), np.array([0], np.uint64)).tolist() == [3]


def test_a_tree_without_near_duplicates_gets_the_same_report_as_before(tmp_path):
    """No near-duplicate found: no new key in the data report, nothing else dropped, nothing to draw."""
    fx = make_kaggle_tree(tmp_path / "tree")
    raw = tmp_path / "raw"
    fetch_source(SourceConfig(name="src", uri=str(fx.root), format="image-csv"), raw)
    prepared = prepare_dataset(dataset(), raw, workers=1)
    assert "near_duplicates" not in prepared.report and prepared.near_pairs == []
    assert not any(e["reason"].startswith("near-duplicate") for e in prepared.report["dropped"])


# ------------------------------------------------------------------ pHash against imagehash's own


def varied_images() -> list[Image.Image]:
    """Real and synthetic images of every kind pHash meets: sklearn's 1,797 handwritten digits upscaled to
    several sizes, photo-like blobs, smooth colour fields, pure noise, gradients, flat images (every DCT
    coefficient but one zero: the median ties), in RGB, L and RGBA, larger and smaller than 32 px."""
    from sklearn.datasets import load_digits

    rng = np.random.default_rng(19)
    digits = (load_digits().images * (255 / 16)).astype(np.uint8)
    sizes = itertools.cycle((8, 24, 32, 64))  # 8: the digits as the offline suite hashes them
    images = [Image.fromarray(d).resize((s, s), Image.NEAREST) for d, s in zip(digits, sizes)]
    images += [Image.fromarray(blob_image(rng, *rng.integers(20, 300, 2))) for _ in range(150)]
    images += [Image.fromarray(random_image(rng, *rng.integers(8, 300, 2))) for _ in range(150)]
    images += [Image.fromarray(rng.integers(0, 256, (*rng.integers(4, 200, 2), 3), dtype=np.uint8)) for _ in range(150)]
    y, x = np.mgrid[0:64, 0:96] / 96
    images += [Image.fromarray(((a * x + b * y) % 1 * 255).astype(np.uint8)) for a, b in rng.uniform(-3, 3, (100, 2))]
    images += [Image.new(mode, (40, 30), colour) for mode, colour in (("L", 0), ("L", 255), ("RGB", (9, 200, 31)))]
    images += [Image.fromarray(rng.integers(0, 256, (50, 70, 4), dtype=np.uint8), "RGBA") for _ in range(50)]
    return images


def test_phash_is_bit_identical_to_imagehash():
    """The prepared splits depend on these bits: the scipy pHash must give imagehash's on every image."""
    imagehash = pytest.importorskip("imagehash")

    def as_int(h) -> int:
        return int.from_bytes(np.packbits(h.hash.ravel()).tobytes(), "big")

    images = varied_images()
    assert len(images) >= 2_000
    for image in images:
        small = image.convert("L").resize((HASH_INPUT, HASH_INPUT), Image.LANCZOS)
        expected = (as_int(imagehash.phash(image)), as_int(imagehash.phash(ImageOps.mirror(small))))
        assert phash_pair(image) == expected, (image.mode, image.size)
    distinct = {phash_pair(image)[0] for image in images}
    assert len(distinct) > 0.9 * len(images)  # the images differ as hashes, so the comparison means something
