"""Inference cost of a model: batch-1 CPU latency (1 thread, all threads), batch throughput on the CPU
and the GPU, and the size of its weights on disk.

These are wall-clock facts of the machine that measures them, and that machine may be busy. So the
settings compared (thread counts, models) take turns call by call in a shuffled order (a burst of
load hits all alike), after untimed warm-up calls (allocator, oneDNN primitives, cuDNN heuristics,
the thread pool), and the result is the median with the 95th percentile beside it, not the mean
that one stall would drag. Ratios measured side by side hold on a busy machine; figures measured
at different times (one run's evaluate against another's) carry the load of their moment.
The CPU runs fp32; the GPU runs the precision the run trains with (bf16 autocast, channels_last).
"""

from __future__ import annotations

import copy
import dataclasses
import io
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from cnnbench.core.device import autocast_bf16, available_cpus, load_average


@dataclass(frozen=True)
class Repeats:
    """How many calls to time: enough for a stable median, bounded in seconds so `evaluate` stays quick."""

    warmup: int          # untimed calls per setting before any timing, at most ...
    warmup_seconds: float  # ... stopping early (after one) once a setting's warm-up took this long
    calls: int           # timed calls per setting, at most ...
    min_calls: int       # ... and at least, whatever the time budget
    seconds: float       # stop once this much time went into timed calls and min_calls are in


# Batch 1: a few ms per call at 16-32 px, so 60 calls per thread count take about a second on an
# idle CPU. The time bounds bite when the machine is busy: with other jobs on both cores of a
# 2-core machine a 2-thread call took 0.5-2.5 s (each layer's barrier waits for a descheduled
# thread), and 3 such calls are what evaluate can afford (its p95 is then their maximum).
LATENCY = Repeats(warmup=3, warmup_seconds=0.2, calls=60, min_calls=3, seconds=1.5)
# Batches: each call already averages over its images, so a few are enough for a median.
THROUGHPUT = Repeats(warmup=1, warmup_seconds=0.0, calls=5, min_calls=2, seconds=1.0)
GPU_THROUGHPUT = Repeats(warmup=3, warmup_seconds=1.0, calls=20, min_calls=3, seconds=1.0)


@dataclass(frozen=True)
class Precision:
    """How the GPU runs the model: as the run trains (train.amp, train.channels_last); ignored on the CPU."""

    amp: bool = False            # bf16 autocast
    channels_last: bool = False

    def describe(self) -> str:
        return ", ".join(["bf16 autocast" if self.amp else "fp32"] + (["channels_last"] if self.channels_last else []))


@dataclass(frozen=True)
class InferenceCost:
    """One model's inference cost; field names are the stable keys of eval/inference.json and the report."""

    image_size: int
    params: int
    weights_bytes: int                 # torch.save of the state dict
    cpu: str                           # the processor that ran the CPU figures
    threads_all: int                   # the "all threads" count: CPUs available to the process
    load_average: float | None         # the machine's 1-minute load when measuring: above threads_all, it was busy
    latency_calls: int                 # timed batch-1 calls per thread count
    latency_cpu_b1_1t_ms: float        # median
    latency_cpu_b1_1t_p95_ms: float
    latency_cpu_b1_all_ms: float
    latency_cpu_b1_all_p95_ms: float
    throughput_cpu_batch: int
    throughput_cpu_ips: float          # images/s with all threads, median over batches
    torch: str
    gpu: str | None = None             # None when no GPU was measured
    gpu_precision: str | None = None
    throughput_gpu_batch: int | None = None
    throughput_gpu_ips: float | None = None
    # every timed call behind the medians, in ms: a latency comparison's interval comes from these repeats
    latency_cpu_b1_1t_samples_ms: tuple[float, ...] = ()
    latency_cpu_b1_all_samples_ms: tuple[float, ...] = ()

    def to_dict(self) -> dict:
        """The fields as JSON holds them (the timed calls as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


@dataclass(frozen=True)
class Timed:
    """One setting to time: `prepare` runs untimed whenever the setting takes its turn, `call` is timed."""

    call: Callable[[], object]
    prepare: Callable[[], object] = lambda: None


# ------------------------------------------------------------------ timing


def interleaved_times(settings: Sequence[Timed], repeats: Repeats) -> list[np.ndarray]:
    """Seconds of each timed call, per setting; each round times every setting once, in a shuffled order."""
    for setting in settings:
        setting.prepare()
        start = time.perf_counter()
        for _ in range(repeats.warmup):
            setting.call()
            if time.perf_counter() - start >= repeats.warmup_seconds:
                break
    times: list[list[float]] = [[] for _ in settings]
    order = np.random.default_rng(0)  # shuffled, so no setting keeps in step with a periodic load
    spent = 0.0
    while True:
        for i in order.permutation(len(settings)):
            settings[i].prepare()
            start = time.perf_counter()
            settings[i].call()
            times[i].append(time.perf_counter() - start)
            spent += times[i][-1]
        done = len(times[0])
        if done >= repeats.calls or (done >= repeats.min_calls and spent >= repeats.seconds):
            return [np.array(t) for t in times]


class KeptThreads:
    """Restores torch's intra-op thread count on exit, whatever the measurement set it to."""

    def __enter__(self):
        self.saved = torch.get_num_threads()
        return self

    def __exit__(self, *exc) -> None:
        torch.set_num_threads(self.saved)


