"""files: writes are atomic, a writer killed mid-write leaves nothing behind the next write, and the
JSON the stages write is read back by one reader that fails with a message, not a traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cnnbench.core.errors import CnnbenchError
from cnnbench.core.files import atomic_path, read_json_object, staging_dir, write_json_atomic

# A writer that writes half its output, says where, and waits to be killed.
WRITE_AND_WAIT = """
import sys, time
from pathlib import Path
from cnnbench.core.files import atomic_path, staging_dir
writer, target = sys.argv[1], Path(sys.argv[2])
if writer == "atomic_path":
    with atomic_path(target, suffix=".png") as tmp:
        tmp.write_bytes(b"half a PNG")
        print(tmp, flush=True)
        time.sleep(600)
else:
    with staging_dir(target) as tmp:
        (tmp / "train_x.npy").write_bytes(b"half an array")
        print(tmp, flush=True)
        time.sleep(600)
"""


def start_writer(writer: str, target: Path) -> tuple[subprocess.Popen, Path]:
    """A process in the middle of writing `target`: (the process, its temp path)."""
    proc = subprocess.Popen([sys.executable, "-c", WRITE_AND_WAIT, writer, str(target)], stdout=subprocess.PIPE,
                            text=True)
    line = proc.stdout.readline().strip()
    assert line, "the writer died before writing"
    return proc, Path(line)


def kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()


def write(writer: str, target: Path, suffix: str = ".png") -> None:
    """A complete write of `target` in this process."""
    if writer == "atomic_path":
        with atomic_path(target, suffix=suffix) as tmp:
            tmp.write_bytes(b"a whole file")
    else:
        with staging_dir(target) as tmp:
            (tmp / "train_x.npy").write_bytes(b"a whole array")


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    result = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                            check=True)
    return int(result.stdout)


# ------------------------------------------------------------------ leftovers of a killed writer


@pytest.mark.parametrize("writer", ["atomic_path", "staging_dir"])
def test_a_write_after_a_sigkill_removes_the_dead_writers_temp_but_not_a_live_ones(tmp_path, writer):
    target = tmp_path / ("cifar10_samples.png" if writer == "atomic_path" else "cifar10")
    killed, debris = start_writer(writer, target)
    kill(killed)
    assert debris.exists() and debris.name.startswith(f".{target.name}.partial-{killed.pid}-")  # what a kill leaves
    live, live_tmp = start_writer(writer, target)
    try:
        write(writer, target)
        assert not debris.exists()
        assert live_tmp.exists()  # another process is writing the same target right now: left alone
    finally:
        kill(live)
    write(writer, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]


@pytest.mark.parametrize("writer", ["atomic_path", "staging_dir"])
def test_only_the_targets_own_temp_names_of_dead_processes_are_removed(tmp_path, writer):
    dead = dead_pid()
    if writer == "atomic_path":  # a checkpoint: train saves last.pt through atomic_path, without a suffix
        target, stale = tmp_path / "last.pt", [f".last.pt.partial-{dead}-k1ll3d_x"]
    else:  # a prepared dataset, killed while written or while the previous one was moved aside
        target, stale = tmp_path / "cifar10", [f".cifar10.partial-{dead}-k1ll3d_x", f".cifar10.old-{dead}-k1ll3d_x"]
    kept = [f".{target.name}.partial-{os.getpid()}-l1ve",  # this process: alive
            f".other.partial-{dead}-k1ll3d_x",              # another target
            f"{target.name}.partial-{dead}-k1ll3d_x",       # not hidden: not a temp name
            f".{target.name}.partial-{dead}",               # no random part
            f".{target.name}.partial-{dead}-x.png",         # another suffix
            f".{target.name}.notes", ".dvcignore"]
    for name in stale:
        if writer == "staging_dir":
            (tmp_path / name).mkdir()
            (tmp_path / name / "train_x.npy").write_bytes(b"half an array")
        else:
            (tmp_path / name).write_bytes(b"half a checkpoint")
    for name in kept:
        (tmp_path / name).write_bytes(b"not ours to remove")
    write(writer, target, suffix="")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([target.name, *kept])


def test_temp_names_say_what_they_are(tmp_path):
    with atomic_path(tmp_path / "last.pt") as tmp:
        assert tmp.name.startswith(f".last.pt.partial-{os.getpid()}-") and tmp.parent == tmp_path
    with staging_dir(tmp_path / "cifar10") as tmp:
        assert tmp.name.startswith(f".cifar10.partial-{os.getpid()}-") and tmp.parent == tmp_path


# ------------------------------------------------------------------ JSON


def test_read_json_object_round_trips_and_is_none_when_absent(tmp_path):
    write_json_atomic(tmp_path / "metrics.json", {"b": 1, "a": [0.5]})
    assert read_json_object(tmp_path / "metrics.json") == {"a": [0.5], "b": 1}
    assert read_json_object(tmp_path / "missing.json") is None


@pytest.mark.parametrize("content, reason", [('{"classes": ["a"', "unreadable JSON"), ("[1, 2]", "found list"),
                                             (b"\xff\xfe{}", "unreadable JSON")])
def test_read_json_object_names_the_file_of_anything_else(tmp_path, content, reason):
    path = tmp_path / "meta.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(CnnbenchError, match=f"^{path}: .*{reason}.*re-run the stage that writes it"):
        read_json_object(path)
