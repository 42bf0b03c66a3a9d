"""GPU benchmark: one command that measures what cnnbench claims about its GPU path.

    PYTHONPATH=src python bench/gpu.py --out reports/benchmarks       # make bench-gpu; about 5 min on one H100/H200
    PYTHONPATH=src python bench/gpu.py --smoke --out /tmp/bench       # the same code on the CPU at tiny sizes (tested)

It runs offline on a bare machine with torch (2.4 or later), torchvision, numpy, pillow, pyyaml,
scikit-learn (the embedded digits) and tqdm: it never imports dvc, dvclive or kaggle. Run it from
the project root (it reads the model specs and the digits run from params.yaml). Any setting below
can be changed on the command line (`--small-images 25600`, `--sections precision,ddp`).

Sections, written to the outputs as each one ends (a run cut short keeps what it measured):
  throughput  training images/s of three loops on synthetic data, for the study's models at 32 px and
              resnet18 / mobilenet_v2 at 224 px: the torchvision Dataset + DataLoader recipe
              (`reference`), cnnbench's loop (`cnnbench`), and that loop without augmentation, the data
              already on the GPU (`resident`, the ceiling); their ratios; peak memory of the timed
              epochs less the resident dataset, which is reported apart (bench/throughput.py).
  precision   test accuracy of the digits run `digits_run` (a run of params.yaml: its model, data and
              training settings), the mean over `seeds` seeds, in fp32, in bf16 autocast, and in bf16 compiled; bf16 must agree with fp32, and
              compiled with eager, within params.yaml's check.tolerance (the drop the CI gate allows).
  compile     torch.compile on and off: ms per training step (resident loop, 32 px), compile seconds
              (the extra time of the first compiled steps).
  ddp         images/s of cnnbench's loop under DistributedDataParallel over every visible GPU (NCCL),
              the per-GPU batch that of one GPU, against world x the one-GPU figure; skipped on one GPU.

Output, under --out (two files; <card> is the device's name in lower case, e.g. nvidia-h200, or cpu):
  gpu-<card>.json   {"schema": 1, "complete": true once every section has run (failed or not), "seconds",
                     "environment": {device, card, gpus, torch, torchvision, cuda, cudnn, python, cpus, command,
                                     shm_gb, started},
                     "settings": {every Settings field},
                     "throughput": [{model, image_size, batch_size, steps_per_epoch, timed_images, resident_data_mb,
                                     reference|cnnbench|resident: {images_per_sec, peak_mem_mb (null on CPU)},
                                     ratio_cnnbench_vs_reference, ratio_cnnbench_vs_resident}],
                     "compile": {model, image_size, batch_size, backend, eager_ms_per_step, compiled_ms_per_step,
                                 speedup, compile_seconds},
                     "precision": {run, model, epochs, seeds, tolerance, test_acc: {fp32, bf16, bf16_compiled: [per
                                   seed]}, mean: {...}, bf16_vs_fp32, compiled_vs_eager, agree (bool), amp_active},
                     "ddp": {world, backend, batch_per_rank, images_per_sec, single_images_per_sec, scaling}
                            or {skipped: why}}
                    A loop that failed holds {"error": "..."} instead of its figures (its ratios are null), a
                    section that failed is {"error": "..."}: the rest of the run goes on.
  gpu-<card>.md     the same as tables, for the README
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import platform
import re
import shutil
import socket
import sys
import tempfile
import time
import typing
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cnnbench.config import AugmentConfig, DatasetConfig, SourceConfig, TrainConfig, load_params
from cnnbench.data.datasets import DeviceSplit, Normalize
from cnnbench.data.fetch import fetch_source
from cnnbench.data.arrays import channel_stats
from cnnbench.data.prepare import prepare_dataset
from cnnbench.device import device_name, resolve_device
from cnnbench.distributed import Dist
from cnnbench.files import write_json_atomic
from cnnbench.models import build_model
from cnnbench.train import configure_torch, evaluate_split, make_optimizer, make_schedule, train_one_epoch
from gpu_report import LOOPS, VARIANTS, markdown
from throughput import augment_config, fresh_model, measure_loops, synthetic_images, timed

SECTIONS = ("throughput", "precision", "compile", "ddp")  # in order of what matters if time runs out


@dataclass(frozen=True)
class Settings:
    """What the benchmark runs; the defaults fit 8 minutes of one H100/H200."""

    sections: tuple[str, ...] = SECTIONS
    small_models: tuple[str, ...] = ("resnet18", "resnet18_stem3", "resnet18_stem3_l3", "resnet18_stem1_l3",
                                     "mobilenet_v2", "mobilenet_v2_cifar")  # the study's CIFAR-10 models
    small_size: int = 32
    small_images: int = 50_000       # one CIFAR-10 training epoch: 97 steps, so the loader's refill is its real share
    small_batch: int = 512           # the study's batch
    large_models: tuple[str, ...] = ("resnet18", "mobilenet_v2")
    large_size: int = 224
    large_images: int = 12_800       # 50 steps
    large_batch: int = 256
    epochs: int = 1                  # timed epochs per loop, after the warm-up steps
    warmup_steps: int = 10           # untimed: DataLoader workers start, cudnn autotunes, the allocator grows
    workers: int = min(16, os.cpu_count() or 1)  # DataLoader workers (torchvision's reference uses 16)
    compile_model: str = "resnet18"
    compile_backend: str = "inductor"
    digits_run: str = "digits-resnet18"  # a run of params.yaml: its model, dataset and training settings
    digits_epochs: int = 0           # 0: the run's own
    seeds: int = 2                   # per precision variant; each compiled seed recompiles (~20-60 s on a GPU)
    ddp_cpu_procs: int = 0           # >0: the ddp section on the CPU with this many gloo processes (the smoke test)


# The CPU path at tiny sizes: every section runs, in well under a minute, so the code cannot rot.
SMOKE = Settings(small_models=("resnet18_stem1_l3",), small_images=64, small_batch=16, large_models=("resnet18",),
                 large_size=72, large_images=16, large_batch=8, warmup_steps=1, workers=1,
                 compile_model="resnet18_stem1_l3", compile_backend="eager", digits_run="digits-resnet18_stem1_l3",
                 digits_epochs=1, seeds=1, ddp_cpu_procs=2)


# ------------------------------------------------------------------ sections


def throughput_section(params, settings: Settings, device: torch.device, log) -> list[dict]:
    """The three loops for every model at both sizes."""
    rows = []
    for models, size, images, batch in ((settings.small_models, settings.small_size, settings.small_images,
                                         settings.small_batch),
                                        (settings.large_models, settings.large_size, settings.large_images,
                                         settings.large_batch)):
        x, y = synthetic_images(images, size)
        for name in models:
            result = measure_loops(params.model(name), x, y, device, batch, settings.epochs, settings.workers,
                                   settings.warmup_steps)
            rows.append({"model": name, "image_size": size, "batch_size": batch, **result})
            log(f"throughput {name} {size}px: " + ", ".join(
                f"{loop} {result[loop].get('images_per_sec') or result[loop].get('error')}" for loop in LOOPS) + " img/s")
    return rows


def compile_section(params, settings: Settings, device: torch.device, log) -> dict:
    """ms per training step of the resident loop with and without torch.compile, and the compile time."""
    size, batch = settings.small_size, settings.small_batch
    x, y = synthetic_images(settings.small_images, size)
    data = DeviceSplit.from_numpy(x, y, device)
    warm = DeviceSplit(data.images[:settings.warmup_steps * batch], data.labels[:settings.warmup_steps * batch])
    steps = len(data) // batch
    cfg = TrainConfig(batch_size=batch, lr=0.1, deterministic=False, augment=AugmentConfig(crop="none", flip=False))
    configure_torch(cfg, device)
    norm, env, cuda = Normalize([0.5] * 3, [0.25] * 3, device), Dist(0, 1, device), device.type == "cuda"
    measured = {}
    for compiled in (False, True):
        model, optimizer, schedule = fresh_model(params.model(settings.compile_model), cfg, size, device,
                                                 settings.warmup_steps + steps)
        net = torch.compile(model, backend=settings.compile_backend) if compiled else model
        first = timed(lambda: train_one_epoch(net, optimizer, schedule, warm, norm, cfg, 0, env, cuda, False), device)
        steady = timed(lambda: train_one_epoch(net, optimizer, schedule, data, norm, cfg, 1, env, cuda, False), device)
        measured[compiled] = (first, steady / steps * 1000)
    out = {"model": settings.compile_model, "image_size": size, "batch_size": batch,
           "backend": settings.compile_backend, "eager_ms_per_step": round(measured[False][1], 3),
           "compiled_ms_per_step": round(measured[True][1], 3),
           "speedup": round(measured[False][1] / measured[True][1], 3),
           "compile_seconds": round(measured[True][0] - measured[False][0], 2)}
    log(f"compile {out['model']}: eager {out['eager_ms_per_step']} ms/step, compiled {out['compiled_ms_per_step']} "
        f"ms/step, compiling took {out['compile_seconds']} s")
    return out


def precision_section(params, settings: Settings, device: torch.device, log) -> dict:
    """The digits run in fp32, bf16 and bf16 compiled, over `seeds` seeds: do the accuracies agree?"""
    run = params.run(settings.digits_run)
    cfg = run.train if not settings.digits_epochs else dataclasses.replace(run.train, epochs=settings.digits_epochs)
    digits = load_digits(params.source(params.dataset(run.dataset).source), params.dataset(run.dataset))
    spec, tolerance = params.model(run.model), params.check.tolerance
    variants = dict(zip(VARIANTS, (dict(amp=False, compile=False), dict(amp=True, compile=False),
                                   dict(amp=True, compile=True))))
    accuracy = {name: [digits_accuracy(spec, dataclasses.replace(cfg, seed=seed, **flags), digits, device,
                                       settings.compile_backend) for seed in range(settings.seeds)]
                for name, flags in variants.items()}
    mean = {name: round(sum(values) / len(values), 4) for name, values in accuracy.items()}
    bf16_vs_fp32, compiled_vs_eager = round(mean["bf16"] - mean["fp32"], 4), round(mean["bf16_compiled"] - mean["bf16"], 4)
    out = {"run": run.name, "model": run.model, "epochs": cfg.epochs, "seeds": settings.seeds, "tolerance": tolerance,
           "test_acc": accuracy, "mean": mean, "bf16_vs_fp32": bf16_vs_fp32, "compiled_vs_eager": compiled_vs_eager,
           "agree": abs(bf16_vs_fp32) <= tolerance and abs(compiled_vs_eager) <= tolerance,
           "amp_active": device.type == "cuda"}  # cnnbench ignores amp on the CPU: there all three are fp32
    log(f"precision {run.name}: mean test acc {mean}; agree within {tolerance}: {out['agree']}")
    return out


def ddp_section(params, settings: Settings, device: torch.device, single: list[dict], log) -> dict:
    """cnnbench's loop under DDP over every visible GPU (or gloo CPU processes), against the one-device figure."""
    if settings.ddp_cpu_procs:
        world, backend = settings.ddp_cpu_procs, "gloo"
    elif device.type == "cuda" and torch.cuda.device_count() > 1:
        world, backend = torch.cuda.device_count(), "nccl"
    else:
        return {"skipped": f"{torch.cuda.device_count() if device.type == 'cuda' else 0} visible GPU(s); "
                           "DDP needs more than one"}
    name = settings.small_models[0]
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "ddp.json"
        mp.spawn(_ddp_worker, nprocs=world, args=(world, _free_port(), params.model(name), settings, backend, result))
        images_per_sec = float(result.read_text())
    one = next((r["cnnbench"].get("images_per_sec") for r in single
                if r["model"] == name and r["image_size"] == settings.small_size), None)
    out = {"world": world, "backend": backend, "model": name, "image_size": settings.small_size,
           "batch_per_rank": settings.small_batch, "images_per_sec": round(images_per_sec, 1),
           "single_images_per_sec": one, "scaling": round(images_per_sec / (world * one), 3) if one else None}
    log(f"ddp {world} x {backend}: {out['images_per_sec']:,.0f} img/s, scaling {out['scaling']}")
    return out


