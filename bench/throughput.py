"""Training throughput: cnnbench's device-resident loop against the usual DataLoader recipe.

Three loops train the same model with the same batch size, optimiser, schedule and precision on the
same synthetic data, measured side by side in one process (shared machines are noisy: compare the
ratios, not the absolute figures):

  reference   torchvision-style Dataset of PIL images + DataLoader (persistent workers, pinned memory)
              + RandomCrop(padding)/RandomResizedCrop, RandomHorizontalFlip, ToTensor, Normalize
  cnnbench    cnnbench.training.loop.train_one_epoch: uint8 data on the device, batched augmentation there
  resident    the same loop with no augmentation (the ceiling: is the loop input-bound?)

Each loop is warmed up first (DataLoader workers start, cudnn autotunes, the allocator grows), then
whole epochs are timed, the device synchronised around them. The reference loop warms up on whole
epochs: stopped mid-epoch, its workers would hold about `workers x prefetch_factor` batches ready,
which the timed epoch would then drain for free. An epoch pays the DataLoader's refill at its start
as a real epoch does, so give it enough steps (a CIFAR-10 epoch is 97 steps of 512) or that refill
decides the ratio. The device loops warm up on a few steps (nothing is prefetched there). Peak memory
is the device allocator's peak over the timed epochs less the resident dataset, which is reported
apart (CUDA only).

    python bench/throughput.py --model resnet18 --image-size 32 --images 50000 --batch-size 512

bench/gpu.py runs `measure_loops` over every study model on a GPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from cnnbench.core.device import device_name, resolve_device
from cnnbench.data.datasets import DeviceSplit, Normalize
from cnnbench.models.build import build_model
from cnnbench.params.config import AugmentConfig, ModelSpec, TrainConfig, load_params
from cnnbench.training.distributed import Dist
from cnnbench.training.loop import configure_torch, make_optimizer, make_schedule, train_one_epoch

MEAN, STD = [0.49, 0.48, 0.45], [0.25, 0.24, 0.26]


class PILDataset(torch.utils.data.Dataset):
    """What torchvision.datasets.CIFAR10 does: one PIL image per item, transformed on the CPU."""

    def __init__(self, x: np.ndarray, y: np.ndarray, transform):
        self.x, self.y, self.transform = x, y, transform

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.transform(Image.fromarray(self.x[i])), int(self.y[i])


def synthetic_images(n: int, size: int, classes: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n random uint8 RGB images (N, H, W, 3) and labels: the shapes of a real dataset, none of its content."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), rng.integers(0, classes, n).astype(np.int64)


def augment_config(image_size: int) -> AugmentConfig:
    """cnnbench's augmentation for this size: padded crop for small images, random-resized crop for large."""
    return AugmentConfig(crop="pad" if image_size <= 64 else "resized", pad=4, flip=True)


def reference_transform(image_size: int, augment: AugmentConfig):
    """The torchvision recipe's transforms matching `augment` (the same crop family, flip and normalisation)."""
    from torchvision import transforms

    crop = (transforms.RandomCrop(image_size, padding=augment.pad, padding_mode="reflect") if augment.crop == "pad"
            else transforms.RandomResizedCrop(image_size, scale=(augment.scale_min, 1.0)))
    return transforms.Compose([crop, transforms.RandomHorizontalFlip(), transforms.ToTensor(),
                               transforms.Normalize(MEAN, STD)])


def reference_epoch(model, optimizer, schedule, loader, device: torch.device, amp: bool, channels_last: bool) -> int:
    """One whole pass of the DataLoader recipe; returns the images seen."""
    model.train()
    seen = 0
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        seen += len(y)
    return seen


def timed(fn, device: torch.device) -> float:
    """Wall-clock seconds of fn(), with `device` (the one being timed, not the current one) synchronised."""
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_mb(device: torch.device, resident_bytes: int = 0) -> float | None:
    """The allocator's peak since reset_peak, less the resident data; None on the CPU (no such counter)."""
    if device.type != "cuda":
        return None
    return round((torch.cuda.max_memory_allocated(device) - resident_bytes) / 2**20, 1)


def fresh_model(spec: ModelSpec, cfg: TrainConfig, image_size: int, device: torch.device, total_steps: int):
    """Model, optimiser and schedule as train_run builds them, seeded so every loop starts alike."""
    torch.manual_seed(0)
    model = build_model(spec, num_classes=10, image_size=image_size).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, cfg)
    return model, optimizer, make_schedule(optimizer, cfg, total_steps + 1)


