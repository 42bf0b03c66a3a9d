"""Where a run's replicates live: one `seed<k>` directory per seed inside each of its output dirs.

Train writes `<live_dir>/seed<k>/`, evaluate `<eval_dir>/seed<k>/`; the report and the gate read
them back here, one replicate per seed, named after the run (`<run>/seed<k>` when it has several).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


def replicate_dir(seed: int) -> str:
    """The directory name of one seed's outputs inside a run's directories: `seed0`, `seed1`, ..."""
    return f"seed{seed}"


@dataclass(frozen=True)
class Replicate:
    """One seed of one run, as the train and evaluate stages left it under a suite's runs dir."""

    name: str        # the run, or `<run>/seed<k>` when the run has several seeds
    run: str
    seed_dir: str
    train_dir: Path
    eval_dir: Path


def find_replicates(runs_dir: str | Path) -> list[Replicate]:
    """Every seed directory of every run under `runs_dir/<run>/{train,eval}/`, in name order."""
    runs_dir = Path(runs_dir)
    out = []
    for run_dir in sorted(p for p in runs_dir.iterdir() if p.is_dir()) if runs_dir.is_dir() else []:
        seeds = sorted({p.name for part in ("train", "eval") for p in (run_dir / part).glob("seed*") if p.is_dir()},
                       key=lambda s: (len(s), s))
        for seed in seeds:
            name = run_dir.name if len(seeds) == 1 else f"{run_dir.name}/{seed}"
            out.append(Replicate(name, run_dir.name, seed, run_dir / "train" / seed, run_dir / "eval" / seed))
    return out
