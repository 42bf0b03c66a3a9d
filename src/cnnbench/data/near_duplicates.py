"""Near-duplicates: perceptual hashes (pHash, bit for bit imagehash's) and their vectorised pairwise comparison.

pHash keeps the signs of an image's lowest 8x8 DCT frequencies around their median: re-encoding,
a resize of a few percent and a small crop or shift move few of its 64 bits, while two unrelated
photos differ in about half. A horizontal flip changes the odd frequencies' signs, so each image is
hashed twice, as is and mirrored, and a pair's distance is the smaller of the two Hamming distances.
What the default threshold catches, measured on tests/test_near_duplicates.py's fixtures, is in
docs/datasets.md.

The hash is imagehash.phash's computation written out with scipy (imagehash is not on the GPU
machine's image, and prepare is on bench/gpu.py's path); tests/test_near_duplicates.py holds it to
imagehash's own bits, so the prepared splits do not change.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fftpack
from PIL import Image, ImageOps

# Hashing works on a 32x32 grayscale image (imagehash's own pHash size): reducing once to it, then
# mirroring that, costs one resize however large the decoded image is.
HASH_INPUT = 32
HASH_SIZE = 8  # the 8x8 lowest frequencies: 64 bits
# Rows compared at once: a few (BLOCK, N) arrays, 14M entries each for the 13.6k butterflies.
BLOCK = 1024
_POPCOUNT = np.array([bin(b).count("1") for b in range(256)], dtype=np.uint8)


@dataclass(frozen=True)
class NearPair:
    """Two images whose hashes are within the threshold: `a` is the more held-out copy (test, val, train)."""

    a: int          # index into the images compared
    b: int
    distance: int   # Hamming distance of the pHashes, the mirrored one included (0..64)
    flipped: bool   # the closest match was against the mirror image


def phash_pair(image: Image.Image) -> tuple[int, int]:
    """The 64-bit pHash of `image` and of its horizontal mirror, as unsigned integers."""
    small = image.convert("L").resize((HASH_INPUT, HASH_INPUT), Image.LANCZOS)
    return phash(small), phash(ImageOps.mirror(small))


def phash(small: Image.Image) -> int:
    """imagehash.phash of a 32x32 grayscale image, as an unsigned integer (its bits row by row, first bit high).

    The same operations in the same order as imagehash 4.3: a 2-D DCT (scipy.fftpack's type II, rows
    then columns) of the uint8 pixels, its top-left 8x8 block compared with that block's median.
    """
    pixels = np.asarray(small)
    if pixels.shape != (HASH_INPUT, HASH_INPUT):
        raise ValueError(f"phash expects a {HASH_INPUT}x{HASH_INPUT} grayscale image, got shape {pixels.shape}")
    dct = scipy.fftpack.dct(scipy.fftpack.dct(pixels, axis=0), axis=1)
    low = dct[:HASH_SIZE, :HASH_SIZE]
    bits = low > np.median(low)
    return int.from_bytes(np.packbits(bits.ravel()).tobytes(), "big")


def hamming(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bit counts of x XOR y for uint64 arrays that broadcast (numpy's popcount; a byte table before numpy 2)."""
    xor = np.ascontiguousarray(np.bitwise_xor(x, y))
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(xor).astype(np.int16)
    return _POPCOUNT[xor.view(np.uint8)].reshape(*xor.shape, 8).sum(-1, dtype=np.int16)


def find_near_pairs(hashes: np.ndarray, mirrors: np.ndarray, max_distance: int) -> list[NearPair]:
    """Every pair i < j whose distance (plain or mirrored) is at most `max_distance`, sorted by (i, j).

    Compares BLOCK rows against the columns from the block's first row on, in numpy: 13.6k random
    hashes take about 5 s on a busy 2-core machine, where a Python double loop over 92M pairs would
    take many minutes.
    """
    hashes = np.asarray(hashes, dtype=np.uint64)
    mirrors = np.asarray(mirrors, dtype=np.uint64)
    pairs = []
    for start in range(0, len(hashes), BLOCK):
        rows = slice(start, start + BLOCK)
        plain = hamming(hashes[rows, None], hashes[None, start:])  # the lower triangle was done already
        flipped = hamming(hashes[rows, None], mirrors[None, start:])
        distance = np.minimum(plain, flipped)
        i, j = np.nonzero(distance <= max_distance)
        keep = j > i
        for a, b in zip(i[keep].tolist(), j[keep].tolist()):
            d_plain, d_flip = int(plain[a, b]), int(flipped[a, b])
            a, b = a + start, b + start
            pairs.append(NearPair(a, b, min(d_plain, d_flip), d_flip < d_plain))
    return sorted(pairs, key=lambda p: (p.a, p.b))
