"""launch: run an entry script as several DDP processes when params.yaml's `launch:` asks for them.

`dvc repro` runs the train stage as one plain `python stages/train.py ...`; with
`launch.nproc_per_node` (or `nnodes`) above 1, that process starts torchrun on its own script and
arguments and waits for it, so the process count is a parameter and dvc.yaml's command never changes.
Inside torchrun (WORLD_SIZE set) nothing is relaunched: a hand-written `torchrun ... stages/train.py`
works as before.

One machine uses torchrun's `--standalone` rendezvous (a free local port, so parallel stages never
collide). Several use the static rendezvous at `rdzv_endpoint`, each machine with its node rank:
node 0 hosts the endpoint and holds global rank 0, which alone writes files, so node 0 is the
machine where `dvc repro` runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence

from cnnbench.core.errors import ConfigError
from cnnbench.params.config import LaunchConfig


def is_torchrun_child() -> bool:
    """Whether this process was started by torchrun (or any launcher that sets WORLD_SIZE)."""
    return "WORLD_SIZE" in os.environ


def torchrun_command(launch: LaunchConfig, script: str, args: Sequence[str], node_rank: int = 0) -> list[str]:
    """The torchrun command line that runs `script args` as `launch` asks, on node `node_rank`."""
    if not 0 <= node_rank < launch.nnodes:
        raise ConfigError(f"--node-rank {node_rank}: must be in 0..{launch.nnodes - 1} (launch.nnodes is "
                          f"{launch.nnodes})")
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={launch.nproc_per_node}",
           f"--nnodes={launch.nnodes}"]
    if launch.rdzv_endpoint:
        # Static rendezvous: global ranks follow node ranks, so node 0 (where DVC runs) holds rank 0.
        cmd += ["--rdzv_backend=static", f"--rdzv_endpoint={launch.rdzv_endpoint}", f"--node_rank={node_rank}"]
    else:
        cmd.append("--standalone")
    return cmd + [script, *args]


def relaunch_under_torchrun(launch: LaunchConfig, script: str, args: Sequence[str], node_rank: int = 0) -> int | None:
    """Run `script args` under torchrun and return its exit status; None when this process should do the work.

    None when `launch` asks for one process in all, or when this process is already a torchrun child.
    """
    if is_torchrun_child():
        return None  # the children see the parent's arguments, --node-rank included: torchrun has used it
    if launch.world_size == 1:
        if node_rank:
            raise ConfigError(f"--node-rank {node_rank}: only meaningful when launch.nnodes > 1 (it is "
                              f"{launch.nnodes})")
        return None
    cmd = torchrun_command(launch, script, args, node_rank)
    print(f"launch: {launch.nnodes} node(s) x {launch.nproc_per_node} process(es), this is node {node_rank}: "
          + " ".join(cmd[1:]), file=sys.stderr, flush=True)
    return run_to_the_end(cmd)


def run_to_the_end(cmd: Sequence[str]) -> int:
    """Run `cmd` and return its exit status; it never outlives this process.

    A SIGTERM (DVC stopping a queued experiment, a CI timeout) is passed on; on Linux a SIGKILL of
    this process reaches it too, through the kernel's parent-death signal. Otherwise torchrun and its
    ranks would train on, orphaned, holding the GPUs.
    """
    proc = subprocess.Popen(cmd, preexec_fn=_term_when_parent_dies if sys.platform == "linux" else None)
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        return proc.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
        if proc.poll() is None:
            proc.terminate()
            proc.wait()


def _term_when_parent_dies() -> None:
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
