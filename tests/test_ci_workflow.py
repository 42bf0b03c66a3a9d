"""The GitHub workflow: valid for GitHub Actions (actionlint), and it runs the project's own CI."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"


def actionlint() -> str:
    found = shutil.which("actionlint", path=str(Path(sys.executable).parent)) or shutil.which("actionlint")
    if found is None:
        pytest.fail("actionlint is not installed: `pip install -e '.[test]'` brings it")
    return found


def test_the_workflow_passes_actionlint():
    result = subprocess.run([actionlint(), "-no-color", str(WORKFLOW)], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_would_catch_a_broken_workflow(tmp_path):
    broken = tmp_path / ".github" / "workflows" / "ci.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text(WORKFLOW.read_text().replace("runs-on: ubuntu-latest", "runs-on: [ubuntu-latest\n"))
    result = subprocess.run([actionlint(), "-no-color", str(broken)], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode != 0


def test_the_workflow_runs_ci_and_reports_what_moved():
    steps = yaml.safe_load(WORKFLOW.read_text())["jobs"]["ci"]["steps"]
    scripts = "\n".join(step.get("run", "") for step in steps)
    assert "bash .ci/run" in scripts
    # The restored DVC cache is used: the committed lock's outputs are checked out before the pipeline runs.
    assert scripts.index("dvc checkout --allow-missing") < scripts.index("bash .ci/run")
    assert "check-metrics" in scripts and "dvc metrics diff" in scripts and "GITHUB_STEP_SUMMARY" in scripts
    cached = {step["with"]["path"] for step in steps if step.get("uses", "").startswith("actions/cache")}
    assert cached == {".venv", ".dvc/cache"}
