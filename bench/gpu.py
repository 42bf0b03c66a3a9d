"""GPU benchmark: one command that measures what cnnbench claims about its GPU path.

    PYTHONPATH=src python bench/gpu.py --out reports/benchmarks       # make bench-gpu; sized for 8 min of one H100/H200
    PYTHONPATH=src python bench/gpu.py --smoke --out /tmp/bench       # the same code on the CPU at tiny sizes (tested)

It runs offline on the GPU machine's bare image (bench/gpu_image_packages.txt lists its packages; it
imports nothing else: no dvc, dvclive, kaggle, imagehash or cleanlab). Run it from the project root
(it reads the model specs, the study's runs and the digits run from params.yaml). Any setting below
can be changed on the command line (`--small-images 25600`, `--sections precision,ddp`).

Sections, in order of what matters if time runs out. Every row is written to the outputs the moment it
is measured (a run killed half-way keeps every row before it), and an error of any kind in a row or a
section is recorded with its message while the run goes on:
  epochs      seconds per training epoch of the study's runs that params.yaml's report.reference quotes
              one for (the four ResNet18 variants on CIFAR-10: 40 / 186 / 48 / 39 s), with each run's own
              training settings and batch, cnnbench's loop on `epoch_images` synthetic images at the run's
              image size (CIFAR-10's 45,000 training images at 32 px), beside the study's figure as a
              ratio (the study's GPU is unknown).
  throughput  training images/s of three loops on synthetic data, for the study's models at 32 px and
              resnet18 / mobilenet_v2 at 224 px, at the batch sizes of the study's runs (`small_run`: 512,
              `large_run`: 128): the torchvision Dataset + DataLoader recipe (`reference`, warmed up on whole
              epochs), cnnbench's loop (`cnnbench`), and that loop without augmentation, the data already on
              the GPU (`resident`, the ceiling); their ratios; peak memory of the timed epochs less the
              resident dataset, which is reported apart (bench/throughput.py).
  precision   test accuracy of the digits run `digits_run` (a run of params.yaml: its model, data and
              training settings), the mean over `seeds` seeds, in four variants, each kept on its own:
              fp32 (TF32 off), tf32 (fp32 with TF32 matmuls and convolutions), bf16 autocast (with TF32,
              as cnnbench trains) and bf16 compiled; each must agree with its reference (tf32 and bf16
              with fp32, compiled with bf16) within params.yaml's check.tolerance (the drop the CI gate allows).
  compile     torch.compile(dynamic=False) on and off: ms per training step (resident loop, 32 px), compile
              seconds (the extra time of the first compiled steps).
  ddp         images/s of cnnbench's loop under DistributedDataParallel over every visible GPU (NCCL),
              the per-GPU batch that of one GPU, against world x the one-GPU figure; skipped on one GPU.

Output, under --out (two files; <card> is the device's name in lower case, e.g. nvidia-h200, or cpu):
  gpu-<card>.json   {"schema": 2, "complete": true once every section has run (failed or not), "seconds",
                     "environment": {device, card, gpus, torch, torchvision, cuda, cudnn, python, cpus, command,
                                     shm_gb, started},
                     "settings": {every Settings field, sizes and batches as resolved from params.yaml},
                     <section>: {its fields, "rows": [...], and "error" if the section itself failed}}
    epochs      {timed_epochs, warmup_steps, rows: [{run, model, image_size, batch_size, images, steps_per_epoch,
                 seconds_per_epoch, images_per_sec, study_seconds_per_epoch, ratio_vs_study}]}
    throughput  {timed_epochs, warmup_steps, warmup_epochs, workers, rows: [{model, image_size, batch_size,
                 steps_per_epoch, timed_images, resident_data_mb, reference|cnnbench|resident: {images_per_sec,
                 seconds_per_epoch (device loops), peak_mem_mb (null on CPU)}, ratio_cnnbench_vs_reference,
                 ratio_cnnbench_vs_resident}]}
    precision   {run, model, epochs, seeds, tolerance, amp_active, rows: [{variant, test_acc: [per seed], mean}],
                 differences: {"tf32 - fp32", "bf16 - fp32", "bf16_compiled - bf16": null where a side failed},
                 agree (null when nothing could be compared)}
    compile     {model, image_size, batch_size, backend, rows: [{mode: eager|compiled, ms_per_step,
                 first_steps_seconds}], speedup, compile_seconds}
    ddp         {world, backend, model, image_size, batch_per_rank, rows: [{images_per_sec, single_images_per_sec,
                 scaling}]} or {skipped: why, rows: []}
                    A row that failed holds {"error": "Type: first line"} in place of its figures (a loop of a
                    throughput row likewise, its ratios null).
  gpu-<card>.md     the same as tables, for the README (bench/gpu_report.py)
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
import traceback
import typing
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cnnbench.core.device import device_name, resolve_device
from cnnbench.core.errors import CnnbenchError
from cnnbench.core.files import write_json_atomic, write_text_atomic
from cnnbench.data.arrays import channel_stats
from cnnbench.data.datasets import DeviceSplit, Normalize
from cnnbench.data.fetch import fetch_source
from cnnbench.data.prepare import prepare_dataset
from cnnbench.evaluation.scoring import tf32 as tf32_switch
from cnnbench.params.config import AugmentConfig, DatasetConfig, Params, SourceConfig, TrainConfig, load_params
from cnnbench.training.distributed import Dist
from cnnbench.training.loop import (
    build_trainee,
    configure_torch,
    evaluate_split,
    train_one_epoch,
)
from gpu_report import COMPARISONS, LOOPS, VARIANTS, markdown
from throughput import augment_config, describe, device_loop, fresh_model, measure_loops, synthetic_images, timed

SECTIONS = ("epochs", "throughput", "precision", "compile", "ddp")  # in order of what matters if time runs out
SCHEMA = 2

# The precision section's variants: bf16 runs with TF32 on, as cnnbench trains (train.configure_torch).
PRECISION = {"fp32": dict(amp=False, compile=False, tf32=False), "tf32": dict(amp=False, compile=False, tf32=True),
             "bf16": dict(amp=True, compile=False, tf32=True), "bf16_compiled": dict(amp=True, compile=True, tf32=True)}
assert tuple(PRECISION) == VARIANTS


@dataclass(frozen=True)
class Settings:
    """What the benchmark runs; the defaults are sized for 8 minutes of one H100/H200 (not yet timed on one).

    A 0 size or batch means: from params.yaml (the study run it stands for).
    """

    sections: tuple[str, ...] = SECTIONS
    small_run: str = "cifar10-resnet18"   # the study run whose image size and batch the 32 px rows take
    small_models: tuple[str, ...] = ("resnet18", "resnet18_stem3", "resnet18_stem3_l3", "resnet18_stem1_l3",
                                     "mobilenet_v2", "mobilenet_v2_cifar")  # the study's CIFAR-10 models
    small_size: int = 0              # 0: small_run's dataset's image_size (32)
    small_images: int = 50_000       # one CIFAR-10 training epoch: 97 steps, so the loader's refill is its real share
    small_batch: int = 0             # 0: small_run's batch (512)
    large_run: str = "butterflies-resnet18"  # the study run whose image size and batch the 224 px rows take
    large_models: tuple[str, ...] = ("resnet18", "mobilenet_v2")
    large_size: int = 0              # 0: large_run's dataset's image_size (224)
    large_images: int = 12_800       # 100 steps of 128
    large_batch: int = 0             # 0: large_run's batch (128)
    epochs: int = 1                  # timed epochs per loop, after the warm-up
    warmup_steps: int = 10           # untimed steps of the device loops: cudnn autotunes, the allocator grows
    warmup_epochs: int = 1           # untimed whole epochs of the reference DataLoader loop (workers start)
    workers: int = min(16, os.cpu_count() or 1)  # DataLoader workers (torchvision's reference uses 16)
    epoch_runs: tuple[str, ...] = ()  # empty: every run with a sec_per_epoch in params.yaml's report.reference
    epoch_images: int = 45_000       # the study's CIFAR-10 training split: 50,000 less val_fraction 0.1
    epoch_batch: int = 0             # 0: each run's own batch
    compile_model: str = "resnet18"
    compile_backend: str = "inductor"
    digits_run: str = "digits-resnet18"  # a run of params.yaml: its model, dataset and training settings
    digits_epochs: int = 0           # 0: the run's own
    seeds: int = 2                   # per precision variant; each compiled seed recompiles (~20-60 s on a GPU)
    ddp_cpu_procs: int = 0           # >0: the ddp section on the CPU with this many gloo processes (the smoke test)


# The CPU path at tiny sizes: every section runs, in well under a minute, so the code cannot rot.
SMOKE = Settings(small_models=("resnet18_stem1_l3",), small_images=64, small_batch=16, large_models=("resnet18",),
                 large_size=72, large_images=16, large_batch=8, warmup_steps=1, workers=1, epoch_images=32,
                 epoch_batch=16, compile_model="resnet18_stem1_l3", compile_backend="eager",
                 digits_run="digits-resnet18_stem1_l3", digits_epochs=1, seeds=1, ddp_cpu_procs=2)


def resolve(settings: Settings, params: Params) -> Settings:
    """`settings` with its 0 sizes and batches filled from the study runs they stand for."""
    small, large = params.run(settings.small_run), params.run(settings.large_run)
    return dataclasses.replace(
        settings, small_size=settings.small_size or params.dataset(small.dataset).image_size,
        small_batch=settings.small_batch or small.train.batch_size,
        large_size=settings.large_size or params.dataset(large.dataset).image_size,
        large_batch=settings.large_batch or large.train.batch_size)


# ------------------------------------------------------------------ results


class Results:
    """The report under --out, rewritten (atomically, JSON and markdown) after every row measured."""

    def __init__(self, stem: Path, report: dict, start: float):
        self.stem, self.report, self.start = stem, report, start

    def section(self, name: str, **fields) -> None:
        self.report[name] = {**fields, "rows": []}
        self.save()

    def update(self, name: str, **fields) -> None:
        self.report[name].update(fields)
        self.save()

    def row(self, name: str, row: dict) -> None:
        self.report[name]["rows"].append(row)
        self.save()

    def fail(self, name: str, err: BaseException) -> None:
        """The section stopped: its error beside whatever rows it had measured."""
        self.report.setdefault(name, {"rows": []})["error"] = describe(err)
        self.save()

    def save(self) -> None:
        self.report["seconds"] = round(time.perf_counter() - self.start, 1)
        write_json_atomic(self.stem.with_suffix(".json"), self.report)
        write_text_atomic(self.stem.with_suffix(".md"), markdown(self.report))


@dataclass
class Bench:
    """What every section works with."""

    params: Params
    settings: Settings
    device: torch.device
    results: Results
    log: Callable[[str], None]

    def measured(self, what: str, measure: Callable[[], dict]) -> dict:
        """measure()'s figures, or {"error": ...} for an exception of any kind (its traceback goes to stderr)."""
        try:
            return measure()
        except Exception as err:  # a GPU session is too short to lose to one row: record it and go on
            traceback.print_exc()
            self.log(f"{what} failed: {describe(err)}")
            return {"error": describe(err)}
        finally:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


