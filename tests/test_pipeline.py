"""The DVC experience end to end, on a copy of this project with a tiny offline suite.

`dvc repro` builds the report; a second `dvc repro` does nothing; a run's param change re-runs
only that run and the report; `dvc push`/`dvc pull` round-trip through a directory remote.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fixtures import dvc, pipeline_project

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow



@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """This project's pipeline and code in a fresh git+DVC repo, with two tiny digits runs."""
    run = {"suite": "offline", "dataset": "digits", "model": "tiny",
           "train": {"epochs": 2, "batch_size": 128, "lr": 0.1, "augment": {"pad": 1, "flip": False}}}
    repo = pipeline_project(tmp_path_factory.mktemp("project"),
                            {"digits-a": run, "digits-b": {**run, "train": {**run["train"], "seed": 1}}},
                            {"offline": {"dir": "reports", "data": "reports/data/digits_audit.json"}}, link_cache=True)
    dvc(repo, "repro", "report@offline")
    return repo


def test_repro_builds_the_report_and_the_metrics(project):
    readme = (project / "reports" / "README.md").read_text()
    assert "digits" in readme and "digits-a" in readme
    metrics = json.loads((project / "reports" / "metrics.json").read_text())
    assert set(metrics) == {"digits-a", "digits-b"}
    assert 0.0 <= metrics["digits-a"]["test_top1"] <= 1.0
    assert (project / "reports" / "data" / "digits.json").is_file()
    assert "### Data audit of digits" in readme  # audit@digits ran offline, and the report shows it
    assert (project / "reports" / "runs" / "offline" / "digits-a" / "eval" / "seed0" / "predictions.csv").is_file()
    # DVCLive must not have written a dvc.yaml of its own anywhere.
    assert not list((project / "reports").rglob("dvc.yaml"))


def test_second_repro_does_nothing(project):
    out = dvc(project, "repro", "report@offline").stdout
    assert "didn't change, skipping" in out or "Data and pipelines are up to date" in out
    assert "Running stage" not in out


def test_make_targets_scope_dvc_to_one_suite_and_say_so(project, tmp_path):
    """`make status`, `make checkout` and `make metrics-diff` run DVC's everyday commands on one suite and its
    upstream, with one line saying the other suites are left out; an unknown suite is one clear line."""
    clone = tmp_path / "clone"  # the results committed, as in this repository (the module's project has none)
    shutil.copytree(project, clone, symlinks=True)
    for name in ("Makefile", "requirements.lock", "pyproject.toml"):
        shutil.copy(ROOT / name, clone / name)
    subprocess.run(["git", "add", "-A"], cwd=clone, check=True)
    subprocess.run(["git", "commit", "-qm", "results"], cwd=clone, check=True)
    venv = Path(sys.prefix)  # the virtualenv running the tests, whose bin/ holds dvc

    def make(*args: str) -> subprocess.CompletedProcess:
        # -o setup: the environment is this one; the recipe under test is the target's own
        return subprocess.run(["make", "-s", "-o", "setup", f"VENV={venv}", *args], cwd=clone,
                              capture_output=True, text=True, timeout=300)

    note = "suite offline and its upstream only: the other suites' stages are left out (docs/pipeline.md)"
    status = make("status")
    assert status.returncode == 0, status.stderr
    assert status.stdout.splitlines() == [note, "Data and pipelines are up to date."]
    checkout = make("checkout")
    assert checkout.returncode == 0, checkout.stderr
    diff = make("metrics-diff")  # nothing changed since the commit: the note alone, no warning
    assert diff.returncode == 0 and diff.stdout.splitlines() == [note] and diff.stderr == ""
    unknown = make("metrics-diff", "SUITE=nosuch")
    assert unknown.returncode != 0
    assert "make: no suite nosuch in params.yaml (suites: offline)" in unknown.stderr
    assert "Traceback" not in unknown.stderr


# One module per stage: editing it must make exactly that stage (and what follows it) stale.
EDITS = {"fetch@digits": "src/cnnbench/data/fetch.py", "prepare@digits": "src/cnnbench/data/prepare.py",
         "train@digits-a": "src/cnnbench/training/loop.py", "evaluate@digits-a": "src/cnnbench/training/checkpoint.py",
         "report@offline": "src/cnnbench/core/files.py"}


