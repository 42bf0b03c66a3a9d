"""`cnnbench plots`: every reported suite's training curves as one HTML page that needs no network.

DVC's own page (`dvc plots show`) loads Vega, Vega-Lite and vega-embed from a CDN, so it is blank
offline. This one is DVC's rendering with `--html-template`: a template that carries the three
libraries inline, taken from their npm packages (the versions and sha512 digests pinned below, the
same majors as DVC's page). The packages are fetched once with `npm pack` into the user's cache, or
read from a folder of the three `.tgz` files (`--vega-packages`) on a machine without npm.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from cnnbench.core.errors import CnnbenchError
from cnnbench.core.files import write_text_atomic

# name, version, npm's integrity digest of the tarball, the browser build inside it
VEGA_PACKAGES = (
    ("vega", "5.33.1",
     "sha512-1fArfVDUqVbb5z8n+/nVQb+VNBzx8svY6CrsyTK4Ujm4yrd9I1auoKxBAPXLCavY1LcrbHUskQbGUP8gXOzyQw==",
     "package/build/vega.min.js"),
    ("vega-lite", "5.23.0",
     "sha512-l4J6+AWE3DIjvovEoHl2LdtCUkfm4zs8Xxx7INwZEAv+XVb6kR6vIN1gt3t2gN2gs/y4DYTs/RPoTeYAuEg6mA==",
     "package/build/vega-lite.min.js"),
    ("vega-embed", "6.29.0",
     "sha512-PmlshTLtLFLgWtF/b23T1OwX53AugJ9RZ3qPE2c01VFAbgt3/GSNI/etzA/GzdrkceXFma+FDHNXUppKuM0U6Q==",
     "package/build/vega-embed.min.js"),
)

# DVC's page (dvc_render.html.PAGE_HTML) with the libraries inline instead of its {scripts}.
PAGE = """<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    <title>cnnbench: training curves</title>
    {libraries}
    <style>
        body {{ font-family: sans-serif; }}
        table {{ border-spacing: 15px; }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""


def tarball_name(name: str, version: str) -> str:
    return f"{name}-{version}.tgz"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cnnbench" / "vega"


def integrity(path: Path) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(path.read_bytes()).digest()).decode()


def npm_pack(name: str, version: str, into: Path) -> Path:
    """The package's tarball as the npm registry serves it (npm checks the registry's digest; we check ours)."""
    npm = shutil.which("npm")
    if npm is None:
        raise CnnbenchError(
            "plots: npm is not installed, and the page's Vega libraries come from their npm packages; install npm, "
            "or download them elsewhere (npm pack " + " ".join(f"{n}@{v}" for n, v, _, _ in VEGA_PACKAGES)
            + ") and pass their folder with --vega-packages")
    with tempfile.TemporaryDirectory(dir=into) as scratch:
        done = subprocess.run([npm, "pack", f"{name}@{version}", "--pack-destination", scratch],
                              capture_output=True, text=True)
        packed = Path(scratch) / tarball_name(name, version)
        if done.returncode != 0 or not packed.is_file():
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise CnnbenchError(f"plots: `npm pack {name}@{version}` failed: {last}")
        target = into / packed.name
        os.replace(packed, target)
    return target


def library_sources(packages: Path | None) -> list[str]:
    """The three browser builds, each from a tarball whose digest is the pinned one."""
    cache = cache_dir()
    sources = []
    for name, version, digest, member in VEGA_PACKAGES:
        path = (packages or cache) / tarball_name(name, version)
        if not path.is_file():
            if packages is not None:
                raise CnnbenchError(f"plots: --vega-packages {packages} has no {path.name}")
            cache.mkdir(parents=True, exist_ok=True)
            path = npm_pack(name, version, cache)
        if integrity(path) != digest:
            raise CnnbenchError(f"plots: {path} is not {name} {version} as published (its sha512 differs); "
                                "delete it and run again")
        with tarfile.open(path, "r:gz") as tar:
            data = tar.extractfile(member)
            if data is None:
                raise CnnbenchError(f"plots: {path} holds no {member}")
            sources.append(data.read().decode("utf-8"))
    return sources


def page_template(packages: Path | None) -> str:
    """DVC's template, the libraries inline. A library that could end its <script> early is refused."""
    scripts = []
    for (name, _, _, _), source in zip(VEGA_PACKAGES, library_sources(packages)):
        if "</script" in source.lower() or "{plot_divs}" in source:
            raise CnnbenchError(f"plots: {name}'s build cannot be inlined in a page")
        scripts.append(f"<script>\n{source}\n</script>")
    return PAGE.format(libraries="\n    ".join(scripts))


def write_page(targets: list[str], out: Path, packages: Path | None = None) -> Path:
    """`dvc plots show TARGETS` rendered with the offline template into out/index.html."""
    with tempfile.TemporaryDirectory() as scratch:
        template = write_text_atomic(Path(scratch) / "template.html", page_template(packages))
        done = subprocess.run([sys.executable, "-m", "dvc", "plots", "show", "--html-template", str(template),
                               "-o", str(out), *targets], capture_output=True, text=True)
    page = out / "index.html"
    if done.returncode != 0 or not page.is_file():
        last = ((done.stderr or done.stdout).strip().splitlines() or ["no output"])[-1]
        raise CnnbenchError(f"plots: `dvc plots show` failed: {last}")
    return page
