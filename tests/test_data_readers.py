"""readers: every raw format is read into items, or refused with one line; nothing in a file runs as code.

The CIFAR-10 batches are pickles, so an archive fetched without an md5 could hold any code: these tests
plant such pickles and wrong layouts in the real tarball format (tests/fixtures.py) and run the real
prepare stage on them.
"""

from __future__ import annotations

import pickle
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

import cnnbench.data.readers as readers_module
from cnnbench.cli import stage_main
from cnnbench.core.errors import CnnbenchError, DataError
from cnnbench.data.fetch import MANIFEST, fetch_source
from cnnbench.data.prepare import prepare_dataset
from cnnbench.data.readers import read_source
from cnnbench.params.config import DatasetConfig, SourceConfig
from fixtures import make_cifar10_tarball

ROOT = Path(__file__).resolve().parents[1]


def fetched(path: Path, fmt: str, raw_dir: Path) -> Path:
    """`path` fetched as a source of format `fmt` with no md5 (as params allow): what prepare reads."""
    fetch_source(SourceConfig(name="src", uri=str(path), format=fmt), raw_dir)
    return raw_dir


def run_prepare_stage(project: Path, raw_dir: Path) -> subprocess.CompletedProcess:
    """The real `stages/prepare.py` on `raw_dir`, in its own process, as DVC runs it."""
    repo_params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params = {"sources": {"src": {"uri": "https://unused.invalid/x.tgz", "md5": None, "format": "cifar10-python"}},
              "datasets": {"ds": {"source": "src", "image_size": 32}},
              "models": {"resnet18": repo_params["models"]["resnet18"]}}  # params need one model; any will do
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    args = [sys.executable, str(ROOT / "stages" / "prepare.py"), "ds", str(raw_dir), str(project / "prepared"),
            str(project / "report.json"), "--params", str(project / "params.yaml")]
    return subprocess.run(args, cwd=project, capture_output=True, text=True, timeout=300)


