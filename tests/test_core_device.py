"""device: `--device` honoured as given outside torchrun, each rank's own GPU inside it; deterministic algorithms
switched on without the compiler's import.

No GPU here: torch.cuda's availability and device count are faked; resolve_device only asks them.
"""

from __future__ import annotations

import subprocess
import sys

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


@pytest.mark.parametrize("compiled, inductor", [(False, False), (True, True)])
def test_deterministic_algorithms_import_the_compiler_only_for_compiled_code(compiled, inductor):
    """In a fresh process, as a train stage starts: eager training skips torch._inductor's 1.5-2 s import."""
    code = ("import sys, torch; from cnnbench.core.device import deterministic_algorithms; "
            f"deterministic_algorithms(compiled={compiled}); "
            "print(torch.are_deterministic_algorithms_enabled(), 'torch._inductor' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", str(inductor)]
