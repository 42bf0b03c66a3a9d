"""The import graph of a package, read from its source (the syntax tree), never by importing it.

Every `import` counts, lazy ones inside functions included: code a process may run is code it
depends on. The code fingerprint of a trained model (fingerprint.py) and the test that holds
dvc.yaml's code deps to the imports (tests/test_dvc_deps.py) both read the graph here.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

PACKAGE = "cnnbench"


def module_path(name: str, src: Path) -> Path | None:
    """The file of an in-package module (`cnnbench.data.fetch`) under `src`, or None for anything else."""
    if name != PACKAGE and not name.startswith(PACKAGE + "."):
        return None
    base = src.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def module_name(path: Path, src: Path) -> str:
    """`src/cnnbench/data/fetch.py` -> `cnnbench.data.fetch` (packages by their __init__)."""
    parts = list(path.resolve().relative_to(src.resolve()).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def direct_imports(path: Path, src: Path) -> set[str]:
    """In-package modules that `path` imports anywhere in its body, with the packages they live in."""
    stat = path.stat()  # the parse is cached per version of the file: an edited file is read again
    return set(_direct_imports(path.resolve(), src.resolve(), stat.st_mtime_ns, stat.st_size))


@functools.cache
def _direct_imports(path: Path, src: Path, mtime_ns: int, size: int) -> frozenset[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    here = module_name(path, src).split(".") if path.is_relative_to(src) else []
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = here if is_package else here[:-1]
                base = ".".join(anchor[: len(anchor) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            # `from cnnbench.data import fetch` imports a submodule; `from cnnbench.params.config import X` does not.
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if module_path(name, src) is not None:
                parts = name.split(".")
                found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return frozenset(found)


def closure(path: Path, src: Path) -> set[str]:
    """Every in-package module that running `path` may import, transitively (`path` itself not included)."""
    seen: set[str] = set()
    todo = sorted(direct_imports(path, src))
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(direct_imports(module_path(name, src), src) - seen)
    return seen