# ------------------------------------------------------------------ helpers


@dataclass
class Digits:
    """The digits, prepared as the pipeline prepares them, held in memory."""

    train_x: object
    train_y: object
    test_x: object
    test_y: object
    mean: list[float]
    std: list[float]
    classes: int
    image_size: int


def load_digits(source: SourceConfig, dataset: DatasetConfig) -> Digits:
    """Fetch and prepare the embedded digits with the pipeline's own functions (no network)."""
    with tempfile.TemporaryDirectory() as tmp:
        fetch_source(source, Path(tmp) / "raw")
        prepared = prepare_dataset(dataset, Path(tmp) / "raw", workers=1)
    mean, std = channel_stats(prepared.x["train"])
    return Digits(prepared.x["train"], prepared.y["train"], prepared.x["test"], prepared.y["test"], mean, std,
                  len(prepared.classes), dataset.image_size)


def digits_accuracy(spec, cfg: TrainConfig, digits: Digits, device: torch.device, backend: str) -> float:
    """Test accuracy after training `cfg` (bf16 when cfg.amp on CUDA, compiled when cfg.compile), as train_run does."""
    configure_torch(dataclasses.replace(cfg, deterministic=False), device)
    env, cuda = Dist(0, 1, device), device.type == "cuda"
    train = DeviceSplit.from_numpy(digits.train_x, digits.train_y, device)
    test = DeviceSplit.from_numpy(digits.test_x, digits.test_y, device)
    norm = Normalize(digits.mean, digits.std, device)
    torch.manual_seed(cfg.seed)
    model = build_model(spec, num_classes=digits.classes, image_size=digits.image_size).to(device)
    channels_last = cuda and cfg.channels_last
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    net = torch.compile(model, backend=backend) if cfg.compile else model
    optimizer = make_optimizer(model, cfg)
    schedule = make_schedule(optimizer, cfg, cfg.epochs * (len(train) // cfg.batch_size) + 1)
    for epoch in range(cfg.epochs):
        train_one_epoch(net, optimizer, schedule, train, norm, cfg, epoch, env, cuda and cfg.amp, progress=False)
    return evaluate_split(model, test, norm, env, channels_last=channels_last)["acc"]


def _ddp_worker(rank: int, world: int, port: int, spec, settings: Settings, backend: str, result: Path) -> None:
    """One rank of the ddp section: the per-rank batch of one GPU, every rank holding world x the images."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    device = torch.device("cuda", rank) if backend == "nccl" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, rank=rank, world_size=world)
    size, batch = settings.small_size, settings.small_batch * world
    x, y = synthetic_images(settings.small_images * world, size)
    cfg = TrainConfig(batch_size=batch, lr=0.1, deterministic=False, augment=augment_config(size))
    configure_torch(cfg, device)
    env, cuda = Dist(rank, world, device), device.type == "cuda"
    data, norm = DeviceSplit.from_numpy(x, y, device), Normalize([0.5] * 3, [0.25] * 3, device)
    warm = DeviceSplit(data.images[:settings.warmup_steps * batch], data.labels[:settings.warmup_steps * batch])
    steps = len(data) // batch
    model, optimizer, schedule = fresh_model(spec, cfg, size, device, settings.warmup_steps + settings.epochs * steps)
    net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[rank] if cuda else None)
    train_one_epoch(net, optimizer, schedule, warm, norm, cfg, 0, env, cuda, progress=False)
    dist.barrier()
    seconds = timed(lambda: [train_one_epoch(net, optimizer, schedule, data, norm, cfg, e, env, cuda, progress=False)
                             for e in range(1, settings.epochs + 1)], device)
    slowest = torch.tensor([seconds], device=device)
    dist.all_reduce(slowest, op=dist.ReduceOp.MAX)  # the step waits for the slowest rank: that is the run's time
    if rank == 0:
        result.write_text(str(settings.epochs * steps * batch / slowest.item()))
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def card_name(device: torch.device) -> str:
    """`NVIDIA H200` -> `nvidia-h200`: the file-name form of the device."""
    return re.sub(r"[^a-z0-9]+", "-", device_name(device).lower()).strip("-")


def environment(device: torch.device) -> dict:
    import torchvision

    cuda = device.type == "cuda"
    return {"device": device_name(device), "card": card_name(device), "gpus": torch.cuda.device_count() if cuda else 0,
            "torch": torch.__version__, "torchvision": torchvision.__version__,
            "cuda": torch.version.cuda if cuda else None,
            "cudnn": torch.backends.cudnn.version() if cuda else None, "python": platform.python_version(),
            "cpus": os.cpu_count(), "command": " ".join(["python", *sys.argv]),
            # DataLoader workers hand batches over through /dev/shm: a container's small one fails the reference loop.
            "shm_gb": round(shutil.disk_usage("/dev/shm").total / 2**30, 1) if os.path.isdir("/dev/shm") else None,
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


# ------------------------------------------------------------------ command line


def parse_settings(argv=None) -> tuple[Settings, argparse.Namespace]:
    """--smoke picks the tiny settings; every Settings field is also a flag (`--small-images 25600`)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="the folder for gpu-<card>.json and gpu-<card>.md")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU: the tested path")
    parser.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default: auto; cpu with --smoke)")
    parser.add_argument("--params", default="params.yaml")
    hints = typing.get_type_hints(Settings)
    for f in dataclasses.fields(Settings):
        kind = hints[f.name]
        parse = (lambda text: tuple(t for t in text.split(",") if t)) if typing.get_origin(kind) is tuple else kind
        parser.add_argument("--" + f.name.replace("_", "-"), type=parse, default=None, dest=f.name)
    args = parser.parse_args(argv)
    chosen = {f.name: getattr(args, f.name) for f in dataclasses.fields(Settings) if getattr(args, f.name) is not None}
    settings = dataclasses.replace(SMOKE if args.smoke else Settings(), **chosen)
    unknown = set(settings.sections) - set(SECTIONS)
    if unknown:
        parser.error(f"--sections: unknown {', '.join(sorted(unknown))}; known: {', '.join(SECTIONS)}")
    return settings, args


