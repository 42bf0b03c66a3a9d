"""audit: label quality per image and per class, by confident learning (cleanlab) on out-of-sample predictions.

A linear probe (logistic regression on frozen features, features.py) predicts every image of every
split from K-fold models that never saw it (`cross_val_predict`); cleanlab compares those predicted
probabilities with the given labels. A class whose images the probe keeps assigning elsewhere scores
low: it is noisy, or indistinguishable from another class, which is what `drop_classes` is for.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from threadpoolctl import threadpool_limits

from cnnbench.core.errors import CnnbenchError
from cnnbench.data.arrays import PreparedData
from cnnbench.data.features import choose_features, imagenet_features, pixel_features
from cnnbench.params.config import AuditConfig

# Class pairs listed as most often confused with each other.
MAX_CONFUSED_PAIRS = 20


@dataclass
class AuditResult:
    """The audit JSON, the pixels of its most suspicious images for the sheet, and how long it took.

    The seconds stay out of the JSON: a DVC output must be the same bytes when the data are the same.
    """

    report: dict
    suspicious_pixels: list[np.ndarray] = field(default_factory=list)
    seconds: float = 0.0


def out_of_sample_probs(features: np.ndarray, labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Predicted class probabilities for every image from K-fold logistic regressions that never saw it."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300, C=0.5))
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    return cross_val_predict(probe, features, labels, cv=cv, method="predict_proba", n_jobs=1)


def class_ranking(labels: np.ndarray, probs: np.ndarray, classes: list[str]) -> list[dict]:
    """Every class with cleanlab's label quality and noise, ranked #1 = lowest quality (noisiest)."""
    from cleanlab.dataset import rank_classes_by_label_quality

    table = rank_classes_by_label_quality(labels=labels, pred_probs=probs)
    table = table.sort_values(["Label Quality Score", "Class Index"], kind="stable")
    return [{"class": classes[int(row["Class Index"])], "rank": rank,
             "label_quality": round(float(row["Label Quality Score"]), 4),
             "label_noise": round(float(row["Label Noise"]), 4), "label_issues": int(row["Label Issues"]),
             "images": int(np.count_nonzero(labels == int(row["Class Index"])))}
            for rank, (_, row) in enumerate(table.iterrows(), start=1)]


def confused_pairs(labels: np.ndarray, probs: np.ndarray, classes: list[str]) -> list[dict]:
    """The class pairs cleanlab finds overlapping most (examples it would move between them)."""
    from cleanlab.dataset import find_overlapping_classes

    table = find_overlapping_classes(labels=labels, pred_probs=probs).head(MAX_CONFUSED_PAIRS)
    return [{"classes": [classes[int(row["Class Index A"])], classes[int(row["Class Index B"])]],
             "overlapping_images": int(row["Num Overlapping Examples"]),
             "joint_probability": round(float(row["Joint Probability"]), 5)}
            for _, row in table.iterrows() if int(row["Num Overlapping Examples"]) > 0]


def highlight_ranks(ranking: list[dict], highlight: tuple[str, ...], label: str) -> dict:
    """Where each of report.highlight_classes ranks, and the sentence that says it."""
    rank = {row["class"]: row["rank"] for row in ranking}
    found = sorted((rank[c], c) for c in highlight if c in rank)
    if not found:
        return {"classes": {}, "sentence": ""}
    ranks = ", ".join(f"#{r}" for r, _ in found)
    return {"classes": {c: r for r, c in found},
            "sentence": f"The {len(found)} classes marked '{label}' rank {ranks} of {len(ranking)} by measured "
                        f"label quality (#1 = noisiest)."}


def cleaning_summary(data_report: dict) -> dict:
    """What prepare found and did (its data report), in counts: the audit JSON carries them for the report."""
    near = data_report.get("near_duplicates", {})
    return {"dropped_by_reason": data_report.get("dropped_by_reason", {}),
            "dropped_classes": data_report.get("dropped_classes", {}),
            "near_duplicate_pairs": len(near.get("pairs", [])), "cross_split_pairs": near.get("cross_split", 0),
            "train_copies_removed": near.get("removed", 0),
            "label_conflicts": len(near.get("label_conflicts", [])),
            "near_duplicate_max_distance": near.get("max_distance"),
            "decoded_as_viewer": {key: sum(per_split.values()) if isinstance(per_split, dict) else per_split
                                  for key, per_split in data_report.get("decoded_as_viewer", {}).items()}}


