"""Decoding as a viewer shows an image (EXIF orientation, transparency, 16-bit and float samples), and
only raster formats opened (an EPS named photo.jpg is refused, never handed to Ghostscript).

Every case is a real file written by Pillow in its real format, decoded by the function prepare and
`cnnbench predict` use; the assertions are the pixels a viewer would show, worked out by hand.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import EpsImagePlugin, Image

from cnnbench.data.audit import cleaning_summary
from cnnbench.data.fetch import fetch_source
from cnnbench.data.images import decode_image
from cnnbench.data.prepare import prepare_dataset
from cnnbench.params.config import DatasetConfig, NearDuplicatesConfig, SourceConfig
from cnnbench.report.data_audit import _cleaning_sentence
from fixtures import KAGGLE_CLASSES, blob_image, jpeg_bytes, make_kaggle_tree, plant_in_kaggle_tree, zip_tree

RED, BLUE, GREEN, WHITE = (255, 0, 0), (0, 0, 255), (0, 200, 0), (255, 255, 255)


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **options)
    return buf.getvalue()


def exif_jpeg(orientation: int) -> bytes:
    """64 wide x 32 high as stored: top half red, bottom half blue; EXIF Orientation `orientation`."""
    pixels = np.zeros((32, 64, 3), np.uint8)
    pixels[:16], pixels[16:] = RED, BLUE
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encoded(Image.fromarray(pixels), "JPEG", quality=95, exif=exif.tobytes())


def transparent_image(mode: str) -> Image.Image:
    """24 x 24: columns 0-7 opaque green, 8-15 fully transparent magenta (the hidden colour), 16-23 red at alpha 128.

    LA has no colour, so its columns are grey 100 / hidden 255 / grey 0; P has no partial alpha, so its
    third band is opaque red.
    """
    if mode == "RGBA":
        pixels = np.zeros((24, 24, 4), np.uint8)
        pixels[:, :8], pixels[:, 8:16], pixels[:, 16:] = (*GREEN, 255), (255, 0, 255, 0), (*RED, 128)
        return Image.fromarray(pixels, "RGBA")
    if mode == "LA":
        pixels = np.zeros((24, 24, 2), np.uint8)
        pixels[:, :8], pixels[:, 8:16], pixels[:, 16:] = (100, 255), (255, 0), (0, 128)
        return Image.fromarray(pixels, "LA")
    index = np.zeros((24, 24), np.uint8)
    index[:, 8:16], index[:, 16:] = 1, 2
    image = Image.fromarray(index, "P")
    image.putpalette([*GREEN, 255, 0, 255, *RED])
    image.info["transparency"] = 1  # palette entry 1 (magenta) is transparent, as a tRNS chunk says
    return image


# The pixels a viewer shows for each band of transparent_image, over white.
SHOWN_OVER_WHITE = {
    "RGBA": [GREEN, WHITE, (255, 127, 127)],  # 255*128/255 + 255*127/255 = 255; 0*128/255 + 255*127/255 = 127
    "LA": [(100,) * 3, WHITE, (127,) * 3],
    "P": [GREEN, WHITE, RED],
}


def band_colours(pixels: np.ndarray) -> list[tuple[int, ...]]:
    return [tuple(int(v) for v in pixels[:, lo:lo + 8].reshape(-1, 3).mean(0).round()) for lo in (0, 8, 16)]


def ramp16() -> np.ndarray:
    """A mid-grey 16-bit ramp, 64 x 64: 24576 at the left to 40704 at the right (mean 32640, /257 = 127)."""
    return np.tile(24576 + 256 * np.arange(64, dtype=np.uint16), (64, 1)).astype(np.uint16)


# ------------------------------------------------------------------ EXIF orientation


def test_exif_orientation_6_is_turned_upright_as_a_viewer_shows_it():
    # Orientation 6: the viewer turns the stored image 90 degrees clockwise, so the stored top (red)
    # is on the right, the bottom (blue) on the left, and the image is 32 wide x 64 high.
    decoded = decode_image(exif_jpeg(6), 32)
    assert decoded.oriented and not decoded.composited and not decoded.rescaled
    left, right = decoded.pixels[:, :12].reshape(-1, 3).mean(0), decoded.pixels[:, 20:].reshape(-1, 3).mean(0)
    assert np.abs(left - BLUE).max() < 20 and np.abs(right - RED).max() < 20
    assert decoded.pixels[:8].reshape(-1, 3).mean(0)[2] > 100  # not the stored orientation (red on top)


def test_an_upright_jpeg_is_left_as_stored():
    decoded = decode_image(exif_jpeg(1), 32)
    assert not decoded.oriented
    top, bottom = decoded.pixels[:12].reshape(-1, 3).mean(0), decoded.pixels[20:].reshape(-1, 3).mean(0)
    assert np.abs(top - RED).max() < 20 and np.abs(bottom - BLUE).max() < 20


# ------------------------------------------------------------------ transparency


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_transparent_pixels_show_the_white_background_not_the_hidden_colour(mode):
    decoded = decode_image(encoded(transparent_image(mode), "PNG"), 24)
    assert decoded.composited and decoded.mode == mode
    shown = band_colours(decoded.pixels)
    for got, want in zip(shown, SHOWN_OVER_WHITE[mode]):
        assert np.abs(np.subtract(got, want)).max() <= 1, (mode, shown)
    assert not np.any(np.all(decoded.pixels == (255, 0, 255), axis=-1))  # the hidden magenta never shows


def test_an_opaque_alpha_channel_changes_nothing_and_is_not_counted():
    pixels = np.dstack([blob_image(np.random.default_rng(1), 24, 24), np.full((24, 24), 255, np.uint8)])
    decoded = decode_image(encoded(Image.fromarray(pixels, "RGBA"), "PNG"), 24)
    assert not decoded.composited
    assert np.array_equal(decoded.pixels, pixels[..., :3])


# ------------------------------------------------------------------ 16-bit and float samples


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_a_mid_grey_16_bit_ramp_comes_out_mid_grey(fmt):
    ramp = ramp16()
    decoded = decode_image(encoded(Image.fromarray(ramp), fmt), 64)
    assert decoded.rescaled
    grey = decoded.pixels[..., 0].astype(int)
    assert np.array_equal(grey, decoded.pixels[..., 2])  # still grey
    assert np.abs(grey - np.rint(ramp / 257)).max() <= 1  # what a viewer shows: 0..65535 onto 0..255
    assert 126 <= grey.mean() <= 128
    assert grey[0, 0] < grey[0, 32] < grey[0, 63]  # still a ramp, not clipped flat


def test_a_float_tiff_in_0_1_is_shown_as_its_values_not_black():
    ramp = np.tile(np.linspace(0.0, 1.0, 64, dtype=np.float32), (64, 1))
    decoded = decode_image(encoded(Image.fromarray(ramp, "F"), "TIFF"), 64)
    assert decoded.rescaled and decoded.mode == "F"
    grey = decoded.pixels[..., 0].astype(int)
    assert np.abs(grey - np.rint(ramp * 255)).max() <= 1
    assert grey[:, 0].max() == 0 and grey[:, -1].min() == 255 and 126 <= grey.mean() <= 129


def test_a_float_tiff_outside_0_1_is_scaled_by_its_own_range():
    ramp = np.tile(np.linspace(-50.0, 950.0, 64, dtype=np.float32), (64, 1))  # physical units, say
    ramp[0, 0] = np.nan
    decoded = decode_image(encoded(Image.fromarray(ramp, "F"), "TIFF"), 64)
    grey = decoded.pixels[..., 0].astype(int)
    assert grey[0, 0] == 0  # NaN shows black
    assert np.abs(grey[1:] - np.rint((ramp[1:] + 50) / 1000 * 255)).max() <= 1


# ------------------------------------------------------------------ counted in the data report


def test_prepare_counts_each_case_per_split_in_the_data_report(tmp_path):
    rng = np.random.default_rng(0)
    tree = tmp_path / "tree"
    files = {"train/cat/exif6.jpg": exif_jpeg(6), "test/cat/rgba.png": encoded(transparent_image("RGBA"), "PNG"),
             "test/dog/palette.png": encoded(transparent_image("P"), "PNG"),
             "train/dog/ramp16.png": encoded(Image.fromarray(ramp16()), "PNG"),
             "test/dog/float.tif": encoded(Image.fromarray(np.tile(np.linspace(0, 1, 64, dtype=np.float32), (64, 1)),
                                                           "F"), "TIFF")}
    for split in ("train", "test"):
        for label in ("cat", "dog"):
            for i in range(3):
                files[f"{split}/{label}/{i}.jpg"] = jpeg_bytes(blob_image(rng, 48, 48))
    for name, data in files.items():
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_bytes(data)
    fetch_source(SourceConfig(name="pets", uri=str(tree), format="image-folder"), tmp_path / "raw")
    cfg = DatasetConfig(name="pets", source="pets", image_size=16, val_fraction=0.0,
                        near_duplicates=NearDuplicatesConfig(remove_train_copies=False))
    report = prepare_dataset(cfg, tmp_path / "raw", workers=1).report
    assert report["dropped"] == []
    assert report["decoded_as_viewer"] == {
        "background_rgb": [255, 255, 255],
        "rotated_by_exif": {"train": 1, "val": 0, "test": 0},
        "composited_on_background": {"train": 0, "val": 0, "test": 2},
        "rescaled_to_8_bits": {"train": 1, "val": 0, "test": 1}}
    sentence = _cleaning_sentence(cleaning_summary(report))
    assert ("Decoded as a viewer shows them: 1 turned upright by its EXIF orientation, 2 with transparency "
            "composited on RGB (255, 255, 255), 2 with 16-bit or float samples rescaled to 8 bits.") in sentence


def test_array_sources_report_zero_and_the_sentence_stays_out():
    summary = cleaning_summary({"decoded_as_viewer": {"background_rgb": [255, 255, 255],
                                                      "rotated_by_exif": {"train": 0, "val": 0, "test": 0}}})
    assert "Decoded as a viewer" not in _cleaning_sentence(summary)


# ------------------------------------------------------------------ raster formats only

# A real, minimal EPS: Pillow's EPS plugin opens it, and would render it by running Ghostscript on it.
EPS = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\n%%EndComments\n"
       b"newpath 0 0 moveto 16 16 lineto stroke\nshowpage\n%%EOF\n")
EPS_REASON = "not a raster image: a PostScript (EPS) file; only JPEG, PNG, GIF, BMP, TIFF, WEBP, PPM are opened"


@pytest.fixture
def ghostscript_calls(monkeypatch) -> list:
    """Every call Pillow makes to Ghostscript in this process, recorded instead of run."""
    calls: list = []

    def record(tile, size, fp, scale=1, transparency=False):
        calls.append(size)
        return Image.new("RGB", size).im

    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", record)
    return calls


def test_the_eps_fixture_is_one_pillow_would_hand_to_ghostscript(ghostscript_calls):
    image = Image.open(io.BytesIO(EPS))  # no allow-list: Pillow goes by the content
    assert image.format == "EPS"
    image.load()
    assert ghostscript_calls == [(16, 16)]


@pytest.mark.parametrize("data, kind", [(EPS, "PostScript (EPS)"), (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n", "PDF")])
def test_a_non_raster_file_is_refused_with_one_line_and_never_rendered(ghostscript_calls, data, kind):
    decoded = decode_image(data, 16)
    assert decoded.pixels is None
    assert decoded.error.startswith(f"not a raster image: a {kind} file; only JPEG, PNG")
    assert "\n" not in decoded.error and ghostscript_calls == []


def prepared_report(tmp_path: Path, uri: Path, fmt: str) -> dict:
    fetch_source(SourceConfig(name="src", uri=str(uri), format=fmt), tmp_path / "raw")
    cfg = DatasetConfig(name="src", source="src", image_size=16, val_fraction=0.0)
    return prepare_dataset(cfg, tmp_path / "raw", workers=1).report  # one process: the recorder sees every decode


def test_an_eps_named_jpg_in_an_image_folder_source_is_dropped_with_its_reason(tmp_path, ghostscript_calls):
    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        (tmp_path / "tree" / label).mkdir(parents=True)
        for i in range(3):
            (tmp_path / "tree" / label / f"{i}.jpg").write_bytes(jpeg_bytes(blob_image(rng, 32, 32)))
    (tmp_path / "tree" / "cat" / "photo.jpg").write_bytes(EPS)
    report = prepared_report(tmp_path, tmp_path / "tree", "image-folder")
    assert [(d["id"], d["reason"][:len(EPS_REASON)]) for d in report["dropped"]] == [("cat/photo.jpg", EPS_REASON)]
    assert report["dropped_by_reason"] == {"not a raster image": 1}
    assert report["counts"]["train"]["total"] == 6 and ghostscript_calls == []


def test_an_eps_named_jpg_in_a_kaggle_zip_is_dropped_with_its_reason(tmp_path, ghostscript_calls):
    fx = make_kaggle_tree(tmp_path / "tree")
    planted = plant_in_kaggle_tree(fx, "train", KAGGLE_CLASSES[0], "photo.jpg", EPS)
    report = prepared_report(tmp_path, zip_tree(fx.root, tmp_path / "butterflies.zip"), "image-csv")
    refused = [d for d in report["dropped"] if d["reason"].startswith("not a raster image")]
    assert [(d["id"], d["split"], d["label"]) for d in refused] == [(planted, "train", KAGGLE_CLASSES[0])]
    assert refused[0]["reason"].startswith(EPS_REASON)
    assert report["dropped_by_reason"]["not a raster image"] == 1 and ghostscript_calls == []
