"""launch: DDP from `dvc repro` by a parameter, several machines by node rank, and the run-cache that
lets machines share what one of them computed.

The unit tests build torchrun command lines; the end-to-end ones (slow) run real DVC on a copy of
this project with 2 gloo processes on the CPU, on the embedded digits and on a Kaggle-layout source
whose validation split is a single image.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from cnnbench.core.errors import ConfigError
from cnnbench.params.config import LaunchConfig
from cnnbench.training.launch import relaunch_under_torchrun, torchrun_command
from fixtures import TINY_RESNET, dvc, make_kaggle_tree, zip_tree
from test_pipeline import git

ROOT = Path(__file__).resolve().parents[1]
TRAIN = {"epochs": 2, "batch_size": 8, "lr": 0.1, "augment": {"pad": 1, "flip": False}}


# ------------------------------------------------------------------ the command line


def test_one_process_in_all_is_not_relaunched(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert relaunch_under_torchrun(LaunchConfig(), "stages/train.py", ["run"]) is None


def test_a_torchrun_child_is_not_relaunched_whatever_launch_says(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    launch = LaunchConfig(nproc_per_node=2, nnodes=2, rdzv_endpoint="node0:29500")
    assert relaunch_under_torchrun(launch, "stages/train.py", ["run", "--node-rank", "1"], node_rank=1) is None


def test_one_machine_uses_a_standalone_rendezvous():
    cmd = torchrun_command(LaunchConfig(nproc_per_node=8), "stages/train.py", ["run", "a", "b"])
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert cmd[3:] == ["--nproc_per_node=8", "--nnodes=1", "--standalone", "stages/train.py", "run", "a", "b"]


def test_several_machines_meet_at_node_0_with_their_node_rank():
    launch = LaunchConfig(nproc_per_node=4, nnodes=2, rdzv_endpoint="10.0.0.1:29500")
    assert torchrun_command(launch, "s.py", [], node_rank=1)[3:] == [
        "--nproc_per_node=4", "--nnodes=2", "--rdzv_backend=static", "--rdzv_endpoint=10.0.0.1:29500",
        "--node_rank=1", "s.py"]


@pytest.mark.parametrize("launch, node_rank, message", [
    (LaunchConfig(nproc_per_node=2, nnodes=2, rdzv_endpoint="h:1"), 2, r"--node-rank 2: must be in 0\.\.1"),
    (LaunchConfig(nproc_per_node=2), 1, r"--node-rank 1: must be in 0\.\.0"),
    (LaunchConfig(), 1, r"--node-rank 1: only meaningful when launch\.nnodes > 1"),
])
def test_a_node_rank_outside_the_launch_is_refused(monkeypatch, launch, node_rank, message):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(ConfigError, match=message):
        relaunch_under_torchrun(launch, "s.py", [], node_rank=node_rank)


# ------------------------------------------------------------------ through DVC


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """This project's pipeline and code in a fresh git+DVC repo: run `ddp` on the digits, run `one-val`
    on a Kaggle-layout source with exactly one validation image (fewer than the 2 ranks)."""
    repo = tmp_path_factory.mktemp("launch")
    tree = make_kaggle_tree(tmp_path_factory.mktemp("tree"), per_split={"train": 12, "val": 0, "test": 1})
    assert len(tree.kept["val"]) == 1
    archive = zip_tree(tree.root, tmp_path_factory.mktemp("zip") / "one-val.zip")
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(ROOT / name, repo / name)
    for name in ("stages", "src"):
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["sources"] = {"digits": params["sources"]["digits"]}
    params["local_sources"] = {"one_val": {"uri": str(archive), "format": "image-csv", "md5": None}}
    params["datasets"] = {"digits": {**params["datasets"]["digits"], "image_size": 8},
                          "one_val": {"source": "one_val", "image_size": 8, "val_fraction": 0.0, "test_fraction": 0.0}}
    params["models"] = {"tiny": TINY_RESNET}
    params["runs"] = {"ddp": {"suite": "offline", "dataset": "digits", "model": "tiny", "train": TRAIN},
                      "one-val": {"suite": "offline", "dataset": "one_val", "model": "tiny", "train": TRAIN}}
    params["suites"] = {"offline": {"dir": "reports", "data": "reports/data"}}
    params["claims"] = []  # the project's claims name its own runs
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git(repo, "init", "-q")
    git(repo, "config", "user.email", "t@example.com")
    git(repo, "config", "user.name", "t")
    dvc(repo, "init", "-q")
    dvc(repo, "config", "cache.type", "reflink,hardlink,copy")
    (repo / ".gitignore").write_text("/data/\n__pycache__/\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "project")
    return repo


def set_launch(project: Path, **launch) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["launch"] = {"nproc_per_node": 1, "nnodes": 1, "rdzv_endpoint": None, **launch}
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def train_metrics(project: Path, run: str) -> dict:
    return json.loads((project / "reports" / "runs" / "offline" / run / "train" / "seed0" / "metrics.json").read_text())


@pytest.mark.slow
def test_repro_with_two_processes_per_node_trains_with_ddp(project):
    dvc_yaml = (project / "dvc.yaml").read_bytes()
    set_launch(project, nproc_per_node=2)
    out = dvc(project, "repro", "train@ddp")
    assert "launch: 1 node(s) x 2 process(es)" in out.stderr + out.stdout
    metrics = train_metrics(project, "ddp")
    assert metrics["world_size"] == 2 and metrics["ranks_in_sync"] is True and metrics["epochs"] == 2
    assert (project / "dvc.yaml").read_bytes() == dvc_yaml  # a parameter, not an edit to the stage's command
    # The train stage declares `launch`: another process count makes it stale.
    set_launch(project, nproc_per_node=1)
    status = json.loads(dvc(project, "status", "train@ddp", "--json").stdout)
    assert any("launch" in str(entry.get("changed deps", {})) for entry in status["train@ddp"]), status
    set_launch(project, nproc_per_node=2)


@pytest.mark.slow
def test_a_validation_split_smaller_than_the_ranks_completes(project):
    """Rank 1's validation shard is empty: evaluation has no hidden collective it could miss."""
    set_launch(project, nproc_per_node=2)
    dvc(project, "repro", "train@one-val")
    assert np.load(project / "data" / "prepared" / "one_val" / "val_y.npy").shape == (1,)
    metrics = train_metrics(project, "one-val")
    assert metrics["world_size"] == 2 and metrics["ranks_in_sync"] is True
    assert metrics["best_val_acc"] in (0.0, 1.0)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_nodes_rendezvous_at_node_0(project, tmp_path):
    """Two machines, played by two local processes: node 1 runs the stage's command with --node-rank 1
    (its own disk: other directories), node 0 runs `dvc repro` and holds rank 0, which writes the results."""
    set_launch(project, nproc_per_node=1, nnodes=2, rdzv_endpoint=f"127.0.0.1:{free_port()}")
    dvc(project, "repro", "prepare@digits")
    node1 = subprocess.Popen(
        [sys.executable, "stages/train.py", "ddp", "data/prepared/digits", str(tmp_path / "run"),
         str(tmp_path / "live"), "--node-rank", "1"], cwd=project, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    try:
        dvc(project, "repro", "train@ddp")
        log, _ = node1.communicate(timeout=120)
    finally:
        node1.kill()
    assert node1.returncode == 0, log
    assert "this is node 1" in log and "epoch" not in log  # rank 0 alone reports and writes
    assert not (tmp_path / "run").exists() and not (tmp_path / "live").exists()
    metrics = train_metrics(project, "ddp")
    assert metrics["world_size"] == 2 and metrics["ranks_in_sync"] is True


@pytest.mark.slow
def test_a_stage_pushed_with_its_run_cache_is_restored_not_rerun_in_another_clone(project, tmp_path):
    """Machine A computes and pushes; machine B, whose dvc.lock says nothing of the stage, restores it.

    Only fetch is run-cached here: DVC leaves out stages with persistent outputs (train) and stages
    with `cache: false` outputs that are not metrics or plots (prepare, evaluate, report). And in a
    clone without the stage's lock entry `dvc pull --run-cache` fails its checkout and restores
    nothing; `dvc repro --pull` downloads the entry and its outputs."""
    remote = tmp_path / "remote"
    dvc(project, "repro", "fetch@digits")
    dvc(project, "remote", "add", "-f", "-d", "shared", str(remote))
    dvc(project, "push", "--run-cache")
    clone = tmp_path / "machine-b"
    git(tmp_path, "clone", "-q", str(project), str(clone))
    assert not (clone / "dvc.lock").exists()  # nothing committed says what fetch produced
    dvc(clone, "remote", "add", "-f", "-d", "shared", str(remote))
    out = dvc(clone, "repro", "--pull", "fetch@digits").stdout
    assert "Stage 'fetch@digits' is cached - skipping run, checking out outputs" in out, out
    assert "Running stage" not in out
    for name in ("digits.npz", "source.json"):
        assert (clone / "data" / "raw" / "digits" / name).read_bytes() == \
            (project / "data" / "raw" / "digits" / name).read_bytes()


def test_the_launched_command_ends_with_the_launcher(tmp_path):
    """Killing the stage (kill -9, as a timeout does) ends torchrun too, instead of leaving it training."""
    pid_file = tmp_path / "child.pid"
    launcher = subprocess.Popen([sys.executable, "-c", (
        "import sys; sys.path.insert(0, sys.argv[1]); from cnnbench.training.launch import run_to_the_end; "
        "run_to_the_end([sys.executable, '-c', 'import os, sys, time; "
        "open(sys.argv[1], \"w\").write(str(os.getpid())); time.sleep(600)', sys.argv[2]])"),
        str(ROOT / "src"), str(pid_file)])
    deadline = time.monotonic() + 60
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline and launcher.poll() is None
        time.sleep(0.05)
    child = int(pid_file.read_text())
    launcher.kill()
    launcher.wait()
    while time.monotonic() < deadline:
        if not alive(child):
            return
        time.sleep(0.05)
    os.kill(child, signal.SIGKILL)
    pytest.fail("the launched process outlived its launcher")


def alive(pid: int) -> bool:
    """Running, not merely a zombie waiting for a container's init to reap it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
