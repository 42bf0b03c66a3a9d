"""Training throughput: cnnbench's device-resident loop against the usual DataLoader recipe.

Three loops train the same model with the same batch size, optimiser and precision on the same
synthetic CIFAR-shaped data, measured side by side in one process (shared machines are noisy:
compare the ratios, not the absolute figures):

  reference   torchvision-style Dataset of PIL images + DataLoader + RandomCrop/Flip/ToTensor/Normalize
  cnnbench    cnnbench.train.train_one_epoch: uint8 data on the device, batched augmentation there
  resident    the same loop with no augmentation (the ceiling: is the loop input-bound?)

    python bench/throughput.py --model resnet18 --image-size 32 --images 8192 --batch-size 512
"""

from __future__ import annotations

import argparse
import dataclasses
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

from cnnbench.config import AugmentConfig, TrainConfig, load_params
from cnnbench.data.datasets import DeviceSplit, Normalize
from cnnbench.models import build_model
from cnnbench.device import device_name, resolve_device
from cnnbench.train import Dist, configure_torch, make_optimizer, make_schedule, train_one_epoch

MEAN, STD = [0.49, 0.48, 0.45], [0.25, 0.24, 0.26]


class PILDataset(torch.utils.data.Dataset):
    """What torchvision.datasets.CIFAR10 does: one PIL image per item, transformed on the CPU."""

    def __init__(self, x: np.ndarray, y: np.ndarray, transform):
        self.x, self.y, self.transform = x, y, transform

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.transform(Image.fromarray(self.x[i])), int(self.y[i])


def reference_epoch(model, optimizer, loader, device, amp: bool, channels_last: bool) -> int:
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
        seen += len(y)
    return seen


def timed(fn) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--images", type=int, default=8192)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per loop, after one warm-up epoch")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="DataLoader workers")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()

    from torchvision import transforms

    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    cfg = TrainConfig(batch_size=args.batch_size, epochs=args.epochs + 1, lr=0.1, deterministic=False,
                      augment=AugmentConfig(crop="pad", pad=4, flip=True))
    configure_torch(cfg, device)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (args.images, args.image_size, args.image_size, 3), dtype=np.uint8)
    y = rng.integers(0, 10, args.images).astype(np.int64)
    spec = load_params(args.params).model(args.model)
    env = Dist(0, 1, device)

    def fresh_model():
        torch.manual_seed(0)
        model = build_model(spec, num_classes=10, image_size=args.image_size).to(device)
        if cuda:
            model = model.to(memory_format=torch.channels_last)
        optimizer = make_optimizer(model, cfg)
        schedule = make_schedule(optimizer, cfg, (args.epochs + 1) * (args.images // args.batch_size))
        return model, optimizer, schedule

    results = {}
    transform = transforms.Compose([
        transforms.RandomCrop(args.image_size, padding=4, padding_mode="reflect"),
        transforms.RandomHorizontalFlip(), transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
    loader = torch.utils.data.DataLoader(
        PILDataset(x, y, transform), batch_size=args.batch_size, shuffle=True, drop_last=True,
        num_workers=args.workers, pin_memory=cuda, persistent_workers=args.workers > 0)
    model, optimizer, _ = fresh_model()
    reference_epoch(model, optimizer, loader, device, cuda, cuda)  # warm-up
    seconds = sum(timed(lambda: reference_epoch(model, optimizer, loader, device, cuda, cuda))
                  for _ in range(args.epochs))
    results["reference"] = args.epochs * (args.images // args.batch_size * args.batch_size) / seconds

    data = DeviceSplit.from_numpy(x, y, device)
    norm = Normalize(MEAN, STD, device)
    for name, augment in (("cnnbench", cfg.augment), ("resident", AugmentConfig(crop="none", flip=False))):
        run_cfg = dataclasses.replace(cfg, augment=augment)
        model, optimizer, schedule = fresh_model()
        train_one_epoch(model, optimizer, schedule, data, norm, run_cfg, 0, env, cuda, progress=False)
        seconds = sum(timed(lambda e=e: train_one_epoch(model, optimizer, schedule, data, norm, run_cfg, e, env,
                                                         cuda, progress=False)) for e in range(1, args.epochs + 1))
        results[name] = args.epochs * (args.images // args.batch_size * args.batch_size) / seconds

    report = {
        "device": device_name(device), "torch": torch.__version__, "python": platform.python_version(),
        "cpu_count": os.cpu_count(), "model": args.model, "image_size": args.image_size,
        "images": args.images, "batch_size": args.batch_size, "epochs_timed": args.epochs,
        "dataloader_workers": args.workers, "amp_bf16": cuda,
        "images_per_sec": {k: round(v, 1) for k, v in results.items()},
        "ratio_cnnbench_vs_reference": round(results["cnnbench"] / results["reference"], 3),
        "ratio_cnnbench_vs_resident": round(results["cnnbench"] / results["resident"], 3),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    print(json.dumps(report, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
