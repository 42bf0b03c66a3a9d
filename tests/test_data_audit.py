"""audit: classes whose labels are interchangeable rank as the noisiest; features never download.

The datasets are built in memory in the prepared format; the stage test writes one to disk and runs
the real stage door on it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

import cnnbench.data.features as features
from cnnbench.core.errors import CnnbenchError
from cnnbench.data.arrays import Prepared, PreparedData, SplitArrays, write_prepared
from cnnbench.data.audit import audit_dataset
from cnnbench.params.config import AuditConfig

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["alpha", "beta", "gamma", "delta", "twin A", "twin B"]


def twin_classes(per_class: int = 40, size: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images of six classes, each a noisy copy of its class's template, except that the two `twin`
    classes share one template: their labels carry no information."""
    rng = np.random.default_rng(seed)
    templates = rng.uniform(40, 215, size=(5, size, size, 3))
    which = [0, 1, 2, 3, 4, 4]  # twin A and twin B: the same distribution
    x = np.concatenate([templates[t] + rng.normal(0, 25, size=(per_class, size, size, 3)) for t in which])
    y = np.repeat(np.arange(len(CLASSES)), per_class)
    return np.clip(x, 0, 255).astype(np.uint8), y


def as_prepared(x: np.ndarray, y: np.ndarray) -> PreparedData:
    """All images in train except every fifth, which is test: the audit pools the splits."""
    test = np.arange(len(y)) % 5 == 0
    splits = {"train": SplitArrays(x[~test], y[~test], [f"train/{i}" for i in np.flatnonzero(~test)]),
              "test": SplitArrays(x[test], y[test], [f"test/{i}" for i in np.flatnonzero(test)])}
    return PreparedData(list(CLASSES), [0.5] * 3, [0.25] * 3, x.shape[1], splits)


def test_two_classes_from_one_distribution_rank_as_the_noisiest():
    x, y = twin_classes()
    result = audit_dataset("twins", as_prepared(x, y), AuditConfig(features="pixels", sheet_images=5),
                           highlight=("twin B", "gamma"), highlight_label="suspected")
    report = result.report
    ranking = report["class_ranking"]
    assert {row["class"] for row in ranking[:2]} == {"twin A", "twin B"}
    assert [row["rank"] for row in ranking] == list(range(1, 7))
    assert ranking[1]["label_quality"] < min(row["label_quality"] for row in ranking[2:])
    assert report["highlight"]["classes"]["twin B"] <= 2 and report["highlight"]["classes"]["gamma"] > 2
    assert report["highlight"]["sentence"].startswith("The 2 classes marked 'suspected' rank #")
    assert report["features"]["kind"] == "pixels" and report["images"] == 240
    suspicious = report["label_issues"]["listed"]
    twins = [{s["given_label"], s["likely_label"]} == {"twin A", "twin B"} for s in suspicious]
    assert twins and all(twins[:10]) and np.mean(twins) >= 0.8, suspicious  # the most suspicious first
    assert report["confused_pairs"][0]["classes"] in (["twin A", "twin B"], ["twin B", "twin A"])
    assert len(result.suspicious_pixels) == min(5, len(suspicious))
    for entry, pixels in zip(suspicious, result.suspicious_pixels):  # each drawn image is the one listed
        assert np.array_equal(pixels, x[int(entry["id"].split("/")[1])])


def test_a_probe_near_chance_is_called_so_in_the_json_and_the_report(tmp_path):
    from cnnbench.report.data_audit import audit_section

    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, size=(240, 16, 16, 3), dtype=np.uint8)  # noise: nothing tells the classes apart
    y = np.repeat(np.arange(len(CLASSES)), 40)
    noise = audit_dataset("noise", as_prepared(x, y), AuditConfig(features="pixels")).report
    assert noise["probe"]["near_chance"] is True and noise["probe"]["majority_share"] == pytest.approx(1 / 6, abs=1e-4)
    assert noise["probe"]["out_of_sample_accuracy"] < 2 / 6
    (tmp_path / "noise_audit.json").write_text(json.dumps(noise))
    text = "\n".join(audit_section("noise", tmp_path, tmp_path))
    assert "**The probe is near chance** (" in text and "its suspects say little about the labels" in text
    informative = audit_dataset("twins", as_prepared(*twin_classes()), AuditConfig(features="pixels")).report
    assert informative["probe"]["near_chance"] is False  # 5 of 6 classes separable: far above chance


def test_features_never_download(monkeypatch):
    monkeypatch.setattr(features, "imagenet_weights_path", lambda: None)
    assert features.choose_features("auto") == "pixels"
    with pytest.raises(CnnbenchError, match="audit.features"):
        features.choose_features("imagenet")


def test_the_stage_writes_the_json_and_its_figures(tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT / "stages"))
    import audit as stage

    x, y = twin_classes(per_class=12)
    prepared = Prepared(list(CLASSES), {"train": x, "val": x[:0], "test": x[:0]},
                        {"train": y, "val": y[:0], "test": y[:0]}, {"train": [str(i) for i in range(len(y))],
                                                                      "val": [], "test": []})
    write_prepared(prepared, tmp_path / "prepared")
    data_report = tmp_path / "reports" / "digits.json"
    data_report.parent.mkdir()
    data_report.write_text(json.dumps({"dropped_by_reason": {"duplicate": 2}}))
    out = tmp_path / "reports" / "digits_audit.json"
    params = tmp_path / "params.yaml"
    params.write_text((ROOT / "params.yaml").read_text().replace("  features: auto", "  features: pixels"))
    args = ["digits", str(tmp_path / "prepared"), str(data_report), str(out), "--params", str(params)]
    outputs = [out, out.parent / "digits_suspicious_labels.png", out.parent / "digits_class_ranking.png"]
    assert stage.main(args) == 0
    first = [path.read_bytes() for path in outputs]
    assert stage.main(args) == 0  # the same data give the same bytes: DVC sees no change
    assert [path.read_bytes() for path in outputs] == first
    report = json.loads(first[0])
    assert report["dataset"] == "digits" and report["features"] == {"kind": "pixels", "dims": 88, "requested": "pixels"}
    assert report["cleaning"]["dropped_by_reason"] == {"duplicate": 2}
    for name in ("digits_suspicious_labels.png", "digits_class_ranking.png"):
        assert (out.parent / name).stat().st_size > 0


def test_imagenet_features_come_from_the_hub_cache(tmp_path, monkeypatch):
    """A state dict where torch.hub caches ResNet18's weights is found and used (random weights: no download)."""
    import torch
    from torchvision.models import ResNet18_Weights, resnet18

    assert ResNet18_Weights.IMAGENET1K_V1.url.endswith("/" + features.IMAGENET_WEIGHTS_FILE)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert features.choose_features("auto") == "pixels"
    cached = tmp_path / "hub" / "checkpoints" / features.IMAGENET_WEIGHTS_FILE
    cached.parent.mkdir(parents=True)
    torch.save(resnet18().state_dict(), cached)
    assert features.choose_features("auto") == "imagenet"
    x, _ = twin_classes(per_class=1)
    assert features.imagenet_features([x[:4], x[4:]], batch_size=4).shape == (6, 512)