def cpu_latency(models: Sequence[nn.Module], image_size: int, threads: Sequence[int],
                repeats: Repeats = LATENCY) -> list[dict[int, np.ndarray]]:
    """Seconds per batch-1 forward on the CPU, per model and thread count; every pair takes turns."""
    x = torch.randn(1, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    counts = sorted(set(threads))
    with KeptThreads(), torch.inference_mode():
        settings = [Timed(lambda m=m: m(x), lambda n=n: torch.set_num_threads(n)) for m in models for n in counts]
        times = iter(interleaved_times(settings, repeats))
        return [{n: next(times) for n in counts} for _ in models]


def throughput(model: nn.Module, image_size: int, batch_size: int, device: torch.device,
               precision: Precision = Precision(), threads: int | None = None,
               repeats: Repeats = THROUGHPUT) -> float:
    """Images per second at `batch_size` on `device` (median over batches); a GPU is synchronised per batch."""
    cuda = device.type == "cuda"
    x = torch.randn(batch_size, 3, image_size, image_size, generator=torch.Generator().manual_seed(0)).to(device)
    if cuda and precision.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    autocast = autocast_bf16(device, cuda and precision.amp)

    def call() -> None:
        model(x)
        if cuda:  # kernels run asynchronously: without this the clock stops at the launch
            torch.cuda.synchronize(device)

    with KeptThreads(), torch.inference_mode(), autocast:
        if threads is not None:
            torch.set_num_threads(threads)
        (seconds,) = interleaved_times([Timed(call)], repeats)
    return batch_size / float(np.median(seconds))


def weights_bytes(model: nn.Module) -> int:
    """Size of the model's state dict as torch.save writes it: its weights' size on disk."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


# ------------------------------------------------------------------ the measurement


def measure_inference(models: Sequence[nn.Module], image_size: int, cpu_batch: int = 32,
                      gpu: torch.device | None = None, gpu_batch: int = 1024, precision: Precision = Precision(),
                      threads: int | None = None, latency: Repeats = LATENCY) -> list[InferenceCost]:
    """Measure each model (left untouched: copies are measured) on random images of `image_size` pixels.

    CPU: batch-1 latency with 1 thread and with `threads` (default: every available CPU), the
    models' calls interleaved so that their ratios hold on a busy machine; throughput at
    `cpu_batch` with `threads`. GPU, when `gpu` is given: throughput at `gpu_batch` in `precision`.
    torch's thread count is restored afterwards.
    """
    threads = threads or available_cpus()
    load = load_average()
    cpu_models = [copy.deepcopy(m).to("cpu").eval() for m in models]
    latencies = cpu_latency(cpu_models, image_size, (1, threads), latency)
    return [_cost(model, cpu_model, lat[1], lat[threads], image_size, cpu_batch, gpu, gpu_batch, precision, threads,
                  load) for model, cpu_model, lat in zip(models, cpu_models, latencies)]


def _cost(model: nn.Module, cpu_model: nn.Module, one: np.ndarray, every: np.ndarray, image_size: int,
          cpu_batch: int, gpu: torch.device | None, gpu_batch: int, precision: Precision,
          threads: int, load: float | None) -> InferenceCost:
    """One model's InferenceCost from its batch-1 times; measures its size and throughputs."""
    cost = dict(
        image_size=image_size, params=sum(p.numel() for p in cpu_model.parameters()),
        weights_bytes=weights_bytes(cpu_model), cpu=cpu_name(), threads_all=threads, load_average=load,
        latency_calls=len(one),
        **latency_fields("latency_cpu_b1_1t", one), **latency_fields("latency_cpu_b1_all", every),
        throughput_cpu_batch=cpu_batch,
        throughput_cpu_ips=round(throughput(cpu_model, image_size, cpu_batch, torch.device("cpu"), threads=threads), 1),
        torch=torch.__version__)
    if gpu is not None:
        gpu_model = copy.deepcopy(model).to(gpu).eval()
        if precision.channels_last:
            gpu_model = gpu_model.to(memory_format=torch.channels_last)
        ips = throughput(gpu_model, image_size, gpu_batch, gpu, precision, repeats=GPU_THROUGHPUT)
        cost.update(gpu=torch.cuda.get_device_name(gpu), gpu_precision=precision.describe(),
                    throughput_gpu_batch=gpu_batch, throughput_gpu_ips=round(ips, 1))
        del gpu_model
        torch.cuda.empty_cache()
    return InferenceCost(**cost)


def latency_fields(key: str, seconds: np.ndarray) -> dict:
    """`KEY_ms` (median), `KEY_p95_ms` and `KEY_samples_ms` (every timed call), in ms, from seconds per call."""
    return {f"{key}_ms": _ms(np.median(seconds)), f"{key}_p95_ms": _ms(np.percentile(seconds, 95)),
            f"{key}_samples_ms": tuple(_ms(t) for t in seconds)}


def _ms(seconds: float) -> float:
    return round(1000 * float(seconds), 4)


def cpu_name() -> str:
    """The processor's model name (Linux /proc/cpuinfo), else what the platform module knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def format_ratios(costs: dict[str, InferenceCost]) -> str:
    """Each model's batch-1 latencies relative to the first's: the comparison interleaving makes robust."""
    (first, base), *others = costs.items()
    lines = [f"batch-1 latency relative to {first} (medians of interleaved calls):"]
    for name, cost in others:
        lines.append(f"  {name}: {cost.latency_cpu_b1_1t_ms / base.latency_cpu_b1_1t_ms:.2f}x with 1 thread, "
                     f"{cost.latency_cpu_b1_all_ms / base.latency_cpu_b1_all_ms:.2f}x with {_threads(cost)}")
    return "\n".join(lines)


def _threads(cost: InferenceCost) -> str:
    return f"{cost.threads_all} thread{'s' if cost.threads_all > 1 else ''}"


def format_cost(cost: InferenceCost, title: str) -> str:
    """The measurement as a few lines of text, for `cnnbench cost`."""
    def latency(threads: str, median: float, p95: float) -> str:
        return f"  batch-1 latency, {threads + ':':<12}{median:8.2f} ms median, {p95:8.2f} ms p95"

    every = _threads(cost)
    lines = [
        f"{title}  (random weights, input 3x{cost.image_size}x{cost.image_size})",
        f"params: {cost.params:,}; weights on disk: {cost.weights_bytes / 1e6:.1f} MB",
        f"CPU: {cost.cpu}, torch {cost.torch}, load average {cost.load_average}; "
        f"{cost.latency_calls} timed calls per thread count",
        latency("1 thread", cost.latency_cpu_b1_1t_ms, cost.latency_cpu_b1_1t_p95_ms),
        latency(every, cost.latency_cpu_b1_all_ms, cost.latency_cpu_b1_all_p95_ms),
        f"  throughput, batch {cost.throughput_cpu_batch}, {every}: {cost.throughput_cpu_ips:,.0f} images/s",
    ]
    if cost.gpu is not None:
        lines += [f"GPU: {cost.gpu}, {cost.gpu_precision}",
                  f"  throughput, batch {cost.throughput_gpu_batch}: {cost.throughput_gpu_ips:,.0f} images/s"]
    return "\n".join(lines)
