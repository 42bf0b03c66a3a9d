"""Atomic writes: a reader never sees a half-written file or directory, and a writer killed mid-write
leaves nothing that outlives the next write of the same target.

Temp names are `.<target>.partial-<pid>-<random>[suffix]` beside the target (`.old-` for an output
moved aside): hidden, recognisable, and tied to the process writing them. Before writing, a writer
removes the temp siblings of its own target whose process no longer exists (on this machine), so what a
SIGKILL leaves (which DVC would count as part of an output directory) lasts only until the next write.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cnnbench.core.errors import CnnbenchError


@contextmanager
def staging_dir(out_dir: str | Path) -> Iterator[Path]:
    """A temp dir beside `out_dir` that replaces it on success and vanishes on any failure.

    Temp dirs that a killed earlier writer of `out_dir` left are removed first.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(out_dir)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(out_dir, "partial"), dir=out_dir.parent))
    tmp.chmod(0o777 & ~_umask())
    old = out_dir.with_name(_temp_prefix(out_dir, "old") + tmp.name.rsplit("-", 1)[-1])
    try:
        yield tmp
        # Move the old output aside, then the new one in; if the second rename fails, the old one returns.
        if out_dir.exists():
            out_dir.rename(old)
        try:
            tmp.rename(out_dir)
        except OSError:
            if old.exists():
                old.rename(out_dir)
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """A temp path beside `path` to write to; renamed over `path` on success, removed on failure.

    `suffix` ends the temp name (writers that pick a format from it need it). Temp files that a killed
    earlier writer of `path` left are removed first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(path, suffix)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path, "partial"), suffix=suffix, dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would make shared results unreadable to others
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _temp_prefix(target: Path, kind: str) -> str:
    return f".{target.name}.{kind}-{os.getpid()}-"


def _remove_stale_temps(target: Path, suffix: str = "") -> None:
    """Remove the temp siblings of `target` (this module's names for it alone) whose process is gone."""
    pattern = re.compile(rf"\.{re.escape(target.name)}\.(?:partial|old)-(\d+)-\w+{re.escape(suffix)}")
    for sibling in target.parent.iterdir():
        match = pattern.fullmatch(sibling.name)
        if match is None or _process_exists(int(match[1])):
            continue
        if sibling.is_dir() and not sibling.is_symlink():
            shutil.rmtree(sibling, ignore_errors=True)
        else:
            sibling.unlink(missing_ok=True)


def _process_exists(pid: int) -> bool:
    """Whether process `pid` exists on this machine; signal 0 checks without sending anything."""
    if os.name != "posix":
        return True  # on Windows os.kill(pid, 0) would terminate the process: never clean up there
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # no such process (or no such pid at all)
        return False
    except PermissionError:  # it exists, run by another user
        pass
    return True


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write `text` to a temp file in the same directory, then rename it over `path`."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json_atomic(path: str | Path, data: Any) -> Path:
    """JSON with sorted keys and a trailing newline, so diffs in git stay readable."""
    return write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_json_object(path: str | Path) -> dict | None:
    """The JSON object in `path`, or None when the file is absent.

    The one reader of the JSON the stages write: a file that is unreadable, not JSON or not an object
    is a CnnbenchError naming it (a stage was killed mid-write, or someone edited it), never a traceback.
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise CnnbenchError(f"{path}: unreadable JSON ({err}); re-run the stage that writes it.") from None
    except RecursionError:  # no stage writes JSON nested deeper than a few levels
        raise CnnbenchError(f"{path}: JSON nested too deep to read; re-run the stage that writes it.") from None
    if not isinstance(data, dict):
        raise CnnbenchError(f"{path}: expected a JSON object, found {type(data).__name__}; "
                            f"re-run the stage that writes it.")
    return data


def remove_stale_dirs(parent: str | Path, pattern: str, keep: set[str]) -> None:
    """Remove the subdirectories of `parent` matching `pattern` whose names are not in `keep`.

    A run's outputs hold one directory per seed; a seed no longer declared must not be reported.
    """
    parent = Path(parent)
    for child in sorted(parent.glob(pattern)) if parent.is_dir() else []:
        if child.is_dir() and child.name not in keep:
            shutil.rmtree(child)


@contextmanager
def exclusive_lock(directory: str | Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock on `directory` (created if missing) for the block, or fail at once.

    flock on the directory itself, so no lock file joins a DVC output; the kernel releases it when
    the holder exits, however it exits, so a killed writer never leaves a stale lock behind.
    """
    import fcntl

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CnnbenchError(f"{directory}: another {what} is already running on it (it holds its lock); wait "
                                f"for it to end or stop it, then run again.") from None
        yield
    finally:
        os.close(fd)
