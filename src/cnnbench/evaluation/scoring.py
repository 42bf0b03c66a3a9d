"""The one way a model scores a split: validation during training and the test evaluation both call it.

Eval mode, batches, and full fp32 on every device: no autocast, and TF32 off on CUDA for the
duration (training turns it on for speed), so the best-validation and the test columns measure
the same thing with the same arithmetic.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from cnnbench.data.datasets import Normalize


@torch.no_grad()
def split_logits(model: torch.nn.Module, images: torch.Tensor, norm: Normalize, batch_size: int = 1024,
                 flip: bool = False, channels_last: bool = False) -> torch.Tensor:
    """fp32 logits of uint8 (N, C, H, W) images, computed batch by batch on norm's device.

    `images` may live on the CPU (only each batch moves); `flip` mirrors them horizontally first
    (test-time augmentation).
    """
    model.eval()
    device = norm.mean.device
    out = []
    with tf32(False):
        for start in range(0, len(images), batch_size):
            x = norm(images[start:start + batch_size].to(device))
            if flip:
                x = x.flip(3)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            out.append(model(x).float())
    return torch.cat(out) if out else torch.zeros((0, 0), device=device)


@contextmanager
def tf32(enabled: bool):
    """TF32 matmuls and cuDNN convolutions on or off inside the block, restored afterwards (scoring turns them
    off; train.configure_torch turns them on; the CPU never uses TF32 anyway)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