# ------------------------------------------------------------------ sections


def epochs_section(b: Bench) -> None:
    """Seconds per epoch of the study's runs that report.reference quotes, beside the study's figures."""
    quoted = {run: ref["sec_per_epoch"] for run, ref in b.params.report.reference.items() if "sec_per_epoch" in ref}
    s, data = b.settings, {}
    b.results.section("epochs", timed_epochs=s.epochs, warmup_steps=s.warmup_steps)
    for name in s.epoch_runs or tuple(quoted):
        row = {"run": name, **b.measured(f"epochs {name}", partial(epoch_row, b, name, quoted.get(name), data))}
        b.results.row("epochs", row)
        b.log(f"epochs {name}: {row.get('seconds_per_epoch', row.get('error'))} s/epoch (study: {quoted.get(name)} s)")


def epoch_row(b: Bench, name: str, study_seconds: float | None, data: dict[int, DeviceSplit]) -> dict:
    """One run's seconds per epoch: its own training settings on `epoch_images` synthetic images of its size."""
    s, run = b.settings, b.params.run(name)
    size = b.params.dataset(run.dataset).image_size
    if size not in data:  # made once per size, kept for the next run
        data[size] = DeviceSplit.from_numpy(*synthetic_images(s.epoch_images, size), b.device)
    cfg = dataclasses.replace(run.train, epochs=s.epochs, deterministic=False,
                              batch_size=s.epoch_batch or run.train.batch_size)
    timing = device_loop(b.params.model(run.model), cfg, data[size], b.device, s.warmup_steps)
    ratio = round(timing["seconds_per_epoch"] / study_seconds, 4) if study_seconds else None
    return {"model": run.model, "image_size": size, "batch_size": cfg.batch_size, "images": s.epoch_images,
            "steps_per_epoch": s.epoch_images // cfg.batch_size, "seconds_per_epoch": timing["seconds_per_epoch"],
            "images_per_sec": timing["images_per_sec"], "study_seconds_per_epoch": study_seconds,
            "ratio_vs_study": ratio}