def assert_exit_2_with_one_line(result: subprocess.CompletedProcess, *expected: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for text in expected:
        assert text in lines[0], result.stderr


def stage_door(capsys, call) -> tuple[int, str]:
    """What a stage's door makes of `call`: (exit status, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        stage_main(lambda argv: call(), [])
    return exit_info.value.code, capsys.readouterr().err


class RunsCode:
    """Unpickling this creates `path`: what a malicious pickle does, harmlessly."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return open, (str(self.path), "w")


# ------------------------------------------------------------------ CIFAR-10 python batches


@pytest.fixture(scope="module")
def cifar10(tmp_path_factory):
    """The CIFAR-10 fixture tarball, fetched: (what it holds, raw_dir)."""
    root = tmp_path_factory.mktemp("cifar")
    fx = make_cifar10_tarball(root)
    return fx, fetched(fx.path, "cifar10-python", root / "raw")


@pytest.mark.parametrize("member", ["batches.meta", "data_batch_3"])
def test_a_cifar10_pickle_that_would_run_code_runs_nothing_and_exits_2(tmp_path, member):
    marker = tmp_path / "pwned"
    malicious = {b"label_names": RunsCode(marker), b"data": RunsCode(marker), b"labels": [0]}
    fx = make_cifar10_tarball(tmp_path / "src", replace={member: pickle.dumps(malicious, protocol=2)})
    result = run_prepare_stage(tmp_path, fetched(fx.path, "cifar10-python", tmp_path / "raw"))
    assert not marker.exists()
    assert_exit_2_with_one_line(result, f"{member}: refused to unpickle the global io.open")
    assert not (tmp_path / "prepared").exists()


def test_cifar10_batches_pickled_by_numpy_1_or_2_both_load(tmp_path, cifar10):
    fx, _ = cifar10
    with tarfile.open(fx.path) as tar:
        published = tar.extractfile("cifar-10-batches-py/data_batch_1").read()
    assert b"cnumpy.core.multiarray\n_reconstruct" in published  # the fixture pickles as published
    repickled = pickle.dumps(pickle.loads(published, encoding="bytes"), protocol=2)  # numpy._core on numpy 2
    again = make_cifar10_tarball(tmp_path / "src", replace={"data_batch_1": repickled})
    items = read_source(fetched(again.path, "cifar10-python", tmp_path / "raw")).items
    np.testing.assert_array_equal(items[0].payload, fx.train_x[0])


@pytest.mark.parametrize("member, content, message", [
    ("batches.meta", {b"num_vis": 3072}, "batches.meta: no `label_names`"),
    ("batches.meta", [b"airplane"], "batches.meta: no `label_names`"),
    ("data_batch_2", {b"labels": [0] * 20}, "data_batch_2: `data` must be a uint8 array of shape (N, 3072), "
                                            "found NoneType"),
    ("data_batch_2", {b"data": np.zeros((20, 1024), np.uint8), b"labels": [0] * 20}, "found uint8 (20, 1024)"),
    ("data_batch_2", {b"data": np.zeros((20, 3072), np.float32), b"labels": [0] * 20}, "found float32 (20, 3072)"),
    ("test_batch", {b"data": np.zeros((20, 3072), np.uint8)},
     "test_batch: `labels` must be 20 class indices in 0..9"),
    ("test_batch", {b"data": np.zeros((20, 3072), np.uint8), b"labels": [0] * 19}, "`labels` must be 20"),
    ("test_batch", {b"data": np.zeros((20, 3072), np.uint8), b"labels": [10] * 20}, "in 0..9"),
    ("test_batch", {b"data": np.zeros((20, 3072), np.uint8), b"labels": [[0], [1, 2]] * 10}, "in 0..9"),
    ("data_batch_5", b"\x80\x02}q\x00(X", "data_batch_5: not a CIFAR-10 pickle"),
    ("data_batch_5", b"not a pickle at all", "data_batch_5: not a CIFAR-10 pickle"),
], ids=["meta-no-label_names", "meta-a-list", "no-data", "data-wrong-shape", "data-float", "no-labels",
        "labels-too-few", "label-out-of-range", "labels-ragged", "truncated-pickle", "not-a-pickle"])
def test_cifar10_batches_not_in_the_published_layout_exit_2(tmp_path, capsys, member, content, message):
    payload = content if isinstance(content, bytes) else pickle.dumps(content, protocol=2)
    fx = make_cifar10_tarball(tmp_path / "src", replace={member: payload})
    raw = fetched(fx.path, "cifar10-python", tmp_path / "raw")
    with pytest.raises(DataError, match=f"^{re.escape(str(raw / fx.path.name))}: {member}: "):
        read_source(raw)
    code, err = stage_door(capsys, lambda: prepare_dataset(DatasetConfig("ds", "src", 32, 0.0, 0.0, 0, ()), raw))
    assert code == 2 and err.count("\n") == 1 and message in err, err


def test_an_oversized_cifar10_member_is_not_read(tmp_path, cifar10, monkeypatch):
    monkeypatch.setattr(readers_module, "MAX_BATCH_BYTES", 1000)
    with pytest.raises(DataError, match=r"data_batch_1: [\d,]+ bytes, more than any CIFAR-10 batch \(limit 1,000\)"):
        read_source(cifar10[1])


# ------------------------------------------------------------------ the wrong kind of file, or none


@pytest.fixture(scope="module")
def wrong_files(tmp_path_factory, cifar10):
    """One file of each kind a source could hold by mistake: {kind: path}."""
    root = tmp_path_factory.mktemp("wrong")
    with zipfile.ZipFile(root / "plain.zip", "w") as zf:
        zf.writestr("readme.txt", "hello")
    np.savez(root / "arrays.npz", images=np.zeros((2, 8, 8), np.uint8), labels=np.zeros(2, np.int64),
             classes=np.array(["a"]))
    (root / "garbage.bin").write_bytes(b"<html>Please sign in</html>")
    return {"zip": root / "plain.zip", "npz": root / "arrays.npz", "tar.gz": cifar10[0].path,
            "garbage": root / "garbage.bin"}


@pytest.mark.parametrize("fmt, kind", [("npz", "zip"), ("npz", "garbage"), ("npz", "tar.gz"),
                                       ("cifar10-python", "zip"), ("cifar10-python", "npz"),
                                       ("cifar10-python", "garbage"), ("image-csv", "zip"), ("image-csv", "npz")])
def test_a_reader_given_the_wrong_kind_of_file_exits_2(wrong_files, tmp_path, capsys, fmt, kind):
    raw = fetched(wrong_files[kind], fmt, tmp_path / "raw")
    with pytest.raises(DataError, match=f"^{re.escape(str(raw / wrong_files[kind].name))}: "):
        read_source(raw)
    code, err = stage_door(capsys, lambda: read_source(raw))
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: "), err


@pytest.mark.parametrize("arrays, message", [
    ({"images": np.zeros((2, 8, 8), np.float32)}, "`images` must be uint8 (N, H, W) or (N, H, W, 3), found float32"),
    ({"images": np.zeros((2, 8, 8, 4), np.uint8)}, "found uint8 (2, 8, 8, 4)"),
    ({"labels": np.array([0, 2])}, "`labels` must be 2 class indices in 0..1"),
    ({"labels": np.array([0])}, "`labels` must be 2 class indices"),
    ({"labels": np.array([0.0, 1.0])}, "`labels` must be 2 class indices"),
])
def test_an_npz_not_in_the_documented_layout_is_a_data_error(tmp_path, arrays, message):
    good = {"images": np.zeros((2, 8, 8), np.uint8), "labels": np.array([0, 1]), "classes": np.array(["a", "b"])}
    np.savez(tmp_path / "arrays.npz", **{**good, **arrays})
    with pytest.raises(DataError, match=re.escape(message)):
        read_source(fetched(tmp_path / "arrays.npz", "npz", tmp_path / "raw"))


def test_prepare_stage_on_a_damaged_source_json_exits_2(tmp_path, cifar10):
    raw = tmp_path / "raw"
    fetched(cifar10[0].path, "cifar10-python", raw)
    (raw / MANIFEST).write_text('{"uri": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "form')
    result = run_prepare_stage(tmp_path, raw)
    assert_exit_2_with_one_line(result, f"{raw / MANIFEST}: unreadable JSON", "re-run the stage that writes it")


def test_read_source_before_fetch_says_so(tmp_path):
    with pytest.raises(CnnbenchError, match="run its fetch stage first"):
        read_source(tmp_path)
