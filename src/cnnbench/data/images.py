"""Decoding one image, from any source, to RGB at a fixed size, within memory limits.

Shared by `prepare` (every image of a dataset) and `cnnbench predict` (any file a user hands over):
a file is decoded whole or refused with a short, stable reason, never a crash and never gigabytes.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Decoding limits, so that no file from anywhere can exhaust memory. Every image here ends at a few
# hundred pixels a side and camera photos are 12-50 MP: 64 MP refuses only what no dataset for this tool
# needs. It is checked from the header, before decoding. At the limit one decode holds 4 bytes a pixel
# decoded, then 2 x 3 as RGB (the conversion and its hashed copy): a 64 MP RGBA PNG peaks at 650 MB,
# plus the file itself; a typical photo needs a few MB.
MAX_IMAGE_PIXELS = 64_000_000
# No image within the pixel limit is larger encoded than raw RGBA; a zip member declaring more is refused
# before it is read (read whole, a zip-bomb member would take gigabytes).
MAX_FILE_BYTES = 4 * MAX_IMAGE_PIXELS


@dataclass
class Decoded:
    pixels: np.ndarray | None  # (S, S, 3) uint8, or None when the image was rejected
    digest: str = ""           # hash of the decoded RGB pixels, for duplicate detection
    mode: str = ""             # the original PIL mode (CMYK, L, P, ...), reported when converted
    error: str = ""
    hashes: object = None      # what decode_image's `hasher` returned for the full-size image, if given


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
    hashes = hasher(rgb) if hasher is not None else None
    if rgb.size != (size, size):
        # Centre-crop to square, then resize: keeps the aspect ratio of non-square images.
        pixels = np.asarray(ImageOps.fit(rgb, (size, size), Image.BILINEAR), dtype=np.uint8)
    return Decoded(pixels, digest.hexdigest(), mode, hashes=hashes)


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