NEAR_CHANCE_FACTOR = 2.0  # a probe under this multiple of the majority-class share is called near chance


def _features(xs: list[np.ndarray], cfg: AuditConfig) -> tuple[str, np.ndarray]:
    """The probe's features of every image, split by split, and their kind (audit.features, or what it chose)."""
    kind = choose_features(cfg.features)
    # One BLAS/OpenMP thread for the small dense algebra of PCA and the probe: measured on digits on a
    # busy 2-core machine, 0.14 s and 0.03 s instead of 6 s and 4 s (threads spin waiting for cores).
    if kind == "imagenet":  # convolutions do use every core: torch keeps its threads
        return kind, imagenet_features(xs)
    with threadpool_limits(1):
        return kind, pixel_features(xs, cfg.pca_dims, cfg.seed)


def audit_dataset(name: str, data: PreparedData, cfg: AuditConfig, highlight: tuple[str, ...] = (),
                  highlight_label: str = "highlighted", data_report: dict | None = None) -> AuditResult:
    """Audit every split of a prepared dataset together; returns the JSON report and the sheet's pixels.

    `data_report` (prepare's) adds its cleaning counts, so one file says what was found and done.
    """
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    started = time.perf_counter()
    names = [s for s in data.splits if len(data.splits[s].y)]
    xs = [data.splits[s].x for s in names]  # features are computed split by split: no copy of the pixels
    labels = np.concatenate([data.splits[s].y for s in names]).astype(np.int64)
    ids = [(s, i) for s in names for i in data.splits[s].ids]
    # Class indices re-numbered over the classes present, as cleanlab needs; names map back.
    present, labels = np.unique(labels, return_inverse=True)
    classes = [data.classes[i] for i in present]
    smallest = int(np.bincount(labels).min()) if len(labels) else 0
    if len(classes) < 2 or smallest < 2:
        raise CnnbenchError(f"audit needs at least 2 classes of at least 2 images each (found {len(classes)} "
                            f"classes, the smallest with {smallest}).")
    folds = min(cfg.folds, smallest)
    kind, features = _features(xs, cfg)
    feature_s = time.perf_counter() - started
    print(f"audit: {kind} features {features.shape} in {feature_s:.1f} s; {folds}-fold probe ...", flush=True)
    with threadpool_limits(1):
        probs = out_of_sample_probs(features, labels, folds, cfg.seed)
    quality = get_label_quality_scores(labels, probs)
    issues = find_label_issues(labels, probs, return_indices_ranked_by="self_confidence")
    likely = probs.argmax(1)
    listed = issues[: cfg.max_listed]
    suspicious = [{"id": ids[i][1], "split": ids[i][0], "given_label": classes[labels[i]],
                   "likely_label": classes[likely[i]], "label_quality": round(float(quality[i]), 4)}
                  for i in listed]
    ranking = class_ranking(labels, probs, classes)
    accuracy, majority = float(np.mean(likely == labels)), float(np.bincount(labels).max() / len(labels))
    report = {
        "dataset": name,
        "images": int(len(labels)), "classes": len(classes),
        "cleaning": cleaning_summary(data_report or {}),
        "features": {"kind": kind, "dims": int(features.shape[1]), "requested": cfg.features},
        "probe": {"model": "logistic regression on standardised features", "folds": folds, "seed": cfg.seed,
                  "out_of_sample_accuracy": round(accuracy, 4), "majority_share": round(majority, 4),
                  # Below twice what always answering the largest class scores, the probe barely beats chance:
                  # its confident errors are mostly its own, and its suspects say little about the labels.
                  "near_chance": accuracy < min(1.0, NEAR_CHANCE_FACTOR * majority)},
        "label_issues": {"count": int(len(issues)), "share": round(len(issues) / len(labels), 4),
                         "listed": suspicious},
        "class_ranking": ranking,
        "highlight": highlight_ranks(ranking, highlight, highlight_label),
        "confused_pairs": confused_pairs(labels, probs, classes),
    }
    where = [(s, j) for s in names for j in range(len(data.splits[s].y))]
    return AuditResult(report, [data.splits[where[i][0]].x[where[i][1]] for i in listed[: cfg.sheet_images]],
                       seconds=time.perf_counter() - started)

