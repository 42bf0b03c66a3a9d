"""distributed: where a training process stands under DistributedDataParallel, and the collectives
that keep its ranks agreeing (BatchNorm buffers, SyncBatchNorm, the final weight check).

Nothing here starts processes: torchrun does (see `cnnbench.training.launch`), and `setup_distributed`
joins the group it describes in the environment. With one process every function is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn

from cnnbench.core.device import resolve_device
from cnnbench.core.errors import ConfigError
from cnnbench.params.config import TrainConfig


@dataclass
class Dist:
    """Where this process stands: its rank among `world` processes, and its device."""

    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str = "auto") -> Dist:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); pick the device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = resolve_device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return Dist(dist.get_rank() if world > 1 else 0, world, dev)


def on_rank0(compute, env: Dist):
    """compute() on rank 0 alone, its result sent to every other rank (any picklable value)."""
    found = compute() if env.main else None
    if env.world > 1:
        box = [found]
        dist.broadcast_object_list(box, src=0)
        found = box[0]
    return found


def use_sync_batchnorm(model: nn.Module, cfg: TrainConfig, env: Dist) -> nn.Module:
    """The model with SyncBatchNorm layers when train.sync_batchnorm asks for them under DDP; else unchanged.

    The converted layers keep the same parameters and state-dict keys, so checkpoints load into
    the plain model.
    """
    if not (cfg.sync_batchnorm and env.world > 1):
        return model  # one process: BatchNorm already sees the whole batch
    if env.device.type != "cuda":
        raise ConfigError("params: train.sync_batchnorm: torch's SyncBatchNorm runs on GPUs only; set it to false "
                          "for DDP on the CPU.")
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


def broadcast_buffers(model: nn.Module, env: Dist) -> None:
    """Rank 0's buffers (BatchNorm running statistics) to every rank, as DDP does before a training forward."""
    if env.world > 1:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def ranks_in_sync(model: nn.Module, env: Dist) -> bool:
    """DDP self-check: every rank ends with bitwise-identical weights and buffers."""
    if env.world == 1:
        return True
    tensors = [*model.parameters(), *model.buffers()]
    checksum = torch.stack([t.detach().double().sum() for t in tensors]).to(env.device)
    gathered = [torch.empty_like(checksum) for _ in range(env.world)]
    dist.all_gather(gathered, checksum)
    return all(torch.equal(gathered[0], g) for g in gathered[1:])
