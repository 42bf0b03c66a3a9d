"""`cnnbench results` (a suite in the terminal) and `cnnbench compare` (each run now against the same run at a git
revision or a DVC experiment): what a user reads after a run, and after a change."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from cnnbench.report.revisions import Baseline, runs_at
from fixtures import run_cnnbench
from report_fixtures import DIGITS, make_suite, write_run


def commit(repo: Path, message: str) -> str:
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", "commit", "-qm", message], cwd=repo, check=True)
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()


def digits_run(runs: Path, run: str, seeds, top1: float) -> None:
    """A digits run with `top1` of its 400 test images right for every seed (which ones: seeded by run and seed)."""
    for seed in seeds:
        write_run(runs, run, "digits", "resnet18", seed, None, DIGITS, 0.95, top1, 2.0, True)


@pytest.fixture
def repo(tmp_path, monkeypatch) -> Path:
    """A git repository holding a suite's runs, committed once; the working directory is the repository."""
    root = tmp_path / "repo"
    runs = root / "reports" / "runs" / "demo"
    runs.mkdir(parents=True)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run(["git", "config", "user.email", "t@example.com"], cwd=root, check=True)
    subprocess.run(["git", "config", "user.name", "t"], cwd=root, check=True)
    digits_run(runs, "digits-same", (0, 1, 2), 0.95)
    digits_run(runs, "digits-reseeded", (0, 1, 2), 0.95)
    digits_run(runs, "digits-broken", (0, 1, 2), 0.95)
    digits_run(runs, "digits-dropped", (0, 1, 2), 0.95)
    commit(root, "baseline")
    monkeypatch.chdir(root)
    return root


def changed(repo: Path) -> None:
    """After a change: one run untouched, one retrained under other seeds (A/A), one much worse, one gone, one new."""
    runs = repo / "reports" / "runs" / "demo"
    for run in ("digits-reseeded", "digits-broken", "digits-dropped"):
        subprocess.run(["git", "rm", "-rq", str(runs / run)], cwd=repo, check=True)
    digits_run(runs, "digits-reseeded", (3, 4, 5), 0.95)
    digits_run(runs, "digits-broken", (0, 1, 2), 0.80)
    digits_run(runs, "digits-added", (0, 1, 2), 0.95)


def rows_of(out: str) -> dict[str, str]:
    return {line.split()[0]: line for line in out.splitlines() if line.startswith("digits-")}


def test_compare_answers_did_my_change_help_run_by_run(repo, capsys):
    changed(repo)
    code, out, err = run_cnnbench(capsys, "compare", "--runs-dir", "reports/runs/demo")
    assert code == 0, err
    assert max(len(line) for line in out.splitlines()) <= 120
    rows = rows_of(out)
    assert rows["digits-same"].endswith("unchanged")
    assert rows["digits-reseeded"].endswith("within noise")  # the same recipe under other seeds: an A/A pair
    assert rows["digits-broken"].split()[1:6] == ["3", "vs", "3", "80.00", "95.00"]
    assert rows["digits-broken"].endswith("worse") and "−15.0" in rows["digits-broken"]
    assert rows["digits-added"].endswith("new") and rows["digits-dropped"].endswith("gone")
    assert "over the 2 decided runs is under 0.05" in " ".join(out.split())


def test_compare_against_an_experiment_by_name_and_as_json(repo, capsys):
    first = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    changed(repo)
    commit(repo, "the change")
    subprocess.run(["git", "update-ref", "refs/exps/ab/cdef/bushy-pony", first], cwd=repo, check=True)  # as DVC names
    code, out, err = run_cnnbench(capsys, "compare", "--runs-dir", "reports/runs/demo", "--baseline", "bushy-pony",
                                  "--json")
    assert code == 0, err
    found = json.loads(out)
    assert found["commit"] == first
    runs = {row["run"]: row for row in found["runs"]}
    assert runs["digits-broken"]["verdict"] == "less" and runs["digits-broken"]["diff"] == pytest.approx(-0.15)
    assert runs["digits-broken"]["high"] < 0 and runs["digits-reseeded"]["verdict"] == "within noise"
    assert runs["digits-same"]["status"] == "unchanged" and runs["digits-same"]["diff"] is None


