"""image-folder sources: torchvision's ImageFolder layout, read from the zip fetch makes of a directory,
and a class-folder dataset taken through every stage (fetch, prepare, audit, train, evaluate)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from cnnbench.data.fetch import fetch_source
from cnnbench.data.readers import read_source
from cnnbench.params.config import SourceConfig
from fixtures import TINY_RESNET, blob_image, dvc, jpeg_bytes

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["cat", "dog", "owl"]


def class_folders(root: Path, per_class: int = 10, splits: tuple[str, ...] = (), size: int = 48) -> Path:
    """`<class>/<n>.jpg` (or `<split>/<class>/<n>.jpg` per split), each class tinted its own colour, plus junk."""
    rng = np.random.default_rng(0)
    for split in splits or ("",):
        for k, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = blob_image(rng, size, size).astype(np.int16)
                pixels[..., k] = np.clip(pixels[..., k] + 120, 0, 255)  # a class a tiny CNN learns in one epoch
                (folder / f"{i:02d}.jpg").write_bytes(jpeg_bytes(pixels.astype(np.uint8)))
    (root / (splits[0] if splits else "") / CLASSES[0] / "notes.txt").write_text("not an image\n")
    (root / ".DS_Store").write_bytes(b"\x00junk")
    return root


def fetched(tmp_path: Path, tree: Path) -> Path:
    raw = tmp_path / "raw"
    fetch_source(SourceConfig(name="pets", uri=str(tree), format="image-folder"), raw)
    return raw


def test_flat_class_folders_are_all_train(tmp_path):
    source = read_source(fetched(tmp_path, class_folders(tmp_path / "tree", per_class=3)))
    assert source.classes == CLASSES
    assert {item.split for item in source.items} == {"train"} and len(source.items) == 9
    assert {s["reason"].split(":")[0] for s in source.skipped} == {"junk file", "not an image file"}


def test_split_folders_give_the_splits(tmp_path):
    tree = class_folders(tmp_path / "tree", per_class=2, splits=("train", "val", "test"))
    source = read_source(fetched(tmp_path, tree))
    assert sorted({item.split for item in source.items}) == ["test", "train", "val"]
    assert source.classes == CLASSES and len(source.items) == 18


def test_one_enclosing_folder_is_looked_through(tmp_path):
    class_folders(tmp_path / "outer" / "mydata", per_class=2, splits=("train", "valid"))
    source = read_source(fetched(tmp_path, tmp_path / "outer"))
    assert source.classes == CLASSES
    assert sorted({item.split for item in source.items}) == ["train", "val"]


def _stage(name: str):
    spec = importlib.util.spec_from_file_location(f"stage_{name}", ROOT / "stages" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.mark.slow
def test_a_class_folder_dataset_goes_through_every_stage(tmp_path):
    tree = class_folders(tmp_path / "pets", per_class=15)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["sources"], params["local_sources"] = {}, {"pets": {"uri": str(tree), "md5": None, "format": "image-folder"}}
    params["datasets"] = {"pets": {"source": "pets", "image_size": 16, "val_fraction": 0.2, "test_fraction": 0.2,
                                   "split_seed": 0, "drop_classes": []}}
    params["models"] = {"tiny": TINY_RESNET}
    params["runs"] = {"pets-tiny": {"suite": "mine", "dataset": "pets", "model": "tiny",
                                    "train": {"epochs": 1, "batch_size": 16, "lr": 0.05}}}
    params["suites"] = {"mine": {"dir": "reports/mine", "data": "reports/data"}}
    params["claims"], params["check"] = [], {"suite": "mine"}
    params["audit"]["features"] = "pixels"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    p = ["--params", str(tmp_path / "params.yaml")]
    raw, prepared, data = tmp_path / "data/raw/pets", tmp_path / "data/prepared/pets", tmp_path / "reports/data"
    assert _stage("fetch")(["pets", str(raw), *p]) == 0
    assert _stage("prepare")(["pets", str(raw), str(prepared), str(data / "pets.json"), *p, "--workers", "1"]) == 0
    assert _stage("audit")(["pets", str(prepared), str(data / "pets.json"), str(data / "pets_audit.json"), *p]) == 0
    runs, live, out = tmp_path / "data/runs/pets-tiny", tmp_path / "live", tmp_path / "eval"
    assert _stage("train")(["pets-tiny", str(prepared), str(runs), str(live), *p, "--device", "cpu"]) == 0
    assert _stage("evaluate")(["pets-tiny", str(prepared), str(runs), str(out), *p, "--device", "cpu"]) == 0
    report = json.loads((data / "pets.json").read_text())
    assert sum(report["counts"][split]["total"] for split in ("train", "val", "test")) == 45
    assert report["dropped_by_reason"] == {"junk file": 1, "not an image file": 1}
    for sheet in ("pets_samples.png", "pets_near_duplicates.png", "pets_suspicious_labels.png",
                  "pets_class_ranking.png"):
        assert (data / sheet).stat().st_size > 0, sheet
    audit = json.loads((data / "pets_audit.json").read_text())
    assert [row["class"] for row in audit["class_ranking"]] and audit["images"] == 45
    metrics = json.loads(next(out.rglob("metrics.json")).read_text())
    assert 0.0 <= metrics["test_top1"] <= 1.0


@pytest.mark.slow
def test_an_edit_to_a_local_source_folder_reruns_its_fetch_through_dvc(tmp_path):
    """A folder under local_sources: is a DVC dependency of fetch_local: a class folder added to it shows in
    `dvc status` and `dvc repro` brings it into the prepared data (under sources: DVC saw only the path string)."""
    tree = class_folders(tmp_path / "pets", per_class=6)
    repo = tmp_path / "project"
    repo.mkdir()
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(ROOT / name, repo / name)
    for name in ("stages", "src"):
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["sources"], params["local_sources"] = {}, {"pets": {"uri": str(tree), "format": "image-folder"}}
    params["datasets"] = {"pets": {"source": "pets", "image_size": 16, "val_fraction": 0.2, "split_seed": 0,
                                   "near_duplicates": {"max_distance": 0}}}
    params["runs"], params["suites"], params["claims"] = {}, {}, []
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    dvc(repo, "init", "-q")
    dvc(repo, "repro", "prepare@pets")
    assert json.loads((repo / "reports/data/pets.json").read_text())["num_classes"] == 3
    assert "up to date" in dvc(repo, "status", "fetch_local@pets").stdout

    (tree / "bat").mkdir()  # a class added to the folder
    rng = np.random.default_rng(1)
    for i in range(6):
        (tree / "bat" / f"{i:02d}.jpg").write_bytes(jpeg_bytes(blob_image(rng, 48, 48)))
    status = dvc(repo, "status").stdout
    assert "fetch_local@pets:" in status and f"modified:           {tree}" in status, status
    out = dvc(repo, "repro", "prepare@pets").stdout
    assert "Running stage 'fetch_local@pets'" in out and "Running stage 'prepare@pets'" in out, out
    assert json.loads((repo / "reports/data/pets.json").read_text())["num_classes"] == 4
    assert json.loads((repo / "data/prepared/pets/classes.json").read_text()) == ["bat", *CLASSES]
