"""The import graph of this checkout's cnnbench package, as cnnbench.core.import_graph reads it (the AST,
not by importing), with the paths of this project's tree filled in.

Every `import` counts, lazy ones inside functions included: code a stage may run is code it
depends on.
"""

from __future__ import annotations

from pathlib import Path

from cnnbench.core import import_graph

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PACKAGE = import_graph.PACKAGE


def module_path(name: str) -> Path | None:
    """The file of an in-package module (`cnnbench.data.fetch`), or None for anything else."""
    return import_graph.module_path(name, SRC)


def module_name(path: Path) -> str:
    """`src/cnnbench/data/fetch.py` -> `cnnbench.data.fetch` (packages by their __init__)."""
    return import_graph.module_name(path, SRC)


def direct_imports(path: Path) -> set[str]:
    """In-package modules that `path` imports anywhere in its body, with the packages they live in."""
    return import_graph.direct_imports(path, SRC)


def closure(path: Path) -> set[str]:
    """Every in-package module that running `path` may import, transitively."""
    return import_graph.closure(path, SRC)


def code_files(path: Path) -> set[str]:
    """`path` itself and the package files it runs, as paths relative to the project root."""
    files = {module_path(name) for name in closure(path)} | {path}
    return {f.resolve().relative_to(ROOT).as_posix() for f in files}
