"""Training-step time on the CPU in the default (NCHW) and channels_last (NHWC) memory formats, side by side.

    python bench/cpu_memory_format.py [--size 16] [--batch 64] [--rounds 2]

Each registered model takes `--rounds` turns in each format (interleaved, so a machine's drift hits both),
20 timed SGD steps after 5 untimed, deterministic algorithms on as the train stage runs them. The figure
behind `train.channels_last` applying on the CPU too: on a 2-core Xeon at 16 px, batch 64, MobileNetV2's
step took 0.38-0.53x its NCHW time and the ResNet18 variants' 0.94-1.39x, about 1.1x typically (docs/training.md).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cnnbench.models.build import build_model  # noqa: E402
from cnnbench.params.config import load_params  # noqa: E402


def step_seconds(model, x, y, steps: int = 20, warmup: int = 5) -> float:
    """Mean seconds of one SGD training step (forward, backward, update) after `warmup` untimed steps."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for i in range(warmup + steps):
        if i == warmup:
            start = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=16, help="image size (the offline suite's digits: 16)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--models", nargs="*",
                        default=["mobilenet_v2", "resnet18", "resnet18_stem3", "resnet18_stem1_l3"])
    args = parser.parse_args()
    torch.use_deterministic_algorithms(True)
    models = load_params(Path(__file__).resolve().parents[1] / "params.yaml").models
    x, y = torch.randn(args.batch, 3, args.size, args.size), torch.randint(0, 10, (args.batch,))
    print(f"{torch.get_num_threads()} threads, {args.size} px, batch {args.batch}: ms per step, NCHW -> NHWC (ratio)")
    for name in args.models:
        for _ in range(args.rounds):
            times = []
            for channels_last in (False, True):
                torch.manual_seed(0)
                model = build_model(models[name], num_classes=10, image_size=args.size)
                fmt = torch.channels_last if channels_last else torch.contiguous_format
                times.append(step_seconds(model.to(memory_format=fmt), x.contiguous(memory_format=fmt), y))
            print(f"{name:22s} {times[0] * 1e3:7.1f} -> {times[1] * 1e3:7.1f}  ({times[1] / times[0]:.2f}x)")


if __name__ == "__main__":
    main()
