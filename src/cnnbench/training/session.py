"""A train stage's session: what it builds once for all the seeds it trains (training.loop fits each seed in it)."""

from __future__ import annotations

import functools
from pathlib import Path

import torch.distributed as dist

from cnnbench.data.arrays import load_prepared
from cnnbench.data.datasets import DeviceSplit, Normalize
from cnnbench.training.distributed import on_rank0, setup_distributed
from cnnbench.training.fingerprint import data_fingerprint


class TrainingSession:
    """What one train stage builds once for all its seeds: the process group, the prepared arrays (read once),
    their hash (computed on rank 0 alone and sent to the other ranks) and their copies on the device.

    A context manager: leaving it after the last seed ends the process group, once per stage."""

    def __init__(self, data_dir: str | Path, device: str = "auto"):
        self.env = setup_distributed(device)
        self.data_dir = data_dir
        self.data = load_prepared(data_dir, splits=("train", "val"))
        self.norm = Normalize(self.data.mean, self.data.std, self.env.device)
        self._device: dict[tuple, DeviceSplit] = {}

    @functools.cached_property
    def data_hash(self) -> str:
        """The prepared arrays' hash, computed on rank 0 once per stage (every rank asks at the same point: the
        first seed's fingerprint, after its settings were checked)."""
        return on_rank0(lambda: data_fingerprint(self.data_dir), self.env)

    def device_split(self, split: str, x, y, key: tuple = ()) -> DeviceSplit:
        """The split's arrays on the device, copied there once per (split, key)."""
        if (split, *key) not in self._device:
            self._device[(split, *key)] = DeviceSplit.from_numpy(x, y, self.env.device)
        return self._device[(split, *key)]

    def __enter__(self) -> TrainingSession:
        return self

    def __exit__(self, kind, *_) -> None:
        if self.env.world > 1 and kind is None:  # after an error the ranks may stand at different places
            dist.barrier()
            dist.destroy_process_group()
