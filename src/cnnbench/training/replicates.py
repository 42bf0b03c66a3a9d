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
    """One seed of one run, as the stages left it under a suite's runs dir."""

    name: str                    # the run, or `<run>/seed<k>` when the run has several seeds
    run: str
    seed_dir: str                # `seed<k>`
    stage_dirs: dict[str, Path]  # stage (train, eval, ...) -> `<runs_dir>/<run>/<stage>/seed<k>`

    @property
    def train_dir(self) -> Path:
        return self.stage_dirs.get("train", Path())

    @property
    def eval_dir(self) -> Path:
        return self.stage_dirs.get("eval", Path())


def find_replicates(runs_dir: str | Path) -> list[Replicate]:
    """Every seed directory of every run under `runs_dir/<run>/<stage>/`, in name order."""
    runs_dir = Path(runs_dir)
    out = []
    for run_dir in sorted(p for p in runs_dir.iterdir() if p.is_dir()) if runs_dir.is_dir() else []:
        by_seed: dict[str, dict[str, Path]] = {}
        for seed_dir in sorted(run_dir.glob("*/seed*")):
            if seed_dir.is_dir():
                by_seed.setdefault(seed_dir.name, {})[seed_dir.parent.name] = seed_dir
        for seed in sorted(by_seed, key=lambda s: (len(s), s)):
            name = run_dir.name if len(by_seed) == 1 else f"{run_dir.name}/{seed}"
            stages = {"train": run_dir / "train" / seed, "eval": run_dir / "eval" / seed, **by_seed[seed]}
            out.append(Replicate(name, run_dir.name, seed, stages))
    return out