def throughput_section(b: Bench) -> None:
    """The three loops for every model at both sizes."""
    s = b.settings
    b.results.section("throughput", timed_epochs=s.epochs, warmup_steps=s.warmup_steps,
                      warmup_epochs=s.warmup_epochs, workers=s.workers)
    for models, size, images, batch in ((s.small_models, s.small_size, s.small_images, s.small_batch),
                                        (s.large_models, s.large_size, s.large_images, s.large_batch)):
        x, y = synthetic_images(images, size)
        for name in models:
            measure = partial(throughput_row, b, name, x, y, batch)
            row = {"model": name, "image_size": size, "batch_size": batch,
                   **b.measured(f"throughput {name} {size}px", measure)}
            b.results.row("throughput", row)
            b.log(f"throughput {name} {size}px: " + (row["error"] if "error" in row else ", ".join(
                f"{loop} {row[loop].get('images_per_sec') or row[loop].get('error')}" for loop in LOOPS) + " img/s"))


def throughput_row(b: Bench, name: str, x, y, batch: int) -> dict:
    s = b.settings
    return measure_loops(b.params.model(name), x, y, b.device, batch, s.epochs, s.workers, s.warmup_steps,
                         s.warmup_epochs)


def precision_section(b: Bench) -> None:
    """The digits run in each precision variant over `seeds` seeds, each variant kept on its own: do they agree?"""
    s, cuda = b.settings, b.device.type == "cuda"
    run = b.params.run(s.digits_run)
    cfg = run.train if not s.digits_epochs else dataclasses.replace(run.train, epochs=s.digits_epochs)
    tolerance = b.params.check.tolerance
    b.results.section("precision", run=run.name, model=run.model, epochs=cfg.epochs, seeds=s.seeds,
                      tolerance=tolerance, amp_active=cuda)  # cnnbench ignores amp on the CPU: all are fp32 there
    digits = load_digits(b.params.source(b.params.dataset(run.dataset).source), b.params.dataset(run.dataset))
    spec = b.params.model(run.model)
    for name, flags in PRECISION.items():
        row = {"variant": name, **b.measured(f"precision {name}", partial(variant_row, b, spec, cfg, digits, **flags))}
        b.results.row("precision", row)
        b.log(f"precision {name}: {row.get('mean', row.get('error'))}")
    b.results.update("precision", **agreement(b.results.report["precision"]["rows"], tolerance))
    b.log(f"precision {run.name}: agree within {tolerance}: {b.results.report['precision']['agree']}")


