"""params.yaml is written in the form `dvc exp run -S` writes it, so an experiment's diff is its change."""

from __future__ import annotations

import difflib
import shutil
from pathlib import Path

from dvc.utils.hydra import apply_overrides  # what `dvc exp run -S` calls to rewrite params.yaml

ROOT = Path(__file__).resolve().parents[1]


def changed_lines(before: str, after: str) -> list[str]:
    return [line for line in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
            if line[:1] in "+-" and not line.startswith(("+++", "---"))]


def test_setting_one_value_changes_one_line(tmp_path):
    path = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", path)
    before = path.read_text()
    apply_overrides(str(path), ["runs.digits-resnet18.train.epochs=7"])
    changes = changed_lines(before, path.read_text())
    assert len(changes) == 2, "\n".join(changes)  # one line out, one line in
    assert changes[1][1:].strip() == "epochs: 7"


def test_a_no_op_override_leaves_the_file_byte_identical(tmp_path):
    path = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", path)
    before = path.read_text()
    apply_overrides(str(path), ["check.suite=offline"])
    assert path.read_text() == before, "\n".join(changed_lines(before, path.read_text()))
