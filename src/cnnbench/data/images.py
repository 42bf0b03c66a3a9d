"""Decoding one image, from any source, to RGB at a fixed size, within memory limits, as a viewer shows it.

Shared by `prepare` (every image of a dataset) and `cnnbench predict` (any file a user hands over):
a file is decoded whole or refused with a short, stable reason, never a crash and never gigabytes.
Only the raster formats in RASTER_FORMATS are opened, whatever a file's name says. What a viewer
does and a plain `convert("RGB")` does not is done here (see as_viewer_rgb): EXIF orientation,
transparency on a white background, 16-bit and float samples scaled to 8 bits.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Decoding limits, so that no file from anywhere can exhaust memory. Every image here ends at a few
# hundred pixels a side and camera photos are 12-50 MP: 64 MP refuses only what no dataset for this tool
# needs. It is checked from the header, before decoding. At the limit one decode holds 4 bytes a pixel
# decoded, then 2 x 3 as RGB (the conversion and its hashed copy): a 64 MP RGBA PNG peaks at 650 MB,
# plus the file itself; a typical photo needs a few MB. Measured at 8000 x 8000: composited transparency
# and a 16-bit PNG peak as an RGB PNG does (646 MB, the interpreter included), a float TIFF 130 MB more
# than before it was rescaled here (1.02 GB, of which 244 MB is the uncompressed file).
MAX_IMAGE_PIXELS = 64_000_000
# No image within the pixel limit is larger encoded than raw RGBA; a zip member declaring more is refused
# before it is read (read whole, a zip-bomb member would take gigabytes).
MAX_FILE_BYTES = 4 * MAX_IMAGE_PIXELS


# The formats opened, and no other. Pillow identifies a file by its content, not its name, and would
# hand an EPS or PDF named photo.jpg to Ghostscript (a PostScript interpreter: a program from the data
# would run) or parse one of dozens of rarer formats. These are the formats of the sources read here
# (ImageFolder's extensions in readers.IMAGE_EXTENSIONS, Kaggle's JPEGs and PNGs) and GIF; PPM covers PGM.
RASTER_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP", "PPM")
# Refused files named from their first bytes, so that the report says what came in under an image's name.
NOT_RASTER = ((b"%!PS", "PostScript (EPS)"), (b"\xc5\xd0\xd3\xc6", "EPS (DOS binary)"), (b"%PDF", "PDF"))

# Transparent pixels are shown over white, as browsers and most viewers show a PNG on a page: what
# hides under alpha 0 (often the colour of a removed background) never reaches the network.
BACKGROUND = (255, 255, 255)
# Samples wider than 8 bits: 16-bit integer, 32-bit integer, 32-bit float (Pillow's modes).
WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


@dataclass
class Decoded:
    pixels: np.ndarray | None  # (S, S, 3) uint8, or None when the image was rejected
    digest: str = ""           # hash of the decoded RGB pixels, for duplicate detection
    mode: str = ""             # the original PIL mode (CMYK, L, P, ...), reported when converted
    error: str = ""
    hashes: object = None      # what decode_image's `hasher` returned for the full-size image, if given
    oriented: bool = False     # turned upright by its EXIF Orientation tag
    composited: bool = False   # had transparent pixels, composited on BACKGROUND
    rescaled: bool = False     # 16-bit or float samples scaled to 8 bits (see to_8_bits)


def decode_image(data: bytes | np.ndarray, size: int, hasher: Callable[[Image.Image], object] | None = None) -> Decoded:
    """Decode one image (encoded bytes or a pixel array) to RGB at size x size, or say why not.

    `hasher` (prepare passes the perceptual hash) sees the RGB image before the resize, so
    near-duplicates are compared at the resolution they were decoded at.

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
            return Decoded(None, error=_refusal(data))
        except Exception as err:  # PIL raises many types for bad data
            return Decoded(None, error=f"undecodable: {type(err).__name__}: {err}")
    mode = image.mode
    try:
        rgb, seen = as_viewer_rgb(image)
    except Exception as err:  # modes without an RGB conversion
        return Decoded(None, error=f"undecodable: cannot convert mode {mode} to RGB: {err}")
    del image  # the decoded original (up to 4 bytes a pixel) is not needed past the conversion
    pixels = np.asarray(rgb, dtype=np.uint8)  # the one copy out of PIL; hashed without another
    digest = hashlib.sha1(pixels)
    digest.update(repr(rgb.size).encode())
    hashes = hasher(rgb) if hasher is not None else None
    if rgb.size != (size, size):
        # Centre-crop to square, then resize: keeps the aspect ratio of non-square images.
        pixels = np.asarray(ImageOps.fit(rgb, (size, size), Image.BILINEAR), dtype=np.uint8)
    return Decoded(pixels, digest.hexdigest(), mode, hashes=hashes, **seen)


