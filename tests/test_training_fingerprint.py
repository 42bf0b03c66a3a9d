"""The code fingerprint a checkpoint is kept or retrained by: an edit to words keeps every trained seed,
an edit to code retrains, and nothing but the training code's syntax counts.

The fingerprint is computed as a user's process computes it, in a fresh interpreter on a copy of
the package; the end-to-end tests edit a tiny DVC project's code and run `dvc repro`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures import dvc, pipeline_project

ROOT = Path(__file__).resolve().parents[1]
SEEDS = (0, 1)


def copy_src(dest: Path) -> Path:
    shutil.copytree(ROOT / "src", dest / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return dest / "src"


def fingerprint(src: Path, first: str = "") -> str:
    """code_fingerprint() in a fresh process on `src`, after running `first` (other imports, say)."""
    code = f"{first}\nfrom cnnbench.training.fingerprint import code_fingerprint\nprint(code_fingerprint())"
    result = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(src)},
                            capture_output=True, text=True, check=True)
    return result.stdout.strip()


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} is not once in {path}"
    path.write_text(text.replace(old, new))


# Edits to words only, in two modules the train stage imports: comments, a module's and a function's
# docstrings, a line broken differently.
WORDS_ONLY = [
    ("cnnbench/core/files.py", '"""Atomic writes:', '# An added comment.\n"""Atomic writes (reworded):'),
    ("cnnbench/training/loop.py",
     '"""One pass over the training split; returns summed loss, correct and seen counts."""',
     '"""One pass over the training data.\n\n    Returns the summed loss, correct and seen counts.\n    """'),
    ("cnnbench/training/loop.py", "NAN_CHECK_EVERY = 50\n", "NAN_CHECK_EVERY = (  # a comment inside\n    50\n)\n"),
]
CODE_EDIT = ("cnnbench/training/loop.py", "PROGRESS_DELAY = 5 ", "PROGRESS_DELAY = 6 ")  # behaviour: when a bar shows


def test_an_edit_to_words_alone_keeps_the_fingerprint(tmp_path):
    src = copy_src(tmp_path)
    before = fingerprint(src)
    for name, old, new in WORDS_ONLY:
        edit(src / name, old, new)
    assert fingerprint(src) == before


def test_an_edit_to_code_changes_it(tmp_path):
    src = copy_src(tmp_path)
    before = fingerprint(src)
    edit(src / CODE_EDIT[0], *CODE_EDIT[1:])
    assert fingerprint(src) != before
    edit(src / CODE_EDIT[0], CODE_EDIT[2], CODE_EDIT[1])
    edit(src / "cnnbench/core/files.py", "import shutil\n", "import shutil\nimport string\n")  # an imported module
    assert fingerprint(src) != before


def test_only_the_training_code_counts_not_what_else_is_loaded(tmp_path):
    """The report's code is no part of a model, and a process that loaded more computes the same fingerprint."""
    src = copy_src(tmp_path)
    before = fingerprint(src)
    edit(src / "cnnbench/report/tables.py", "from __future__ import annotations\n",
         "from __future__ import annotations\n\nUNUSED = 1\n")
    assert fingerprint(src) == before
    assert fingerprint(src, "import cnnbench.report.tables, cnnbench.evaluation.predict, cnnbench.cli") == before


# ------------------------------------------------------------------ through DVC


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """This project's pipeline and code in a fresh git+DVC repo, with one tiny two-seed digits run trained."""
    run = {"suite": "offline", "dataset": "digits", "model": "tiny", "seeds": list(SEEDS),
           "train": {"epochs": 1, "batch_size": 128, "lr": 0.1, "augment": {"pad": 1, "flip": False}}}
    repo = pipeline_project(tmp_path_factory.mktemp("project"), {"digits-a": run})
    out = dvc(repo, "repro", "train@digits-a").stdout
    assert out.count("epoch   1/1") == len(SEEDS), out
    return repo


def checkpoints(repo: Path) -> dict[int, int]:
    """Each seed's last.pt, by the time it was written."""
    return {seed: (repo / "data/runs/digits-a" / f"seed{seed}" / "last.pt").stat().st_mtime_ns for seed in SEEDS}


def best_val_acc(repo: Path) -> dict[int, float]:
    live = repo / "reports/runs/offline/digits-a/train"
    return {seed: json.loads((live / f"seed{seed}" / "metrics.json").read_text())["best_val_acc"] for seed in SEEDS}


@pytest.mark.slow
def test_a_comment_or_docstring_edit_keeps_every_trained_seed(project):
    before = checkpoints(project)
    for name, old, new in WORDS_ONLY:
        edit(project / "src" / name, old, new)
    out = dvc(project, "repro", "train@digits-a").stdout
    assert "Running stage 'train@digits-a'" in out  # DVC sees its deps changed and runs the stage...
    for seed in SEEDS:  # ...which keeps every seed
        assert f"seed{seed}: already trained with these params, data and code (1 epochs); kept" in out
    assert "epoch   1/1" not in out and checkpoints(project) == before


@pytest.mark.slow
def test_a_code_edit_retrains_every_seed(project):
    before, accuracy = checkpoints(project), best_val_acc(project)
    edit(project / "src" / CODE_EDIT[0], *CODE_EDIT[1:])
    out = dvc(project, "repro", "train@digits-a").stdout
    assert "kept" not in out and out.count("epoch   1/1") == len(SEEDS), out
    after = checkpoints(project)
    assert all(after[seed] != before[seed] for seed in SEEDS)
    assert best_val_acc(project) == accuracy  # the edit changed no arithmetic: the CPU retrains bit for bit
