"""`cnnbench compare`: every run of a suite now, against the same run at a git revision or a DVC experiment.

"Did my change help?" After an edit and `dvc repro`, or `dvc exp run -S ...`, each run's test predictions
in the working tree are compared, image by image, with that run's predictions at the baseline: the two
recipes over training seeds and test images (stats.recipe_difference, the report's own rule), with the
verdicts Holm-corrected over the runs compared. A run whose predictions did not change (DVC did not
retrain it) is "unchanged" and not tested; a run evaluated on other test images is not compared.

The predictions are git-tracked (dvc.yaml: the eval outputs are `cache: false`), so a revision's are read
from git itself: `git archive` of the suite's runs folder, its regular files only, extracted by this module
(never by tarfile's extractall). An experiment's name resolves to its ref under refs/exps.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
import textwrap
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from cnnbench.core.errors import CnnbenchError
from cnnbench.evaluation.stats import GREATER, LESS, MIN_SEEDS, UNDECIDED, holm, pooled_noise, recipe_difference
from cnnbench.report.compare import VERDICT_RULE_DOC, Outcomes, pair_row, run_outcomes, verdict_words
from cnnbench.report.results import WIDTH, text_table
from cnnbench.report.runs import RunsData, load_runs
from cnnbench.report.tables import fmt, points

MAX_ARCHIVE_BYTES = 2 << 30  # a runs folder is predictions and curves: far below this


@dataclass(frozen=True)
class Baseline:
    """The revision compared against: what the user named and the commit it is."""

    name: str
    commit: str


def git(repo: Path, *args: str, binary: bool = False):
    proc = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=not binary)
    if proc.returncode != 0:
        err = proc.stderr if not binary else proc.stderr.decode(errors="replace")
        raise CnnbenchError(f"git {' '.join(args[:2])}: {err.strip().splitlines()[-1] if err.strip() else 'failed'}")
    return proc.stdout


def resolve(repo: Path, name: str) -> Baseline:
    """A git revision (HEAD~1, a branch, a tag, a commit) or a DVC experiment's name, as a commit."""
    if name.startswith("-"):
        raise CnnbenchError(f"compare: {name!r} is not a revision")
    found = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{name}^{{commit}}"], cwd=repo,
                           capture_output=True, text=True)
    if found.returncode == 0:
        return Baseline(name, found.stdout.strip())
    refs = git(repo, "for-each-ref", "--format=%(refname) %(objectname)", "refs/exps").split("\n")
    matches = [line.split()[1] for line in refs if line and line.split()[0].rsplit("/", 1)[-1] == name]
    if len(matches) == 1:
        return Baseline(name, matches[0])
    if len(matches) > 1:
        raise CnnbenchError(f"compare: {len(matches)} experiments are named {name!r}; give one's commit instead")
    raise CnnbenchError(f"compare: {name!r} is neither a git revision nor a DVC experiment of this repository "
                        "(`git log`, `dvc exp show` list them)")