@pytest.mark.parametrize("baseline, message", [
    ("no-such-thing", "'no-such-thing' is neither a git revision nor a DVC experiment of this repository"),
    ("--upload-pack=touch pwned", "is not a revision"),
])
def test_compare_refuses_an_unknown_baseline_in_one_line(repo, capsys, baseline, message):
    code, _, err = run_cnnbench(capsys, "compare", "--runs-dir", "reports/runs/demo", f"--baseline={baseline}")
    assert code == 2 and message in err and "Traceback" not in err
    assert not (repo / "pwned").exists()


def test_compare_with_a_revision_that_holds_no_runs_says_so(repo, capsys):
    (repo / "README").write_text("x")
    first = commit(repo, "runs")
    subprocess.run(["git", "checkout", "-q", "--orphan", "empty"], cwd=repo, check=True)
    subprocess.run(["git", "rm", "-rqf", "reports"], cwd=repo, check=True)
    commit(repo, "no runs")
    subprocess.run(["git", "checkout", "-q", first, "--", "reports"], cwd=repo, check=True)
    code, _, err = run_cnnbench(capsys, "compare", "--runs-dir", "reports/runs/demo", "--baseline", "empty")
    assert code == 2 and "empty holds no reports/runs/demo/" in err


def test_a_link_committed_in_the_runs_folder_is_never_written(repo, tmp_path):
    runs = repo / "reports" / "runs" / "demo"
    os.symlink("/etc/passwd", runs / "digits-same" / "eval" / "seed0" / "escape.csv")
    head = commit(repo, "a link")
    copy = runs_at(repo, Baseline("HEAD", head), runs, tmp_path / "scratch")
    assert (copy / "digits-same" / "eval" / "seed0" / "predictions.csv").is_file()
    assert not os.path.lexists(copy / "digits-same" / "eval" / "seed0" / "escape.csv")


def test_results_prints_the_suite_in_120_columns_with_intervals_and_verdicts(tmp_path, capsys):
    runs = make_suite(tmp_path / "runs")
    digits_run(runs, "digits-resnet18_stem1_l3", (0, 1, 2), 0.97)
    digits_run(runs, "digits-resnet18_stem1_l3-aa", (3, 4, 5), 0.97)
    code, out, err = run_cnnbench(capsys, "results", "--runs-dir", str(runs))
    assert code == 0, err
    assert max(len(line) for line in out.splitlines()) <= 120
    digits = out.split("digits: ", 1)[1].split("\n\n", 2)
    assert digits[0].startswith("5 runs\nrun ")
    stem1 = next(line for line in digits[1].splitlines() if line.startswith("resnet18_stem1_l3  "))
    assert stem1.split()[1:3] == ["resnet18_stem1_l3-aa", "3"] and stem1.endswith("within noise")
    assert any(line.endswith("undecided: needs seeds (about 3 a side)") or "undecided: needs seeds" in line
               for line in digits[1].splitlines())
    code, out, _ = run_cnnbench(capsys, "results", "--runs-dir", str(runs), "--json")
    found = json.loads(out)
    assert {r["run"] for r in found["digits"]["runs"]} >= {"digits-resnet18", "digits-resnet18_stem1_l3-aa"}
    assert {p["verdict"] for p in found["digits"]["pairs"]} >= {"within noise"}


def test_results_of_an_empty_suite_is_one_line(tmp_path, capsys):
    code, _, err = run_cnnbench(capsys, "results", "--runs-dir", str(tmp_path / "nothing"))
    assert code == 2 and err.startswith("error: results: ") and "holds no run yet" in err
