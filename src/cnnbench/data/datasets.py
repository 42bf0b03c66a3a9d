"""The whole split resident on the device, augmented there in batches.

No Python data loader sits between the arrays and the model: images stay uint8 on the device,
and each batch is gathered, cropped, flipped and normalised with a handful of batched tensor ops
(the approach of the fastest public CIFAR-10 trainers). The same code runs on the CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from cnnbench.params.config import AugmentConfig


@dataclass
class DeviceSplit:
    """Images (N, C, H, W) uint8 and labels (N,) int64, on one device."""

    images: torch.Tensor
    labels: torch.Tensor

    @classmethod
    def from_numpy(cls, x: np.ndarray, y: np.ndarray, device: torch.device) -> DeviceSplit:
        images = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).contiguous()
        return cls(images.to(device), torch.from_numpy(y).long().to(device))

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def nbytes(self) -> int:
        """What the split occupies on its device."""
        return self.images.nbytes + self.labels.nbytes


class Normalize:
    """uint8 -> float, scaled to [0, 1] then standardised with the training split's statistics."""

    def __init__(self, mean: list[float], std: list[float], device: torch.device):
        self.mean = torch.tensor(mean, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, device=device).view(1, -1, 1, 1)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return (images.float() / 255.0 - self.mean) / self.std


def random_crop_padded(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Random translation by up to `pad` pixels (reflect padding), one offset pair per image."""
    if pad == 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    dy = torch.randint(0, 2 * pad + 1, (n,), device=x.device, generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), device=x.device, generator=gen)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # (n, 1, h, 1)
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # (n, 1, 1, w)
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chans = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[batch, chans, rows, cols]


def random_resized_crop(x: torch.Tensor, scale_min: float, gen: torch.Generator) -> torch.Tensor:
    """Inception-style crop: a random box of area [scale_min, 1] and aspect [3/4, 4/3], resized back.

    One affine grid per image, sampled bilinearly in a single grid_sample call.
    """
    n = x.shape[0]
    dev = x.device
    area = torch.empty(n, device=dev).uniform_(scale_min, 1.0, generator=gen)
    log_ratio = torch.empty(n, device=dev).uniform_(math.log(3 / 4), math.log(4 / 3), generator=gen)
    ratio = torch.exp(log_ratio)
    sw = torch.sqrt(area * ratio).clamp(max=1.0)  # box width / image width
    sh = torch.sqrt(area / ratio).clamp(max=1.0)
    cx = (torch.rand(n, device=dev, generator=gen) * 2 - 1) * (1 - sw)
    cy = (torch.rand(n, device=dev, generator=gen) * 2 - 1) * (1 - sh)
    theta = torch.zeros(n, 2, 3, device=dev)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sw, cx, sh, cy
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="reflection", align_corners=False)


def random_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Horizontal flip of a random half of the batch."""
    flip = torch.rand(x.shape[0], device=x.device, generator=gen) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def augment(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Apply the configured crop and flip to a normalised float batch."""
    if cfg.crop == "pad":
        x = random_crop_padded(x, cfg.pad, gen)
    elif cfg.crop == "resized":
        x = random_resized_crop(x, cfg.scale_min, gen)
    if cfg.flip:
        x = random_flip(x, gen)
    return x


def epoch_order(n: int, seed: int, epoch: int, device: torch.device) -> torch.Tensor:
    """The shuffled order of epoch `epoch`: a pure function of (seed, epoch), so a resumed run sees the same."""
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=gen).to(device)


def batches(order: torch.Tensor, batch_size: int, rank: int = 0, world: int = 1, drop_last: bool = True):
    """Yield index batches: global batches of `batch_size`, each split evenly across `world` ranks.

    Dropping the last partial batch keeps shapes fixed (cudnn.benchmark tunes once).
    """
    per_rank = batch_size // world
    n = len(order) // batch_size * batch_size if drop_last else len(order)
    for start in range(0, n, batch_size):
        chunk = order[start:start + batch_size]
        if world > 1:
            chunk = chunk[rank * per_rank:(rank + 1) * per_rank] if len(chunk) == batch_size else chunk[rank::world]
        if len(chunk):
            yield chunk
