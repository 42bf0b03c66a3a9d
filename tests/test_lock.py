"""requirements.lock: the exact environment `make setup` installs, within pyproject.toml's ranges, and an
environment that make rebuilds when, and only when, the lock or pyproject.toml changes."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)$")


def pins() -> dict[str, str]:
    lines = [line.strip() for line in (ROOT / "requirements.lock").read_text().splitlines()]
    entries = [line for line in lines if line and not line.startswith("#")]
    assert entries and all(PIN.match(line) for line in entries), [e for e in entries if not PIN.match(e)]
    return {canonicalize_name(PIN.match(line)[1]): PIN.match(line)[2] for line in entries}


def test_every_requirement_of_pyproject_is_pinned_within_its_range():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(r) for r in project["dependencies"]]
    wanted += [Requirement(r) for extra in ("test", "deploy") for r in project["optional-dependencies"][extra]]
    locked = pins()
    for requirement in wanted:
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{requirement} is not in requirements.lock (make lock)"
        assert requirement.specifier.contains(locked[name], prereleases=True), (str(requirement), locked[name])


@pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason="the lock is CPython 3.11's; make setup installs "
                    "pyproject.toml's ranges on another Python")
def test_this_environment_is_the_locked_one():
    """What `make setup` installed is what the lock says: the tests ran on the versions the lock pins."""
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}
    differ = {name: (version, installed.get(name)) for name, version in pins().items()
              if installed.get(name) != version}
    assert not differ, f"locked vs installed: {differ}"


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_rebuilds_the_environment_when_the_lock_changes_and_not_when_a_checkout_touches_it(tmp_path):
    for name in ("Makefile", "requirements.lock", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    digest = hashlib.sha256((tmp_path / "requirements.lock").read_bytes() + (tmp_path / "pyproject.toml").read_bytes())
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / f".installed-{digest.hexdigest()[:16]}").touch()

    def up_to_date() -> bool:
        return subprocess.run(["make", "-q", "setup"], cwd=tmp_path).returncode == 0

    assert up_to_date()
    (tmp_path / "pyproject.toml").touch()  # a fresh checkout: newer files, the same content
    assert up_to_date()
    with (tmp_path / "requirements.lock").open("a") as lock:
        lock.write("six==1.16.0\n")
    assert not up_to_date()
    plan = subprocess.run(["make", "-n", "setup"], cwd=tmp_path, capture_output=True, text=True).stdout
    assert "pip install --quiet -r requirements.lock" in plan and "--no-deps -e ." in plan
    assert (tmp_path / ".venv").is_dir()  # -n ran nothing


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_setup_on_a_disk_without_room_stops_with_one_line_and_creates_nothing(tmp_path):
    """CI once died of pip's Errno 28 halfway through the install: too little space is now said before pip runs."""
    for name in ("Makefile", "requirements.lock", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    done = subprocess.run(["make", "setup", "SETUP_FREE_GB=1000000"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode != 0
    assert re.search(r"make setup: \d+ GB free here, the environment needs 1000000 GB", done.stderr), done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / ".venv").exists()