def variant_row(b: Bench, spec, cfg: TrainConfig, digits: Digits, amp: bool, compile: bool, tf32: bool) -> dict:
    """One precision variant's test accuracy per seed and their mean."""
    acc = [digits_accuracy(spec, dataclasses.replace(cfg, seed=seed, amp=amp, compile=compile), digits, b.device,
                           b.settings.compile_backend, tf32) for seed in range(b.settings.seeds)]
    return {"test_acc": acc, "mean": round(sum(acc) / len(acc), 4)}


def agreement(rows: list[dict], tolerance: float) -> dict:
    """Each comparison's difference of means (None where a side failed), and whether all measured agree."""
    mean = {r["variant"]: r["mean"] for r in rows if "mean" in r}
    differences = {f"{a} - {b}": round(mean[a] - mean[b], 4) if a in mean and b in mean else None
                   for a, b in COMPARISONS}
    measured = [d for d in differences.values() if d is not None]
    return {"differences": differences, "agree": all(abs(d) <= tolerance for d in measured) if measured else None}


def compile_section(b: Bench) -> None:
    """ms per training step of the resident loop with and without torch.compile, and the compile time."""
    s = b.settings
    b.results.section("compile", model=s.compile_model, image_size=s.small_size, batch_size=s.small_batch,
                      backend=s.compile_backend)
    x, y = synthetic_images(s.small_images, s.small_size)
    data = DeviceSplit.from_numpy(x, y, b.device)
    for mode in ("eager", "compiled"):
        row = {"mode": mode, **b.measured(f"compile {mode}", partial(step_time, b, data, mode == "compiled"))}
        b.results.row("compile", row)
        b.log(f"compile {mode}: {row.get('ms_per_step', row.get('error'))} ms/step")
    eager, compiled = b.results.report["compile"]["rows"]
    if "ms_per_step" in eager and "ms_per_step" in compiled:
        b.results.update("compile", speedup=round(eager["ms_per_step"] / compiled["ms_per_step"], 3),
                         compile_seconds=round(compiled["first_steps_seconds"] - eager["first_steps_seconds"], 2))


