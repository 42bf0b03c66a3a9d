"""device: `--device` honoured as given outside torchrun, each rank's own GPU inside it.

No GPU here: torch.cuda's availability and device count are faked; resolve_device only asks them.
"""

from __future__ import annotations

import pytest
import torch

from cnnbench.core.device import resolve_device
from cnnbench.core.errors import ConfigError


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("LOCAL_RANK", raising=False)


@pytest.mark.parametrize("requested, expected", [("cuda:1", "cuda:1"), ("cuda:0", "cuda:0"), ("cuda", "cuda:0"),
                                                 ("auto", "cuda:0"), ("cpu", "cpu")])
def test_outside_torchrun_the_requested_device_is_used(two_gpus, requested, expected):
    assert resolve_device(requested) == torch.device(expected)


def test_under_torchrun_each_rank_takes_its_local_rank_gpu(two_gpus, monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve_device("auto") == resolve_device("cuda") == torch.device("cuda:1")
    with pytest.raises(ConfigError, match=r"--device cuda:0: under torchrun each process uses its LOCAL_RANK's GPU"):
        resolve_device("cuda:0")


def test_a_gpu_the_machine_lacks_is_named(two_gpus):
    with pytest.raises(ConfigError, match=r"--device cuda:2: this machine has 2 CUDA device\(s\) \(cuda:0..cuda:1\)"):
        resolve_device("cuda:2")
