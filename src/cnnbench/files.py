"""Atomic writes: a reader never sees a half-written file or directory."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from cnnbench.errors import CnnbenchError


@contextmanager
def staging_dir(out_dir: str | Path) -> Iterator[Path]:
    """A temp dir beside `out_dir` that replaces it on success and vanishes on any failure."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    tmp.chmod(0o777 & ~_umask())
    old = out_dir.with_name(f".{out_dir.name}.old-{tmp.name.rsplit('-', 1)[-1]}")
    try:
        yield tmp
        # Move the old output aside before the new one moves in: at no moment is there neither.
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
    """A temp path beside `path` to write to; renamed over `path` on success, removed on failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would make shared results unreadable to others
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    if not isinstance(data, dict):
        raise CnnbenchError(f"{path}: expected a JSON object, found {type(data).__name__}; "
                            f"re-run the stage that writes it.")
    return data