def measure_loops(spec: ModelSpec, x: np.ndarray, y: np.ndarray, device: torch.device, batch_size: int,
                  epochs: int = 1, workers: int = 0, warmup_steps: int = 10, warmup_epochs: int = 1) -> dict:
    """images/s and training peak memory of the three loops, with the same model, data, batch and precision.

    A loop that fails (DataLoader workers short of shared memory, the GPU out of memory) is recorded
    as {"error": ...} and the others still run: a GPU session is too short to lose to one of them.
    """
    cfg = TrainConfig(batch_size=batch_size, epochs=epochs, lr=0.1, deterministic=False,
                      augment=augment_config(x.shape[1]))
    configure_torch(cfg, device)
    steps = len(y) // batch_size
    out: dict = {"steps_per_epoch": steps, "timed_images": epochs * steps * batch_size}
    out["reference"] = attempt(lambda: reference_loop(spec, cfg, x, y, device, workers, warmup_epochs))
    data = DeviceSplit.from_numpy(x, y, device)
    out["resident_data_mb"] = round(data.nbytes / 2**20, 1)
    for name, augment in (("cnnbench", cfg.augment), ("resident", AugmentConfig(crop="none", flip=False))):
        run_cfg = dataclasses.replace(cfg, augment=augment)
        out[name] = attempt(functools.partial(device_loop, spec, run_cfg, data, device, warmup_steps))
    for other in ("reference", "resident"):
        rates = [out[loop].get("images_per_sec") for loop in ("cnnbench", other)]
        out[f"ratio_cnnbench_vs_{other}"] = round(rates[0] / rates[1], 3) if all(rates) else None
    return out


def reference_loop(spec: ModelSpec, cfg: TrainConfig, x: np.ndarray, y: np.ndarray, device: torch.device,
                   workers: int, warmup_epochs: int) -> dict:
    """The DataLoader recipe: `warmup_epochs` whole untimed epochs, then cfg.epochs timed epochs."""
    cuda, size, steps = device.type == "cuda", x.shape[1], len(y) // cfg.batch_size
    loader = torch.utils.data.DataLoader(
        PILDataset(x, y, reference_transform(size, cfg.augment)), batch_size=cfg.batch_size, shuffle=True,
        drop_last=True, num_workers=workers, pin_memory=cuda, persistent_workers=workers > 0)
    model, optimizer, schedule = fresh_model(spec, cfg, size, device, (warmup_epochs + cfg.epochs) * steps)
    for _ in range(warmup_epochs):
        reference_epoch(model, optimizer, schedule, loader, device, cuda, cuda)
    reset_peak(device)
    seconds = sum(timed(lambda: reference_epoch(model, optimizer, schedule, loader, device, cuda, cuda), device)
                  for _ in range(cfg.epochs))
    return {"images_per_sec": round(cfg.epochs * steps * cfg.batch_size / seconds, 1), "peak_mem_mb": peak_mb(device)}


def device_loop(spec: ModelSpec, cfg: TrainConfig, data: DeviceSplit, device: torch.device, warmup_steps: int) -> dict:
    """cnnbench's loop (train_one_epoch) on device-resident data: warm-up steps, then cfg.epochs timed epochs."""
    cuda, size, steps = device.type == "cuda", data.images.shape[-1], len(data) // cfg.batch_size
    warm = DeviceSplit(data.images[:warmup_steps * cfg.batch_size], data.labels[:warmup_steps * cfg.batch_size])
    norm, env = Normalize(MEAN, STD, device), Dist(0, 1, device)
    model, optimizer, schedule = fresh_model(spec, cfg, size, device, warmup_steps + cfg.epochs * steps)
    train_one_epoch(model, optimizer, schedule, warm, norm, cfg, 0, env, cuda, progress=False)
    reset_peak(device)
    seconds = sum(timed(lambda e=e: train_one_epoch(model, optimizer, schedule, data, norm, cfg, e, env, cuda,
                                                     progress=False), device) for e in range(1, cfg.epochs + 1))
    return {"images_per_sec": round(cfg.epochs * steps * cfg.batch_size / seconds, 1),
            "seconds_per_epoch": round(seconds / cfg.epochs, 3), "peak_mem_mb": peak_mb(device, data.nbytes)}


def attempt(measure) -> dict:
    """measure()'s figures, or the error that stopped it (bugs of other kinds still raise)."""
    try:
        return measure()
    except (RuntimeError, OSError) as err:  # CUDA out of memory is a RuntimeError; a full /dev/shm, either
        return {"error": describe(err)}
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # what the loop held goes before the next one measures its peak


def describe(err: BaseException) -> str:
    """`RuntimeError: CUDA out of memory. ...`: the error's type and the first line of its message."""
    first = next(iter(str(err).strip().splitlines()), "")
    return f"{type(err).__name__}: {first[:300]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--images", type=int, default=50_000, help="one epoch (default: CIFAR-10's training split)")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per loop, after the warm-up steps")
    parser.add_argument("--warmup-steps", type=int, default=10, help="untimed steps of the device loops")
    parser.add_argument("--warmup-epochs", type=int, default=1, help="untimed whole epochs of the reference loop")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="DataLoader workers")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()

    device = resolve_device(args.device)
    x, y = synthetic_images(args.images, args.image_size)
    results = measure_loops(load_params(args.params).model(args.model), x, y, device, args.batch_size, args.epochs,
                            args.workers, args.warmup_steps, args.warmup_epochs)
    report = {
        "device": device_name(device), "torch": torch.__version__, "python": platform.python_version(),
        "cpu_count": os.cpu_count(), "model": args.model, "image_size": args.image_size,
        "images": args.images, "batch_size": args.batch_size, "epochs_timed": args.epochs,
        "warmup_steps": args.warmup_steps, "warmup_epochs": args.warmup_epochs, "dataloader_workers": args.workers,
        "amp_bf16": device.type == "cuda",
        **results, "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    print(json.dumps(report, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
