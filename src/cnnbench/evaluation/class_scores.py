"""Per-image class probabilities of one evaluation: `evaluate` writes them, the report reads them.

Stored as eval/scores.npz (no pickle): `ids` (N,) in test order, as in predictions.csv; `classes`
(C,) in the model's output order; `probs` (N, C) float16. float16 keeps three significant digits,
plenty to score a model on a subset of its classes (argmax over those columns), at half the size
of float32; near-ties of the argmax may differ from predictions.csv's fp32 one.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnbench.core.errors import CnnbenchError
from cnnbench.core.files import atomic_path

SCORES = "scores.npz"


@dataclass(frozen=True)
class ClassScores:
    """Probabilities of every class (columns, in `classes` order) for every test image (rows, `ids`)."""

    ids: np.ndarray
    classes: np.ndarray
    probs: np.ndarray

    def restricted_predictions(self, classes: list[str]) -> np.ndarray:
        """The class names the model predicts when only `classes` may be answered (argmax over their columns)."""
        where = {str(c): i for i, c in enumerate(self.classes)}
        missing = [c for c in classes if c not in where]
        if missing:
            raise CnnbenchError(f"scores have no column for class {missing[0]!r}; re-run the evaluate stage.")
        columns = [where[c] for c in classes]
        return np.asarray(classes)[self.probs[:, columns].argmax(axis=1)]


def save_scores(path: str | Path, ids, classes, probs: np.ndarray) -> Path:
    """Write a scores file atomically (compressed, no pickled objects)."""
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez_compressed(tmp, ids=np.asarray(ids, dtype=str), classes=np.asarray(classes, dtype=str),
                            probs=np.asarray(probs, dtype=np.float16))
    return Path(path)


def load_scores(path: str | Path) -> ClassScores | None:
    """The scores file at `path`; None when absent, a clear error when it is not one."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            scores = ClassScores(data["ids"], data["classes"], data["probs"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        raise CnnbenchError(f"{path}: not a scores file ({err}); re-run the evaluate stage.") from None
    if scores.probs.shape != (len(scores.ids), len(scores.classes)):
        raise CnnbenchError(f"{path}: probs are {scores.probs.shape}, not (images, classes) = "
                            f"({len(scores.ids)}, {len(scores.classes)}); re-run the evaluate stage.")
    return scores
