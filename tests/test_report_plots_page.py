"""`cnnbench plots` refuses what it cannot trust or find with one line: a Vega tarball that is not the one
published, a folder without it, a machine without npm, a project with nothing reported yet. (The page itself,
rendered from a real DVC project, is tested in test_pipeline.py.)"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def reported(tmp_path) -> Path:
    """A project whose offline suite (params.yaml: suites.offline.dir = reports) has its plots, the study's not."""
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "reports" / "plots").mkdir(parents=True)
    return tmp_path


def plots(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cnnbench.cli", "plots", *args], cwd=cwd, capture_output=True,
                          text=True, env={**os.environ, **env}, timeout=120)


def test_a_tampered_vega_tarball_is_refused(reported, vega_cache, tmp_path):
    packages = tmp_path / "packages"
    shutil.copytree(vega_cache / "cnnbench" / "vega", packages)
    with (packages / "vega-embed-6.29.0.tgz").open("ab") as tarball:
        tarball.write(b"\0")
    done = plots(reported, "--vega-packages", str(packages))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == (f"error: plots: {packages / 'vega-embed-6.29.0.tgz'} is not vega-embed 6.29.0 as "
                                   "published (its sha512 differs); delete it and run again")
    assert not (reported / "dvc_plots").exists()


def test_a_packages_folder_without_a_tarball_names_it(reported, tmp_path):
    (tmp_path / "empty").mkdir()
    done = plots(reported, "--vega-packages", str(tmp_path / "empty"))
    assert (done.returncode, done.stderr.strip()) == (
        2, f"error: plots: --vega-packages {tmp_path / 'empty'} has no vega-5.33.1.tgz")
    done = plots(reported, "--vega-packages", str(tmp_path / "nowhere"))
    assert done.returncode == 2 and f"{tmp_path / 'nowhere'} is not a folder" in done.stderr


def test_without_npm_it_says_how_to_bring_the_packages(reported, tmp_path):
    done = plots(reported, PATH=str(Path(sys.executable).parent), XDG_CACHE_HOME=str(tmp_path / "cache"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "npm is not installed" in done.stderr
    assert "npm pack vega@5.33.1 vega-lite@5.23.0 vega-embed@6.29.0" in done.stderr and "--vega-packages" in done.stderr


def test_nothing_reported_yet_is_one_line(tmp_path):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    done = plots(tmp_path)
    assert (done.returncode, done.stderr.strip()) == (
        2, "error: plots: no suite is reported yet (offline, study); run `make offline` or "
           "`dvc repro report@<suite>` first")
    done = plots(tmp_path, "--suite", "nosuch")
    assert done.returncode == 2 and "nosuch" in done.stderr and "offline" in done.stderr