@pytest.mark.parametrize("stage, module", EDITS.items(), ids=list(EDITS))
def test_editing_a_module_a_stage_runs_makes_dvc_status_report_it(project, stage, module):
    path = project / module
    original = path.read_bytes()
    try:
        path.write_bytes(original + b"\n# an edit\n")
        status = json.loads(dvc(project, "status", stage, "--json").stdout)
    finally:
        path.write_bytes(original)
    changed = [entry["changed deps"] for entry in status.get(stage, []) if "changed deps" in entry]
    assert changed and changed[0].get(module) == "modified", status
    assert json.loads(dvc(project, "status", stage, "--json").stdout) == {}


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def test_a_queued_experiment_runs_the_code_it_was_queued_with(project):
    """Queue with one version of the report code, edit the working copy, run the queue: the queued code ran."""
    git(project, "add", "-A")
    git(project, "commit", "-qm", "results")
    module = next(p for p in (project / "src").rglob("*.py") if "do not edit by hand" in p.read_text())
    original = module.read_text()
    try:
        module.write_text(original.replace("do not edit by hand", "do not edit by hand (QUEUED-CODE)"))
        dvc(project, "exp", "run", "--queue", "-n", "queued-code", "report@offline")
        module.write_text(original.replace("do not edit by hand", "do not edit by hand (EDITED-CODE)"))
        out = dvc(project, "exp", "run", "--run-all", "-j", "1")
        ref = next(line.split()[1] for line in git(project, "show-ref").splitlines() if "queued-code" in line)
        readme = git(project, "show", f"{ref}:reports/README.md")
    finally:
        module.write_text(original)
    assert "QUEUED-CODE" in readme and "EDITED-CODE" not in readme, out.stdout + out.stderr


def test_param_change_reruns_only_that_run_and_the_report(project):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["runs"]["digits-b"]["train"]["epochs"] = 3
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = dvc(project, "status", "--with-deps", "report@offline", "--json").stdout
    # What changed (evaluate reads the run's seeds, so its params changed too); the report follows them.
    assert set(json.loads(status)) == {"train@digits-b", "evaluate@digits-b"}
    out = dvc(project, "repro", "report@offline").stdout
    ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}
    assert ran == {"train@digits-b", "evaluate@digits-b", "report@offline"}


def test_plots_show_writes_html(project):
    out = dvc(project, "plots", "show", "-o", "plots_html")
    html = project / "plots_html" / "index.html"
    assert html.is_file(), out.stdout
    text = html.read_text()
    # One plot per curve with every run of the suite overlaid, not one plot per run's file; the plots are the
    # report stage's, declared for each suite of params.yaml (the title names it).
    assert "Validation accuracy per epoch (offline suite)" in text
    assert "Training loss per epoch (offline suite)" in text
    assert "digits-a" in text and "digits-b" in text
    assert "DVC failed to load" not in out.stdout + out.stderr  # every plot this project declares exists