def step_time(b: Bench, data: DeviceSplit, compiled: bool) -> dict:
    """The first `warmup_steps` steps' seconds (compilation included), then ms per step over a whole epoch."""
    s, device = b.settings, b.device
    batch, steps = s.small_batch, len(data) // s.small_batch
    warm = DeviceSplit(data.images[:s.warmup_steps * batch], data.labels[:s.warmup_steps * batch])
    cfg = TrainConfig(batch_size=batch, lr=0.1, deterministic=False, augment=AugmentConfig(crop="none", flip=False))
    configure_torch(cfg, device)
    norm, env, cuda = Normalize([0.5] * 3, [0.25] * 3, device), Dist(0, 1, device), device.type == "cuda"
    model, optimizer, schedule = fresh_model(b.params.model(s.compile_model), cfg, s.small_size, device,
                                             s.warmup_steps + steps)
    # dynamic=False: one static shape, compiled once; the last partial batch is dropped (datasets.batches).
    net = torch.compile(model, backend=s.compile_backend, dynamic=False) if compiled else model
    first = timed(lambda: train_one_epoch(net, optimizer, schedule, warm, norm, cfg, 0, env, cuda, False), device)
    steady = timed(lambda: train_one_epoch(net, optimizer, schedule, data, norm, cfg, 1, env, cuda, False), device)
    return {"ms_per_step": round(steady / steps * 1000, 3), "first_steps_seconds": round(first, 2)}