def runs_at(repo: Path, baseline: Baseline, runs_dir: Path, into: Path) -> Path:
    """`runs_dir` (inside `repo`) as committed at the baseline, written under `into`; returns that copy."""
    relative = PurePosixPath(Path(runs_dir).resolve().relative_to(Path(repo).resolve()).as_posix())
    listed = git(repo, "ls-tree", "-d", "--name-only", baseline.commit, "--", str(relative)).strip()
    if not listed:
        raise CnnbenchError(f"compare: {baseline.name} holds no {relative}/ (no run of this suite was committed "
                            "there)")
    data = git(repo, "archive", "--format=tar", baseline.commit, "--", str(relative), binary=True)
    if len(data) > MAX_ARCHIVE_BYTES:
        raise CnnbenchError(f"compare: {relative}/ at {baseline.name} is {len(data):,} bytes, more than a runs "
                            "folder holds")
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        for member in archive.getmembers():
            path = PurePosixPath(member.name)
            if not member.isfile() or path.is_absolute() or ".." in path.parts:
                continue  # folders are made as needed; links and anything else are never written
            target = into.joinpath(*path.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(archive.extractfile(member).read())
    return into.joinpath(*relative.parts)


def compare_with_baseline(now: RunsData, then: RunsData) -> pd.DataFrame:
    """One row per run in either: its status, and for the runs compared the difference now − then and verdict."""
    outcomes = {side: {run: run_outcomes(data.predictions, run) for run in sorted(set(data.runs["run"]))}
                for side, data in (("now", now), ("then", then))}
    rows, tested = [], []
    for run in sorted(set(outcomes["now"]) | set(outcomes["then"])):
        a, b = outcomes["now"].get(run), outcomes["then"].get(run)
        row = {"run": run, "top1_now": _mean(a), "top1_then": _mean(b), "seeds_now": _seeds(a), "seeds_then": _seeds(b)}
        if run not in outcomes["then"] or run not in outcomes["now"]:
            rows.append({**row, "status": "new" if run not in outcomes["then"] else "gone"})
        elif a is None or b is None:
            rows.append({**row, "status": f"not evaluated {'now' if a is None else 'then'}"})
        elif a.ids != b.ids:
            rows.append({**row, "status": "test images differ: not compared"})
        elif a.seeds == b.seeds and np.array_equal(a.correct, b.correct):
            rows.append({**row, "status": "unchanged"})
        else:
            ids = a.ids
            noise = pooled_noise([(f"{o.run}@{side}", o.correct) for side in ("now", "then")
                                  for o in outcomes[side].values() if o is not None and o.ids == ids])
            tested.append(len(rows))
            rows.append({**row, "status": "compared", "diff_obj": recipe_difference(a.correct, b.correct, noise)})
    adjusted = holm([rows[i]["diff_obj"].pvalue for i in tested])
    for i, p in zip(tested, adjusted):
        diff = rows[i].pop("diff_obj")
        rows[i].update(pair_row(rows[i]["run"], rows[i]["run"], diff, p))
    return pd.DataFrame(rows)


def format_comparison(table: pd.DataFrame, baseline: Baseline) -> str:
    """The comparison as text at most 120 columns wide, and the lines that say what was compared."""
    header = ("run", "seeds", "top-1 now", "then", "now − then", "95 % interval", "verdict")
    lines = []
    for _, r in table.iterrows():
        compared = r["status"] == "compared"
        interval = f"{points(r['low'])} … {points(r['high'])}" if compared and not np.isnan(r["low"]) else ""
        lines.append((r["run"], f"{r['seeds_now']} vs {r['seeds_then']}",
                      fmt(r["top1_now"], kind="pct"), fmt(r["top1_then"], kind="pct"),
                      points(r["diff"]) if compared else "", interval,
                      _verdict(r) if compared else r["status"]))
    text = text_table(header, lines)
    compared = table[table["status"] == "compared"] if len(table) else table
    where = f"Now: the working tree. Then: {baseline.name} ({baseline.commit[:10]})."
    if not len(compared):
        said = f"{where} No run's test predictions differ between the two: nothing to test."
    else:
        decided = int((compared["verdict"] != UNDECIDED).sum())
        said = (f"{where} Each run's recipe now against the same run then, over training seeds and the "
                f"{int(compared['images'].max()):,} test images (the report's rule, {VERDICT_RULE_DOC}): "
                f"better or worse only when its Holm-adjusted p-value over the {decided} decided "
                f"run{'s' if decided != 1 else ''} is under 0.05; undecided with fewer than {MIN_SEEDS} seeds a "
                "side. Unchanged runs (the same predictions) are not tested.")
    return "\n".join([*text, "", textwrap.fill(said, WIDTH)])


def compare_revision(repo: Path, runs_dir: Path, name: str, scratch: Path) -> tuple[pd.DataFrame, Baseline]:
    """The working tree's runs in `runs_dir` against the same folder at revision or experiment `name`."""
    baseline = resolve(repo, name)
    now = load_runs(runs_dir)
    if not len(now.runs):
        raise CnnbenchError(f"compare: {runs_dir} holds no run; run the suite first (`dvc repro report@<suite>`)")
    then = load_runs(runs_at(repo, baseline, runs_dir, scratch))
    return compare_with_baseline(now, then), baseline


def _verdict(row) -> str:
    if row["verdict"] == GREATER:
        return "better"
    if row["verdict"] == LESS:
        return "worse"
    return verdict_words(row)


def _mean(outcomes: Outcomes | None) -> float:
    return float(outcomes.correct.mean()) if outcomes is not None else float("nan")


def _seeds(outcomes: Outcomes | None) -> int:
    return len(outcomes.seeds) if outcomes is not None else 0
