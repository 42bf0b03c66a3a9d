"""The machine a process runs on: `--device` as a torch.device (the one place that turns it into one, for
training, evaluation and benchmarks), the CPUs it may use, and how busy the machine is."""

from __future__ import annotations

import os
import re
from contextlib import nullcontext

import torch

from cnnbench.core.errors import ConfigError

_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def resolve_device(requested: str = "auto", local_rank: int | None = None) -> torch.device:
    """`auto`, `cpu`, `cuda` or `cuda:N` as a device; a clear error when the machine lacks it.

    Under torchrun (LOCAL_RANK set) `auto` and `cuda` mean this process's own GPU, and an explicit
    `cuda:N` is refused (each rank must take its own); outside it `cuda:N` is honoured.
    """
    if not _DEVICE.match(requested):
        raise ConfigError(f"--device {requested}: expected auto, cpu, cuda or cuda:N")
    if local_rank is None and "LOCAL_RANK" in os.environ:
        local_rank = int(os.environ["LOCAL_RANK"])
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(f"--device {requested}: CUDA is not available on this machine; use cpu or auto.")
    count = torch.cuda.device_count()
    if requested.startswith("cuda:"):
        if local_rank is not None:
            raise ConfigError(f"--device {requested}: under torchrun each process uses its LOCAL_RANK's GPU; "
                              "pass cuda or auto (select GPUs with CUDA_VISIBLE_DEVICES).")
        index = int(requested.split(":")[1])
    else:
        index = local_rank or 0
    if index >= count:
        raise ConfigError(f"--device {requested}: this machine has {count} CUDA device(s) (cuda:0..cuda:{count - 1}).")
    return torch.device("cuda", index)


def device_name(device: torch.device) -> str:
    """A human-readable name of the device: the GPU model, or `cpu`."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, which containers and taskset narrow)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def load_average() -> float | None:
    """The machine's 1-minute load average (all its CPUs'), where the OS reports one: timings taken above
    the machine's CPU count are inflated (training records it per epoch, latency per measurement)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def cpu_computes_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AMX tiles, as on Intel Sapphire Rapids and later). Elsewhere
    bf16 is emulated and slower than fp32, so `train.cpu_amp` is ignored there. torch < 2.3 cannot tell: no."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(probe and probe())


def autocast_bf16(device: torch.device, enabled: bool):
    """bf16 autocast on `device` when `enabled`, else nothing."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if enabled else nullcontext()