def main(argv=None) -> None:
    settings, args = parse_settings(argv)
    device = resolve_device(args.device or ("cpu" if args.smoke else "auto"))
    params = load_params(args.params)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    report = {"schema": 1, "complete": False, "seconds": 0.0, "environment": environment(device),
              "settings": dataclasses.asdict(settings)}
    stem = out_dir / f"gpu-{report['environment']['card']}"

    def log(line: str) -> None:
        print(f"[{time.perf_counter() - start:6.0f} s] {line}", flush=True)

    def save() -> None:
        report["seconds"] = round(time.perf_counter() - start, 1)
        write_json_atomic(stem.with_suffix(".json"), report)
        stem.with_suffix(".md").write_text(markdown(report))

    log(f"{report['environment']['device']}: {', '.join(settings.sections)} -> {stem}.json, .md")
    runners = {"throughput": lambda: throughput_section(params, settings, device, log),
               "compile": lambda: compile_section(params, settings, device, log),
               "precision": lambda: precision_section(params, settings, device, log),
               "ddp": lambda: ddp_section(params, settings, device, report.get("throughput", []), log)}
    for section in settings.sections:
        try:
            report[section] = runners[section]()
        except (RuntimeError, OSError) as err:  # out of memory, a compiler missing...: the other sections still run
            report[section] = {"error": f"{type(err).__name__}: {next(iter(str(err).splitlines()), '')[:300]}"}
            log(f"{section} failed: {report[section]['error']}")
        save()
    report["complete"] = True
    save()
    log(f"done: {stem}.json, {stem}.md")


if __name__ == "__main__":
    main()