def as_viewer_rgb(image: Image.Image) -> tuple[Image.Image, dict[str, bool]]:
    """`image` in RGB as a viewer shows it, and which of the three fixes it needed (Decoded's flags).

    Upright by its EXIF orientation; 16-bit and float samples scaled to 8 bits (to_8_bits);
    transparency composited on BACKGROUND. Anything else is Pillow's own conversion (CMYK, L, P...).
    """
    oriented = _exif_orientation(image) not in (0, 1)
    if oriented:
        image = ImageOps.exif_transpose(image)
    rescaled = image.mode in WIDE_MODES
    if rescaled:
        image = to_8_bits(image)
    composited = False
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        image = image if image.mode == "RGBA" else image.convert("RGBA")
        composited = image.getchannel("A").getextrema()[0] < 255  # an opaque alpha changes nothing
        if composited:
            flat = Image.new("RGB", image.size, BACKGROUND)
            flat.paste(image, (0, 0), image)  # alpha-blends: a*pixel + (1 - a)*background
            image = flat
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    return rgb, {"oriented": oriented, "composited": composited, "rescaled": rescaled}


def to_8_bits(image: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit integer or float grayscale image as 8-bit L, scaled as viewers scale it.

    Samples are mapped linearly from their type's range when they fit it, as viewers show a 16-bit
    PNG or TIFF (0..65535) and a float image ([0, 1]): a dark image stays dark, a mid-grey one mid-grey.
    Samples outside it (a 32-bit count image, floats in physical units) have no conventional range,
    so the image's own min..max is used, as scientific viewers do. NaN and infinities show black.
    """
    values = np.asarray(image).astype(np.float32)
    finite = np.isfinite(values)
    values[~finite] = 0.0
    shown = values[finite] if not finite.all() else values
    low, high = (float(shown.min()), float(shown.max())) if shown.size else (0.0, 0.0)
    nominal = (0.0, 1.0) if image.mode == "F" else (0.0, 65535.0)
    if low < nominal[0] or high > nominal[1]:
        nominal = (low, high if high > low else low + 1.0)
    values -= nominal[0]  # in place throughout: a 64 MP image is 256 MB as float32
    values *= 255.0 / (nominal[1] - nominal[0])
    values[~finite] = 0.0  # black, whatever the offset did to them
    np.clip(np.rint(values, out=values), 0, 255, out=values)
    return Image.fromarray(values.astype(np.uint8), "L")


def _exif_orientation(image: Image.Image) -> int:
    """The EXIF Orientation tag (1..8; 1 is upright), 0 when absent or unreadable (viewers ignore it then)."""
    try:
        value = image.getexif().get(0x0112, 0)
    except Exception:  # damaged EXIF blocks raise many types; the pixels are still good
        return 0
    return value if isinstance(value, int) and 1 <= value <= 8 else 0


class _TooLarge(Exception):
    """An image refused for its size before decoding; the message is the reason reported."""


def _open_within_limits(data: bytes, size: int) -> Image.Image:
    """The image in `data`, opened (header only) and checked against MAX_IMAGE_PIXELS, ready to load."""
    limit = f"limit {MAX_IMAGE_PIXELS // 10**6} MP"
    try:
        with warnings.catch_warnings():  # Pillow warns from 89 MP; the check below refuses those anyway
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=RASTER_FORMATS)
    except Image.DecompressionBombError:  # over twice Pillow's own limit: it refuses to open it at all
        raise _TooLarge(f"too large: over {2 * (Image.MAX_IMAGE_PIXELS or 0) // 10**6} MP ({limit})") from None
    width, height = image.size
    if width * height > MAX_IMAGE_PIXELS:
        raise _TooLarge(f"too large: {width}x{height} pixels ({limit})")
    if min(width, height) >= 2 * size:
        image.draft("RGB", (size, size))  # JPEG only; other formats ignore it
    return image


def _refusal(data: bytes) -> str:
    """Why `data`, which no format of RASTER_FORMATS opens, is refused: one stable line for the report."""
    opened = ", ".join(RASTER_FORMATS)
    for magic, kind in NOT_RASTER:
        if data[:64].lstrip().startswith(magic):
            return f"not a raster image: a {kind} file; only {opened} are opened, and PostScript is never run"
    return f"undecodable: not an image in one of the formats opened ({opened})"
