"""What a trained model depends on, as short hashes: params, data and code.

A checkpoint records the fingerprint it was trained with; training resumes it, or keeps it as
finished, only when the fingerprint now is the same, so no result from other settings, other
data or other code is ever passed off as this one.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import hashlib
import json
from pathlib import Path

from cnnbench.core.import_graph import closure, module_path
from cnnbench.models.specs import ModelSpec
from cnnbench.params.config import RunConfig

# The module that trains. Its import closure is the train stage's (stages/train.py) less the door
# (cnnbench.core.entry_point: errors to exit codes) and the launcher (training.launch: reruns under torchrun), which
# cannot change a model; in-process callers (tests, bench/) get the same fingerprint as the stage.
TRAINING_CODE = "cnnbench.training.loop"


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


def code_fingerprint(root: str = TRAINING_CODE) -> str:
    """A hash of the code that trains: `root` and every cnnbench module it imports, lazily or not, transitively.

    Each module counts as its syntax tree without docstrings (comments never reach the tree), so an edit
    to words alone keeps every trained seed and any edit to code retrains. Modules go in by name, so
    neither the order of imports nor what else this process has loaded changes it.
    """
    src = Path(__file__).resolve().parents[2]  # src/cnnbench/training/fingerprint.py
    names = closure(module_path(root, src), src) | {root}
    digest = hashlib.sha256()
    for name in sorted(names):
        path = module_path(name, src)
        stat = path.stat()
        digest.update(name.encode() + b"\0" + _code_digest(path, stat.st_mtime_ns, stat.st_size) + b"\0")
    return digest.hexdigest()[:16]


@functools.cache
def _code_digest(path: Path, mtime_ns: int, size: int) -> bytes:
    """The sha256 of a module's syntax tree less its docstrings (cached per version of the file)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and \
                    isinstance(first.value.value, str):
                node.body = node.body[1:]
    return hashlib.sha256(json.dumps(_syntax(tree)).encode()).digest()


def _syntax(node) -> object:
    """A syntax tree as nested lists: node types, fields and constants, without line numbers.

    Fields that are None or empty are left out, so a field a newer Python adds (`type_params`, say)
    does not change the fingerprint of code that does not use it; ast.dump's output differs between
    Python versions.
    """
    if isinstance(node, ast.AST):
        fields = [[name, _syntax(value)] for name in node._fields
                  if (value := getattr(node, name, None)) is not None and value != []]
        return [type(node).__name__, fields]
    if isinstance(node, list):
        return [_syntax(item) for item in node]
    return repr(node)


def data_fingerprint(data_dir: str | Path) -> str:
    """A hash of the prepared arrays training reads: same counts and classes are not the same data."""
    digest = hashlib.sha256()
    for name in ("meta.json", "train_x.npy", "train_y.npy", "val_x.npy", "val_y.npy"):
        with open(Path(data_dir) / name, "rb") as fh:
            while chunk := fh.read(1 << 24):
                digest.update(chunk)
    return digest.hexdigest()[:16]