def test_cnnbench_plots_page_renders_every_plot_with_no_network(project, vega_cache, tmp_path):
    env = {**os.environ, "XDG_CACHE_HOME": str(vega_cache)}
    done = subprocess.run([sys.executable, "-m", "cnnbench.cli", "plots", "--out", str(tmp_path / "page")],
                          cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    page = tmp_path / "page" / "index.html"
    assert done.stdout.strip() == f"{page} (offline; opens with no network)"
    html = page.read_text()
    # Outside the inline scripts, nothing the browser would load: no src, no stylesheet, no remote href.
    markup = re.sub(r"<script[^>]*>[\s\S]*?</script>", "", html)
    assert not re.search(r"\bsrc\s*=|<link\b|@import|url\(|href\s*=\s*[\"']?(https?:)?//", markup), markup
    # Run as a browser would (node, no network): the libraries define themselves and each plot renders.
    shown = subprocess.run(["node", str(ROOT / "tests" / "render_plots_page.js"), str(page)],
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    result = json.loads(shown.stdout)
    assert result["defined"] == ["vega", "vegaLite", "vegaEmbed"] and result["requests"] == []
    plots = {plot["title"]: plot for plot in result["plots"]}
    assert set(plots) == {"Validation accuracy per epoch (offline suite)", "Training loss per epoch (offline suite)"}
    runs = yaml.safe_load((project / "params.yaml").read_text())["runs"]  # an earlier test may change epochs
    for plot in plots.values():
        assert plot["rows"] == sum(run["train"]["epochs"] for run in runs.values())  # a row per run and epoch
        assert {"digits-a", "digits-b"} <= set(plot["text"])  # the legend names every run, whole


def test_push_and_pull_through_a_directory_remote(project, tmp_path):
    remote = tmp_path / "remote"
    dvc(project, "remote", "add", "-d", "shared", str(remote))
    dvc(project, "push", "--with-deps", "report@offline")
    assert any(remote.rglob("*")), "dvc push wrote nothing to the remote"
    # A teammate's machine: no cache, no data; `dvc pull` brings back checkpoints and arrays.
    shutil.rmtree(project / ".dvc" / "cache")
    shutil.rmtree(project / "data")
    dvc(project, "pull", "--with-deps", "report@offline")
    assert (project / "data" / "runs" / "digits-a" / "seed0" / "best.pt").is_file()
    assert (project / "data" / "prepared" / "digits" / "train_x.npy").is_file()
    out = dvc(project, "status", "--with-deps", "report@offline").stdout
    assert "up to date" in out, out


def test_a_failing_train_stage_keeps_the_previous_results(project):
    """DVC deletes a stage's outputs before running it; a run that fails must not take its old results along."""
    live = project / "reports" / "runs" / "offline" / "digits-a" / "train" / "seed0"
    before = {p: p.read_bytes() for p in live.rglob("*") if p.is_file()}
    params_path = project / "params.yaml"
    original = params_path.read_text()
    params = yaml.safe_load(original)
    params["runs"]["digits-a"]["train"]["epochs"] = -1
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        failed = dvc(project, "repro", "--single-item", "train@digits-a", check=False)
    finally:
        params_path.write_text(original)
    assert failed.returncode != 0 and "runs.digits-a.train.epochs: must be in 1..10000" in failed.stderr + failed.stdout
    assert before and {p: p.read_bytes() for p in live.rglob("*") if p.is_file()} == before
    assert (project / "data" / "runs" / "digits-a" / "seed0" / "best.pt").is_file()


def test_going_back_to_the_committed_lock_keeps_every_checkpoint(project):
    """A clone that retrains locally and then checks out the committed dvc.lock loses no checkpoint:
    a seeded CPU run reproduces the committed bytes, so the cache holds what the lock names."""
    dvc(project, "repro", "report@offline")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "committed results")
    shutil.rmtree(project / ".dvc" / "cache")
    shutil.rmtree(project / "data")
    dvc(project, "repro", "report@offline")  # a fresh machine trains everything again
    git(project, "checkout", "HEAD", "--", "dvc.lock")
    dvc(project, "checkout", "--with-deps", "report@offline")  # the stages this clone runs
    for run in ("digits-a", "digits-b"):
        [seed_dir] = (project / "data" / "runs" / run).glob("seed*")
        assert {p.name for p in seed_dir.iterdir()} >= {"best.pt", "last.pt"}
    # The checkpoints and prepared arrays match the committed lock; only wall-clock logs (git-tracked,
    # `cache: false`) differ from the committed ones.
    status = dvc(project, "status", "--with-deps", "report@offline").stdout
    assert "data/runs" not in status and "data/prepared" not in status, status


def _train_lines(out: str) -> list[str]:
    """The lines of trained epochs, each naming its run and seed: `digits-b seed 2  epoch   1/2  train loss ...`."""
    return [line for line in out.splitlines() if re.match(r"\S+ seed \d+  epoch +\d+/\d+  train loss", line)]


def test_adding_a_seed_trains_exactly_one_new_model_and_removing_it_retrains_nothing(project):
    params_path = project / "params.yaml"
    original = params_path.read_text()
    params = yaml.safe_load(original)
    epochs = params["runs"]["digits-b"]["train"]["epochs"]
    seed1 = project / "data" / "runs" / "digits-b" / "seed1" / "best.pt"
    before = seed1.stat().st_mtime_ns
    try:
        params["runs"]["digits-b"]["seeds"] = [1, 2]
        params_path.write_text(yaml.safe_dump(params, sort_keys=False))
        added = dvc(project, "repro", "train@digits-b").stdout
        assert len(_train_lines(added)) == epochs, added  # one model's epochs: seed 2's, and they say so
        assert all(line.startswith("digits-b seed 2  epoch ") for line in _train_lines(added)), added
        assert "seed1: already trained with these params, data and code" in added
        assert seed1.stat().st_mtime_ns == before
        assert (project / "data" / "runs" / "digits-b" / "seed2" / "best.pt").is_file()

        params["runs"]["digits-b"]["seeds"] = [1]
        params_path.write_text(yaml.safe_dump(params, sort_keys=False))
        removed = dvc(project, "repro", "train@digits-b").stdout
        assert _train_lines(removed) == [], removed
        assert not (project / "data" / "runs" / "digits-b" / "seed2").exists()
        assert not (project / "reports" / "runs" / "offline" / "digits-b" / "train" / "seed2").exists()
    finally:
        params_path.write_text(original)
        dvc(project, "repro", "report@offline")


def test_two_gloo_ranks_train_two_seeds_in_one_stage_through_dvc(project):
    """launch.nproc_per_node: 2 on the CPU: DVC's train stage reruns itself under torchrun, and its two ranks
    train both seeds in one session (one process group for the stage, ended once after the last seed)."""
    params_path = project / "params.yaml"
    original = params_path.read_text()
    params = yaml.safe_load(original)
    params["launch"]["nproc_per_node"] = 2
    params["runs"]["digits-b"]["seeds"] = [1, 2]
    try:
        params_path.write_text(yaml.safe_dump(params, sort_keys=False))
        out = dvc(project, "repro", "train@digits-b").stdout
        epochs = params["runs"]["digits-b"]["train"]["epochs"]
        lines = _train_lines(out)
        assert len(lines) == 2 * epochs, out  # rank 0 alone prints, each seed's epochs once
        assert sum(line.startswith("digits-b seed 2  ") for line in lines) == epochs, out
        for seed in (1, 2):
            live = project / "reports" / "runs" / "offline" / "digits-b" / "train" / f"seed{seed}"
            metrics = json.loads((live / "metrics.json").read_text())
            assert metrics["world_size"] == 2 and metrics["ranks_in_sync"] is True and metrics["epochs"] == epochs
    finally:
        params_path.write_text(original)
        dvc(project, "repro", "report@offline")
