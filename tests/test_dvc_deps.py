"""dvc.yaml declares exactly the code each stage runs, the package has no import circle, and
params load without torch.

A dependency missing from dvc.yaml means an edit to that module never re-runs the stage and
`dvc repro` keeps stale results; so the code deps are computed from the import graph here and
compared with what dvc.yaml says, both ways.
"""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import yaml

from imports import ROOT, SRC, closure, code_files, direct_imports, module_name, module_path

MAX_LINES = 450


def declared_code(stage: dict) -> set[str]:
    """The stage's deps that are code (stages/ and src/), as dvc.yaml lists them."""
    return {d for d in stage["do"].get("deps", []) if isinstance(d, str) and d.startswith(("stages/", "src/"))}


def stage_script(stage: dict) -> str:
    return next(word for word in stage["do"]["cmd"].split() if word.startswith("stages/") and word.endswith(".py"))


def code_dep_problems(dvc_yaml: dict) -> list[str]:
    """One line per stage whose declared code deps differ from the files its script runs."""
    problems = []
    for name, stage in dvc_yaml["stages"].items():
        runs, declared = code_files(ROOT / stage_script(stage)), declared_code(stage)
        for path in sorted(runs - declared):
            problems.append(f"{name}: missing dep {path}")
        for path in sorted(declared - runs):
            problems.append(f"{name}: declares {path}, which it never imports")
    return problems


@pytest.fixture(scope="module")
def dvc_yaml() -> dict:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())


def test_every_stage_declares_exactly_the_code_it_runs(dvc_yaml):
    problems = code_dep_problems(dvc_yaml)
    hint = "\n".join(f"  {name}: " + ", ".join(sorted(code_files(ROOT / stage_script(stage))))
                     for name, stage in dvc_yaml["stages"].items())
    assert not problems, "\n".join(problems) + "\nthe code each stage runs:\n" + hint


def test_removing_any_one_code_dep_is_caught(dvc_yaml):
    for name, stage in dvc_yaml["stages"].items():
        deps = stage["do"].get("deps", [])
        for path in sorted(declared_code(stage)):
            broken = copy.deepcopy(dvc_yaml)
            broken["stages"][name]["do"]["deps"] = [d for d in deps if d != path]
            assert code_dep_problems(broken) == [f"{name}: missing dep {path}"]


def test_lazy_imports_inside_functions_count(tmp_path):
    script = tmp_path / "stage.py"
    script.write_text("def main():\n    from cnnbench.data import fetch\n    return fetch\n")
    assert {"cnnbench", "cnnbench.data", "cnnbench.data.fetch"} <= closure(script)


def package_modules() -> list:
    return sorted(SRC.rglob("*.py"))


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of `graph` (module -> modules it imports), or None."""
    state: dict[str, str] = {}

    def visit(node: str, trail: list[str]) -> list[str] | None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return trail[trail.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt, trail + [nxt])):
                return found
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node, [node])):
            return found
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_circle_inside_the_package():
    graph = {}
    for path in package_modules():
        name = module_name(path)
        # Importing a submodule also runs its parent packages' __init__: those edges are not circles.
        graph[name] = {m for m in direct_imports(path) if not name.startswith(m + ".") and m != name}
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


@pytest.mark.parametrize("path", package_modules(), ids=lambda p: p.relative_to(SRC).as_posix())
def test_no_module_is_over_450_lines(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines: split it by job"


def test_every_package_module_is_reachable_from_an_entry_point(dvc_yaml):
    reached = {"cnnbench.cli"} | closure(ROOT / "src" / "cnnbench" / "cli.py")
    for stage in dvc_yaml["stages"].values():
        reached |= closure(ROOT / stage_script(stage))
    unused = sorted(module_name(p) for p in package_modules() if module_name(p) not in reached)
    assert not unused, f"modules no stage or command imports: {', '.join(unused)}"


def test_params_load_without_importing_torch():
    code = ("import sys; from cnnbench.params.config import load_params; load_params('params.yaml'); "
            "print(sorted(m for m in ('torch', 'torchvision') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_module_path_resolves_packages_and_modules():
    assert module_path("cnnbench.data") == SRC / "cnnbench" / "data" / "__init__.py"
    assert module_path("cnnbench.params.config") == SRC / "cnnbench" / "params" / "config.py"
    assert module_path("cnnbench.params.config.ConfigError") is None and module_path("torch") is None


def test_every_evaluate_stage_declares_its_datasets_tta_and_dvc_reads_it(tmp_path):
    """evaluate reads `datasets.<its dataset>.tta`: DVC, resolving dvc.yaml itself, must track that value."""
    from dvc.repo import Repo

    from cnnbench.params.config import load_params

    for name in ("dvc.yaml", "params.yaml"):
        (tmp_path / name).write_bytes((ROOT / name).read_bytes())
    repo = Repo.init(str(tmp_path), no_scm=True)
    params = load_params(tmp_path / "params.yaml")
    for run_name, run in params.runs.items():
        (stage,) = repo.stage.collect(f"evaluate@{run_name}")
        tracked = {}
        for dep in stage.deps:
            if hasattr(dep, "read_params"):
                tracked.update(dep.read_params())
        assert tracked.get(f"datasets.{run.dataset}.tta") == params.dataset(run.dataset).tta, run_name
