"""Training-step time on the CPU per memory format (NCHW, channels_last) and precision (fp32, bf16 autocast).

    python bench/cpu_training_step.py [--size 16] [--batch 64] [--rounds 3] [--models ...]

Each registered model takes `--rounds` turns of the four settings (interleaved, so a machine's drift hits all
four), 10 timed SGD steps after 3 untimed, deterministic algorithms on as the train stage runs them; the median
turn is printed, as a ratio to NCHW fp32. bf16 is measured only where the CPU computes it natively (AMX): it
is what `train.cpu_amp` turns on. The figures behind the offline runs' `channels_last` and `cpu_amp`
(docs/training.md): on a 2-core Xeon with AMX at 16 px, batch 64, MobileNetV2's NHWC step took 0.38-0.53x its
NCHW time; bf16 took 0.64-0.72x of fp32 for resnet18_stem1_l3, 0.80-0.88x for resnet18_stem3, and 1.2-2.4x for
resnet18 and MobileNetV2.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cnnbench.core.device import autocast_bf16, cpu_computes_bf16  # noqa: E402
from cnnbench.models.build import build_model  # noqa: E402
from cnnbench.params.config import load_params  # noqa: E402

CPU = torch.device("cpu")


def step_seconds(model, x, y, bf16: bool, steps: int = 10, warmup: int = 3) -> float:
    """Mean seconds of one SGD training step (forward, backward, update) after `warmup` untimed steps."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for i in range(warmup + steps):
        if i == warmup:
            start = time.perf_counter()
        with autocast_bf16(CPU, bf16):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=16, help="image size (the offline suite's digits: 16)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", nargs="*",
                        default=["mobilenet_v2", "resnet18", "resnet18_stem3", "resnet18_stem1_l3"])
    args = parser.parse_args()
    torch.use_deterministic_algorithms(True)
    models = load_params(Path(__file__).resolve().parents[1] / "params.yaml").models
    x, y = torch.randn(args.batch, 3, args.size, args.size), torch.randint(0, 10, (args.batch,))
    precisions = (False, True) if cpu_computes_bf16() else (False,)
    settings = [(layout, bf16) for layout in ("NCHW", "NHWC") for bf16 in precisions]
    print(f"{torch.get_num_threads()} threads, {args.size} px, batch {args.batch}, native bf16: {cpu_computes_bf16()}; "
          f"median ms per step over {args.rounds} rounds (ratio to NCHW fp32)")
    for name in args.models:
        times: dict = {s: [] for s in settings}
        for _ in range(args.rounds):
            for layout, bf16 in settings:
                torch.manual_seed(0)
                model = build_model(models[name], num_classes=10, image_size=args.size)
                fmt = torch.channels_last if layout == "NHWC" else torch.contiguous_format
                times[layout, bf16].append(step_seconds(model.to(memory_format=fmt), x.contiguous(memory_format=fmt),
                                                        y, bf16))
        base = statistics.median(times["NCHW", False])
        cells = [f"{layout} {'bf16' if bf16 else 'fp32'} {statistics.median(t) * 1e3:6.1f} "
                 f"({statistics.median(t) / base:.2f}x)" for (layout, bf16), t in times.items()]
        print(f"{name:22s} " + "  ".join(cells), flush=True)


if __name__ == "__main__":
    main()
