"""Frozen features for the label audit: an ImageNet backbone when its weights are cached, else pixels.

The audit needs features in which images of one class sit together; it never trains them. The
offline fallback needs nothing: downsampled pixels reduced by PCA, plus colour histograms.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from cnnbench.core.errors import CnnbenchError

# Downsampled side for pixel features: 16x16x3 = 768 values, enough for PCA to find the layout of
# digits or the colours and shapes of a photo; more only adds noise for a linear probe.
PIXEL_SIDE = 16
HIST_BINS = 8   # per channel
CHUNK = 512     # images per vectorised step: bounds memory at 224 px


# torchvision's ResNet18_Weights.IMAGENET1K_V1 file name, as torch.hub caches it.
IMAGENET_WEIGHTS_FILE = "resnet18-f37072fd.pth"


def imagenet_weights_path() -> Path | None:
    """The cached torchvision ResNet18 ImageNet weights file, or None (never downloads).

    Found where torch.hub.get_dir() looks ($TORCH_HOME, else $XDG_CACHE_HOME/torch, else ~/.cache/torch),
    without importing torch: the pixels fallback would pay seconds for the import and never use it.
    """
    home = os.environ.get("TORCH_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "torch")
    path = Path(os.path.expanduser(home)) / "hub" / "checkpoints" / IMAGENET_WEIGHTS_FILE
    return path if path.is_file() else None


def choose_features(kind: str) -> str:
    """`auto` resolved: imagenet when its weights are cached, else pixels; imagenet without them is an error."""
    if kind == "pixels":
        return "pixels"
    cached = imagenet_weights_path() is not None
    if kind == "imagenet" and not cached:
        raise CnnbenchError("params: audit.features: imagenet needs ResNet18's ImageNet weights in the torch hub "
                            "cache (nothing is downloaded here); set it to auto or pixels.")
    return "imagenet" if cached else "pixels"


def chunks(xs: list[np.ndarray], size: int):
    """Consecutive slices of at most `size` images over several arrays (the splits), never concatenated:
    a copy of the 13.6k butterflies at 224 px would be 2 GB more."""
    for x in xs:
        for start in range(0, len(x), size):
            yield x[start:start + size]


def _progress(xs: list[np.ndarray], size: int, desc: str):
    total = sum(-(-len(x) // size) for x in xs)
    return tqdm(chunks(xs, size), total=total, desc=desc, unit="batch", mininterval=2)


def pixel_features(xs: list[np.ndarray], pca_dims: int, seed: int) -> np.ndarray:
    """Box-downsampled pixels (standardised, PCA to `pca_dims`) and per-channel colour histograms, for the
    images of every array in `xs`, in order."""
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    side = min(PIXEL_SIDE, xs[0].shape[1])
    k = xs[0].shape[1] // side
    small, hist = [], []
    for chunk in _progress(xs, CHUNK, "pixel features"):
        part = np.ascontiguousarray(chunk[:, : k * side, : k * side])
        # PIL's box reduction is one C pass per image: 9x faster than a numpy mean over strided axes.
        small.append(np.stack([np.asarray(Image.fromarray(image).reduce(k)) for image in part])
                     .reshape(len(part), -1).astype(np.float32))
        # Colour histograms from every 4th pixel each way: the same histogram, 16x fewer values to count.
        sub = part[:, ::4, ::4].reshape(len(part), -1, 3)
        bins = (sub >> (8 - int(np.log2(HIST_BINS)))).astype(np.int64)
        offset = (np.arange(len(part))[:, None, None] * 3 + np.arange(3)) * HIST_BINS  # one bincount per chunk
        counts = np.bincount((bins + offset).ravel(), minlength=len(part) * 3 * HIST_BINS)
        hist.append(counts.reshape(len(part), -1) / sub.shape[1])
    small, hist = np.concatenate(small), np.concatenate(hist).astype(np.float32)
    dims = max(1, min(pca_dims, small.shape[1], len(small) - 1))
    reduced = PCA(dims, random_state=seed).fit_transform(StandardScaler().fit_transform(small))
    return np.hstack([reduced, StandardScaler().fit_transform(hist)]).astype(np.float32)


def imagenet_features(xs: list[np.ndarray], batch_size: int = 64) -> np.ndarray:
    """ResNet18 (ImageNet weights, from the cache) global-pooled features, 512 per image of every array in
    `xs`, in order, on CPU or GPU."""
    import torch
    import torch.nn.functional as F
    from torchvision.models import resnet18

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = resnet18()
    model.load_state_dict(torch.load(imagenet_weights_path(), map_location="cpu", weights_only=True))
    model.fc = torch.nn.Identity()
    model.eval().to(device)
    mean = torch.tensor([0.485, 0.456, 0.406], device=device).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=device).view(1, 3, 1, 1)
    side = max(xs[0].shape[1], 64)  # small images (digits, CIFAR) upsampled: the stem downsamples 32x
    out = []
    with torch.inference_mode():
        for chunk in _progress(xs, batch_size, "imagenet features"):
            batch = torch.from_numpy(np.ascontiguousarray(chunk)).to(device)
            batch = batch.permute(0, 3, 1, 2).float().div_(255)
            if batch.shape[-1] != side:
                batch = F.interpolate(batch, size=(side, side), mode="bilinear", align_corners=False)
            out.append(model((batch - mean) / std).float().cpu().numpy())
    return np.concatenate(out)