def ddp_section(b: Bench) -> None:
    """cnnbench's loop under DDP over every visible GPU (or gloo CPU processes), against the one-device figure."""
    s, device = b.settings, b.device
    if s.ddp_cpu_procs:
        world, backend = s.ddp_cpu_procs, "gloo"
    elif device.type == "cuda" and torch.cuda.device_count() > 1:
        world, backend = torch.cuda.device_count(), "nccl"
    else:
        gpus = torch.cuda.device_count() if device.type == "cuda" else 0
        b.results.section("ddp", skipped=f"{gpus} visible GPU(s); DDP needs more than one")
        return
    name = s.small_models[0]
    b.results.section("ddp", world=world, backend=backend, model=name, image_size=s.small_size,
                      batch_per_rank=s.small_batch)
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "ddp.json"
        mp.spawn(_ddp_worker, nprocs=world, args=(world, _free_port(), b.params.model(name), s, backend, result))
        images_per_sec = float(result.read_text())
    rows = b.results.report.get("throughput", {}).get("rows", [])
    one = next((r["cnnbench"].get("images_per_sec") for r in rows
                if r["model"] == name and r["image_size"] == s.small_size and "cnnbench" in r), None)
    row = {"images_per_sec": round(images_per_sec, 1), "single_images_per_sec": one,
           "scaling": round(images_per_sec / (world * one), 3) if one else None}
    b.results.row("ddp", row)
    b.log(f"ddp {world} x {backend}: {row['images_per_sec']:,.0f} img/s, scaling {row['scaling']}")


RUNNERS = {"epochs": epochs_section, "throughput": throughput_section, "precision": precision_section,
           "compile": compile_section, "ddp": ddp_section}


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


def digits_accuracy(spec, cfg: TrainConfig, digits: Digits, device: torch.device, backend: str, tf32: bool) -> float:
    """Test accuracy after training `cfg` as train_run does (bf16 when cfg.amp on CUDA, compiled when cfg.compile)."""
    configure_torch(dataclasses.replace(cfg, deterministic=False), device)
    env = Dist(0, 1, device)
    train = DeviceSplit.from_numpy(digits.train_x, digits.train_y, device)
    test = DeviceSplit.from_numpy(digits.test_x, digits.test_y, device)
    norm = Normalize(digits.mean, digits.std, device)
    t = build_trainee(spec, cfg, digits.classes, digits.image_size, env, len(train) // cfg.batch_size, backend)
    with tf32_switch(tf32):
        for epoch in range(cfg.epochs):
            train_one_epoch(t.step_net, t.optimizer, t.schedule, train, norm, cfg, epoch, env, t.amp, progress=False)
        return evaluate_split(t.model, test, norm, env, channels_last=t.channels_last)["acc"]


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
    out_dir = Path(args.out)
    try:
        params = load_params(args.params)
        settings = resolve(settings, params)
        device = resolve_device(args.device or ("cpu" if args.smoke else "auto"))
        out_dir.mkdir(parents=True, exist_ok=True)
    except (CnnbenchError, OSError) as err:  # an unknown run, a bad --device, an --out not writable: one line
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    start = time.perf_counter()
    report = {"schema": SCHEMA, "complete": False, "seconds": 0.0, "environment": environment(device),
              "settings": dataclasses.asdict(settings)}
    stem = out_dir / f"gpu-{report['environment']['card']}"

    def log(line: str) -> None:
        print(f"[{time.perf_counter() - start:6.0f} s] {line}", flush=True)

    bench = Bench(params, settings, device, Results(stem, report, start), log)
    bench.results.save()
    log(f"{report['environment']['device']}: {', '.join(settings.sections)} -> {stem}.json, .md")
    for section in settings.sections:
        try:
            RUNNERS[section](bench)
        except Exception as err:  # out of memory, a compiler missing, a bug...: the other sections still run
            traceback.print_exc()
            bench.results.fail(section, err)
            log(f"{section} failed: {report[section]['error']}")
    report["complete"] = True
    bench.results.save()
    log(f"done: {stem}.json, {stem}.md")


if __name__ == "__main__":
    main()
