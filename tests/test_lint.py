"""The linter the suite runs: ruff, with the rules pyproject.toml's [tool.ruff] declares, over all the code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CODE = ("src", "tests", "bench", "stages")


def ruff(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def test_the_code_passes_the_linter():
    result = ruff(*CODE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_linter_catches_what_its_rules_name(tmp_path):
    """The config is in force: unsorted imports, an unused one, a line over 120 and a mutable default all fail."""
    bad = tmp_path / "bad.py"
    bad.write_text("import sys\nimport os\n\n\ndef f(x=[]):\n    return x  # " + "x" * 120 + "\n")
    result = ruff("--config", str(ROOT / "pyproject.toml"), str(bad), cwd=tmp_path)
    assert result.returncode == 1
    assert {"I001", "F401", "E501", "B006"} <= set(result.stdout.replace(":", " ").split()), result.stdout


MAX_FUNCTION_LINES = 60


def long_functions(root: Path) -> list[str]:
    """`path:line name (N lines)` of every function or method under root longer than MAX_FUNCTION_LINES."""
    import ast

    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    found.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_no_function_in_src_is_over_60_lines(tmp_path):
    assert long_functions(ROOT / "src") == []
    (tmp_path / "long.py").write_text("def f():\n" + "    x = 1\n" * MAX_FUNCTION_LINES)  # 61 lines: caught
    assert long_functions(tmp_path) == ["long.py:1 f (61 lines)"]
