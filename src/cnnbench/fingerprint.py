"""What a trained model depends on, as short hashes: params, data and code.

A checkpoint records the fingerprint it was trained with; training resumes it, or keeps it as
finished, only when the fingerprint now is the same, so no result from other settings, other
data or other code is ever passed off as this one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from pathlib import Path

from cnnbench.config import RunConfig
from cnnbench.specs import ModelSpec


def config_hash(run: RunConfig, spec: ModelSpec, data_meta: dict) -> str:
    """Identifies what a checkpoint was trained with: resuming from anything else would be wrong.

    It covers the replicate's params (not the run's list of other seeds), the model spec, the
    data, the world size and the code that trains, so a finished seed is reused only when
    retraining it would give the same model.
    """
    params = {**dataclasses.asdict(run), "seeds": None, "suite": None}
    blob = json.dumps({"run": params, "spec": dataclasses.asdict(spec), "data": data_meta, "code": code_fingerprint()},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def code_fingerprint() -> str:
    """A hash of the cnnbench source loaded in this process, and of the script that runs it."""
    files = {name: getattr(module, "__file__", None) for name, module in list(sys.modules.items())
             if name == "cnnbench" or name.startswith("cnnbench.")}
    files["__main__"] = getattr(sys.modules.get("__main__"), "__file__", None)
    digest = hashlib.sha256()
    for name, path in sorted(files.items()):
        if path and Path(path).is_file() and path.endswith(".py"):
            digest.update(name.encode() + b"\0" + Path(path).read_bytes())
    return digest.hexdigest()[:16]


def data_fingerprint(data_dir: str | Path) -> str:
    """A hash of the prepared arrays training reads: same counts and classes are not the same data."""
    digest = hashlib.sha256()
    for name in ("meta.json", "train_x.npy", "train_y.npy", "val_x.npy", "val_y.npy"):
        with open(Path(data_dir) / name, "rb") as fh:
            while chunk := fh.read(1 << 24):
                digest.update(chunk)
    return digest.hexdigest()[:16]
