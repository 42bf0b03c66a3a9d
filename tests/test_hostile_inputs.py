"""The threat model, input by input: what a hostile but fair user can hand cnnbench, and what it does.

Trusted: the code, dvc.yaml, and params.yaml (which is code: docs/trust.md). Refused with
one line and exit 2, before it runs, escapes or allocates: names and paths in params.yaml that could
reach a shell or leave the repository; sources that are not regular files or folders of their own;
zips, CSVs, pickles, YAML and checkpoints whose declared sizes no dataset or model has; sizes past
the bounds in config.py; a gate fed values no run can have. Each test below is one finding of the
second hardening probe (issue 20): the input, the command, the one-line message, nothing written
outside the expected outputs.
"""

from __future__ import annotations

import copy
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from cnnbench.core.errors import CnnbenchError, ConfigError, DataError, FetchError
from cnnbench.core.files import exclusive_lock
from cnnbench.data.fetch import fetch_source, read_manifest
from cnnbench.data.readers import read_image_csv, read_source
from cnnbench.evaluation.gate import check_metrics
from cnnbench.evaluation.predict import predict_files
from cnnbench.models.build import build_model
from cnnbench.models.specs import parse_model_spec, spec_to_dict
from cnnbench.params.config import CheckConfig, SourceConfig, load_params, parse_params
from cnnbench.report.tables import md_text
from cnnbench.training.checkpoint import ModelCheckpoint, save_checkpoint
from fixtures import TINY_RESNET, dvc, make_cifar10_tarball, make_kaggle_tree, serve_directory, zip_tree

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def params_with(**changes) -> dict:
    """The project's params.yaml as data, with dotted-path `changes` applied (`runs__x` style keys unused)."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for dotted, value in changes.items():
        *path, last = dotted.split(".")
        node = raw
        for key in path:
            node = node[key]
        node[last] = value
    return raw


def cli(*args: str, cwd: Path = ROOT, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([PYTHON, "-m", "cnnbench.cli", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    """The single `error: ...` line a refused input must produce, with exit 2 and no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


# ============================================================ 1. params.yaml values reaching a shell


def test_every_value_dvc_interpolates_into_a_command_is_single_quoted():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        cmd = stage["do"]["cmd"]
        assert cmd.startswith("exec python stages/"), f"{name}: {cmd}"  # exec: the stage is DVC's own child
        unquoted = re.sub(r"'[^']*'", "", cmd)
        assert "${" not in unquoted, f"{name}: an interpolated value outside single quotes: {cmd}"


@pytest.mark.parametrize("section, name", [
    ("runs", "x$(touch /tmp/pwned)"), ("runs", "a;b"), ("sources", "../up"), ("suites", "-rf"),
    ("datasets", "with space"), ("models", "x'y"), ("runs", "..")])
def test_a_name_that_is_not_an_identifier_is_refused_at_load(section, name):
    raw = params_with()
    table = raw[section]
    table[name] = copy.deepcopy(table[next(iter(table))])
    with pytest.raises(ConfigError, match=r"^params: " + section + r": .* is not a valid name \(a name is 1-100 of"):
        parse_params(raw)


@pytest.mark.parametrize("key, value", [
    ("dir", "reports; touch /tmp/pwned"), ("dir", "../outside"), ("dir", "/tmp/elsewhere"), ("dir", "."),
    ("dir", "src"), ("dir", "reports/../.."), ("data", "reports/data/$(id)"), ("data", "/etc/passwd")])
def test_a_suite_path_outside_reports_or_with_shell_syntax_is_refused(key, value):
    raw = params_with(**{f"suites.offline.{key}": value})
    with pytest.raises(ConfigError, match=rf"^params: suites.offline.{key}: must be reports or a folder under "):
        parse_params(raw)


@pytest.fixture(scope="module")
def dvc_project(tmp_path_factory) -> Path:
    """This project's pipeline and code in a fresh git+DVC repo (nothing run)."""
    repo = tmp_path_factory.mktemp("hostile")
    for name in ("dvc.yaml", ".dvcignore", "params.yaml"):
        shutil.copy(ROOT / name, repo / name)
    shutil.copytree(ROOT / "stages", repo / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "src", repo / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for args in (["git", "init", "-q"], [PYTHON, "-m", "dvc", "init", "-q"]):
        subprocess.run(args, cwd=repo, check=True)
    # The deps DVC checks exist before it runs a stage's command (their content does not matter here).
    for folder in ("data/prepared/digits", "reports/runs/offline", "reports/data"):
        (repo / folder).mkdir(parents=True)
        (repo / folder / "placeholder").write_text("x")
    (repo / "reports/data/digits_audit.json").write_text("{}")
    return repo


@pytest.mark.slow
def test_dvc_repro_of_a_run_named_as_a_command_substitution_runs_no_command(dvc_project, tmp_path):
    pwned = tmp_path / "pwned"
    raw = yaml.safe_load((dvc_project / "params.yaml").read_text())
    name = f"x$(touch {pwned})"
    raw["runs"][name] = copy.deepcopy(raw["runs"]["digits-resnet18"])
    (dvc_project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    proc = dvc(dvc_project, "repro", "--single-item", f"train@{name}", check=False, timeout=300)
    assert not pwned.exists(), "the shell ran a command from a params.yaml name"
    assert proc.returncode != 0
    assert "is not a valid name" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_dvc_repro_of_a_suite_dir_holding_a_command_runs_no_command(dvc_project, tmp_path):
    pwned = tmp_path / "pwned"
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["suites"]["offline"]["dir"] = f"reports; touch {pwned}; echo"
    (dvc_project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    proc = dvc(dvc_project, "repro", "--single-item", "report@offline", check=False, timeout=300)
    assert not pwned.exists(), "the shell ran a command from suites.offline.dir"
    assert proc.returncode != 0
    assert not list(dvc_project.parent.glob("outside*"))


# ============================================================ 2. escapes from a source folder


def test_a_directory_source_never_follows_a_symlink_and_lists_what_it_left_out(tmp_path):
    fx = make_kaggle_tree(tmp_path / "tree")
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n")
    (fx.root / "train" / "ADONIS" / "x.jpg").symlink_to(secret)
    (fx.root / "linked_dir").symlink_to(tmp_path, target_is_directory=True)  # a loop, if followed
    os.mkfifo(fx.root / "train" / "ADONIS" / "pipe.jpg")
    raw = tmp_path / "raw"
    fetch_source(SourceConfig(name="src", uri=str(fx.root), format="image-csv"), raw)
    with zipfile.ZipFile(raw / "archive.zip") as zf:
        names = zf.namelist()
        assert not any(b"root:x:0:0" in zf.read(n) for n in names)
    assert "train/ADONIS/x.jpg" not in names and "train/ADONIS/pipe.jpg" not in names
    assert not any(n.startswith("linked_dir") for n in names)
    reasons = {entry["id"]: entry["reason"] for entry in read_manifest(raw)["skipped"]}
    assert reasons == {"train/ADONIS/x.jpg": "symbolic link: not followed", "linked_dir": "symbolic link: not followed",
                       "train/ADONIS/pipe.jpg": "special file (device, FIFO or socket): not read"}
    skipped = {entry["id"]: entry["reason"] for entry in read_source(raw).skipped}
    assert skipped["train/ADONIS/x.jpg"] == "symbolic link: not followed"  # in the data report with the rest


@pytest.mark.parametrize("uri", ["/dev/zero", "fifo"])
def test_a_source_that_is_a_device_or_a_fifo_is_refused_at_once(tmp_path, uri):
    if uri == "fifo":
        uri = str(tmp_path / "fifo.zip")
        os.mkfifo(uri)
    started = time.monotonic()
    with pytest.raises(FetchError, match="not a regular file or a directory"):
        fetch_source(SourceConfig(name="src", uri=uri, format="image-csv"), tmp_path / "raw")
    assert time.monotonic() - started < 5
    assert not (tmp_path / "raw").exists()


def test_a_source_folder_that_holds_the_pipeline_outputs_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "raw").mkdir(parents=True)
    with pytest.raises(FetchError, match="holds the pipeline's own outputs"):
        fetch_source(SourceConfig(name="src", uri=str(tmp_path), format="image-folder"), tmp_path / "data/raw/src")
    assert sorted(p.name for p in (tmp_path / "data" / "raw").iterdir()) == []


# ============================================================ 3. readers that would hang or exhaust memory


def overlapping_zip(path: Path, members: int = 400) -> Path:
    """A zip whose central directory points `members` entries at one deflated run (the overlapping-file bomb)."""
    payload = b"\0" * (4 << 20)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("bomb/0.jpg", payload)
    data = path.read_bytes()
    end = data.rindex(b"PK\x05\x06")
    cd_size = int.from_bytes(data[end + 12:end + 16], "little")
    cd_offset = int.from_bytes(data[end + 16:end + 20], "little")
    entry = data[cd_offset:cd_offset + cd_size]
    entries = b"".join(entry.replace(b"bomb/0.jpg", f"b{i:04d}/.jpg".encode()) for i in range(members))  # same length
    eocd = bytearray(data[end:end + 22])
    eocd[8:10] = eocd[10:12] = members.to_bytes(2, "little")
    eocd[12:16] = len(entries).to_bytes(4, "little")
    path.write_bytes(data[:cd_offset] + entries + bytes(eocd))
    return path


def test_a_zip_of_overlapping_members_is_refused_before_it_is_read(tmp_path):
    bomb = overlapping_zip(tmp_path / "bomb.zip")
    started = time.monotonic()
    with pytest.raises(FetchError, match=r"refused before reading it: members .* overlap"):
        fetch_source(SourceConfig(name="src", uri=str(bomb), format="image-folder"), tmp_path / "raw")
    assert time.monotonic() - started < 5
    assert not (tmp_path / "raw").exists()


def test_a_zip_naming_one_member_twice_is_refused(tmp_path):
    path = tmp_path / "twice.zip"
    with zipfile.ZipFile(path, "w") as zf, pytest.warns(UserWarning, match="Duplicate name"):
        zf.writestr("cat/a.png", b"1")
        zf.writestr("cat/a.png", b"2")
    with pytest.raises(FetchError, match="the member name 'cat/a.png' appears twice"):
        fetch_source(SourceConfig(name="src", uri=str(path), format="image-folder"), tmp_path / "raw")


def test_a_kaggle_csv_larger_than_any_image_list_is_refused_before_reading(tmp_path):
    fx = make_kaggle_tree(tmp_path / "tree")
    csv_path = next(fx.root.glob("*.csv"))
    with open(csv_path, "a") as fh:
        fh.write("\n" * (65 << 20))  # 65 MB of newlines: 65 KB zipped
    archive = zip_tree(fx.root, tmp_path / "big.zip")
    assert archive.stat().st_size < 1 << 20
    with pytest.raises(DataError, match=r"declares 68,\d{3},\d{3} bytes, more than the limit of 67,108,864"):
        read_image_csv(archive)


def test_cifar_labels_of_nested_shared_lists_are_refused_before_numpy(tmp_path):
    labels = [0, 1]
    for _ in range(30):  # 2**31 leaves from a few hundred bytes of pickle
        labels = [labels, labels]
    batch = {b"batch_label": b"x", b"labels": labels, b"data": np.zeros((20, 3072), np.uint8), b"filenames": []}
    crafted = pickle.dumps(batch, protocol=2).replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
    fx = make_cifar10_tarball(tmp_path, replace={"data_batch_2": crafted})
    raw = tmp_path / "raw"
    fetch_source(SourceConfig(name="src", uri=str(fx.path), format="cifar10-python"), raw)
    with pytest.raises(DataError, match=r"data_batch_2: `labels` must be 20 class indices in 0..9"):
        read_source(raw)


def test_a_billion_laughs_params_yaml_is_refused_without_expanding(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]  # 10^9 leaves
    lines += ["sources: *a8"]
    path = tmp_path / "params.yaml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=r"not valid YAML: its aliases expand it to 2,345,679,021 values, more "
                                          r"than the limit of 2,000,000") as err:
        load_params(path)
    assert "\n" not in str(err.value)


def test_aliases_within_the_bound_load_as_their_expansion(tmp_path):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    run = raw["runs"]["digits-resnet18"]
    raw["runs"]["digits-twin"] = run  # yaml writes the shared mapping once, with an anchor, and an alias
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert "*id001" in path.read_text()
    assert load_params(path).run("digits-twin").train == load_params(path).run("digits-resnet18").train


def test_a_validation_message_quotes_a_huge_value_in_a_few_characters():
    raw = params_with(**{"train.epochs": ["x" * 10_000] * 10_000})
    with pytest.raises(ConfigError) as err:
        parse_params(raw)
    assert str(err.value).startswith("params: train.epochs: must be an integer, not [")
    assert len(str(err.value)) < 400  # of a value whose repr is 100 MB


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    spec = parse_model_spec("tiny", TINY_RESNET)
    torch.manual_seed(0)
    model = build_model(spec, num_classes=3, image_size=8)
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    return save_checkpoint(ModelCheckpoint(weights=model.state_dict(), spec=spec_to_dict(spec), run="tiny",
                                           dataset="d", classes=["a", "b", "c"], image_size=8, mean=[0.5] * 3,
                                           std=[0.25] * 3, epoch=1, val_acc=None), path)


@pytest.mark.parametrize("change, message", [
    ({"image_size": 100_000}, "image_size must be an integer in 4..1024"),
    ({"classes": [str(i) for i in range(100_001)]}, "classes must be a list of 1..100,000 names"),
    ({"spec": {**TINY_RESNET, "widths": [8, 1_000_000]}}, r"widths: must be a list of 1..128 integers in 1..8192"),
])
def test_a_crafted_checkpoint_describing_a_huge_model_is_refused_before_building(checkpoint, tmp_path, change,
                                                                                 message):
    data = torch.load(checkpoint, weights_only=True)
    data.update(change)
    crafted = tmp_path / "best.pt"
    torch.save(data, crafted)
    proc = cli("predict", str(crafted), str(checkpoint))  # any file: the checkpoint is refused first
    assert re.search(message, one_line_error(proc))


@pytest.mark.parametrize("target", ["/dev/zero", "fifo", "directory"])
def test_predict_refuses_what_is_not_a_regular_file_at_once(checkpoint, tmp_path, target):
    if target == "fifo":
        target = str(tmp_path / "photo.jpg")
        os.mkfifo(target)
    elif target == "directory":
        target = str(tmp_path)
    started = time.monotonic()
    (result,) = predict_files(str(checkpoint), [target], runs_dir=tmp_path, device="cpu")
    assert time.monotonic() - started < 5
    assert result.error.startswith("not a regular file") and result.top == []


def test_predict_scores_every_file_in_bounded_batches(checkpoint, tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(7):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    (tmp_path / "broken.png").write_bytes(b"not a png")
    paths.insert(3, str(tmp_path / "broken.png"))
    batched = predict_files(str(checkpoint), paths, runs_dir=tmp_path, device="cpu", batch_size=3)
    whole = predict_files(str(checkpoint), paths, runs_dir=tmp_path, device="cpu", batch_size=100)
    assert [r.path for r in batched] == paths
    assert [bool(r.error) for r in batched] == [p.endswith("broken.png") for p in paths]
    for a, b in zip(batched, whole):
        assert [name for name, _ in a.top] == [name for name, _ in b.top]
        assert np.allclose([p for _, p in a.top], [p for _, p in b.top], atol=1e-5)


# ============================================================ 4. sizes past their bounds


@pytest.mark.parametrize("dotted, value, message", [
    ("datasets.digits.image_size", 100_000, "datasets.digits.image_size: must be in 4..1024"),
    ("evaluate.inference_cpu_batch", 1_000_000, "evaluate.inference_cpu_batch: must be in 1..65536"),
    ("launch.nproc_per_node", 100_000, "launch.nproc_per_node: must be in 1..1024"),
    ("runs.digits-resnet18.seeds", [2**64], "runs.digits-resnet18.seeds: must be integers in 0..4294967295"),
    ("train.batch_size", 10**9, "train.batch_size: must be in 1..65536"),
    ("train.lr", float("inf"), "train.lr: must be a finite number > 0"),
    ("runs.digits-resnet18.train", {"augment": {"pad": 16}},
     r"runs.digits-resnet18.train.augment.pad: must be smaller than datasets.digits.image_size \(16\)"),
    ("models.resnet18.widths", [64, 128, 256, 10**6], "models.resnet18.widths: must be a list of 1..128 integers"),
    ("check.metrics", ["test_top1", "latency_made_up"], "check.metrics\\[1\\]: 'latency_made_up' is not a metric"),
    ("sources.cifar10.uri", "http://example.com/cifar.tar.gz", None),
])
def test_a_size_past_its_bound_is_refused_at_load_with_the_bound(dotted, value, message):
    raw = params_with(**{dotted: value})
    if dotted == "sources.cifar10.uri":
        raw["sources"]["cifar10"]["md5"] = None
        message = r"sources.cifar10.uri: is plain http:// with no md5: neither TLS nor a checksum"
    with pytest.raises(ConfigError, match=message):
        parse_params(raw)


def test_plain_http_without_md5_is_accepted_only_when_declared_and_then_recorded(tmp_path):
    fx = make_cifar10_tarball(tmp_path / "served")
    with serve_directory(fx.path.parent) as base:
        raw = params_with(**{"sources.cifar10.uri": f"{base}/{fx.path.name}", "sources.cifar10.md5": None,
                             "sources.cifar10.unverified_http": True})
        fetch_source(parse_params(raw).source("cifar10"), tmp_path / "raw")
    assert read_manifest(tmp_path / "raw")["unverified"] == ("no md5: the download's content is not checked and it "
                                                             "came over plain http (no TLS)")
    assert read_source(tmp_path / "raw").description.endswith("(UNVERIFIED: no md5: the download's content is not "
                                                               "checked and it came over plain http (no TLS))")


def test_cost_threads_past_the_cpus_is_a_usage_error_not_a_crash():
    proc = cli("cost", "resnet18", "--threads", "1000000")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert re.search(r"--threads: must be an integer in 1\.\.\d+ \(the CPUs this process may use\)", proc.stderr)


# ============================================================ 5. the gate fed values no run can have


@pytest.fixture
def gate(tmp_path) -> dict:
    """A suite of one run and seed, its metrics set by the test, and a baseline file path."""
    def write(metrics: dict, baseline: dict, gated=("test_top1",)) -> tuple[bool, str]:
        seed = tmp_path / "runs" / "r" / "eval" / "seed0"
        seed.mkdir(parents=True, exist_ok=True)
        (seed / "metrics.json").write_text(json.dumps(metrics))
        (tmp_path / "baseline.json").write_text(json.dumps({"suite": "offline", "metrics": {"r": baseline}}))
        return check_metrics(CheckConfig(metrics=tuple(gated)), tmp_path / "runs", tmp_path / "baseline.json")
    return {"run": write}


def test_a_baseline_of_minus_infinity_is_refused(gate):
    with pytest.raises(CnnbenchError, match=r"r.test_top1 is -inf, not a value that metric can take"):
        gate["run"]({"test_top1": 0.9}, {"test_top1": float("-inf")})


@pytest.mark.parametrize("value", [1e308, float("nan"), 1.5, -0.1])
def test_an_accuracy_that_no_run_can_have_fails_the_gate(gate, value):
    passed, text = gate["run"]({"test_top1": value}, {"test_top1": 0.9})
    assert not passed and "BAD" in text


def test_a_lower_is_better_metric_that_rises_fails_the_gate(gate):
    passed, text = gate["run"]({"test_loss": 0.50}, {"test_loss": 0.10}, gated=("test_loss",))
    assert not passed and "RISE" in text and "check-metrics: 0 ok, 1 failed" in text
    passed, text = gate["run"]({"test_loss": 0.05}, {"test_loss": 0.10}, gated=("test_loss",))
    assert passed, text  # lower is better: a fall is no regression


# ============================================================ 6. text from the data in the report


def test_a_class_name_cannot_format_or_inject_into_the_report():
    name = "<script>alert(1)</script>\n# Heading [link](http://x) *bold* | cell"
    text = md_text(name)
    assert "\n" not in text and "<" not in text and ">" not in text
    assert text == (r"&lt;script&gt;alert\(1\)&lt;/script&gt; \# Heading \[link\]\(http://x\) \*bold\* \| cell")


# ============================================================ 7. failures of the machine, told in one line


def test_a_metrics_file_nested_too_deep_is_one_line_not_a_traceback(tmp_path):
    seed = tmp_path / "reports" / "runs" / "offline" / "r" / "eval" / "seed0"
    seed.mkdir(parents=True)
    (seed / "metrics.json").write_text("[" * 100_000 + "]" * 100_000)
    (tmp_path / "reports" / "baseline.json").write_text('{"suite": "offline", "metrics": {"r": {"test_top1": 0.9}}}')
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    proc = cli("check-metrics", cwd=tmp_path)
    assert one_line_error(proc) == (f"error: {Path('reports/runs/offline/r/eval/seed0/metrics.json')}: JSON nested too "
                                    f"deep to read; re-run the stage that writes it.")


@pytest.mark.parametrize("raised, message", [
    ("MemoryError()", "error: out of memory (Python's allocator failed)"),
    ("RuntimeError('DefaultCPUAllocator: not enough memory: you tried to allocate 1 bytes')", "error: out of memory: "),
    ("OSError(28, 'No space left on device', 'data/runs/x/last.pt')",
     "error: data/runs/x/last.pt: No space left on device"),
    ("RecursionError('maximum recursion depth exceeded')", "error: a structure nested too deep"),
])
def test_the_stage_door_tells_a_failure_of_the_machine_in_one_line(raised, message):
    code = (f"import sys; sys.path.insert(0, {str(ROOT / 'src')!r})\n"
            f"from cnnbench.core.entry_point import stage_main\n"
            f"def main(argv):\n    raise {raised}\n"
            f"stage_main(main)\n")
    proc = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=60)
    assert one_line_error(proc).startswith(message)


# ============================================================ 8. two writers of one run


def test_a_second_trainer_of_the_same_run_directory_is_refused(tmp_path):
    run_dir = tmp_path / "data" / "runs" / "digits-resnet18"
    with exclusive_lock(run_dir, "trainer"):
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        proc = subprocess.run([PYTHON, str(ROOT / "stages" / "train.py"), "digits-resnet18", str(tmp_path / "none"),
                               str(run_dir), str(tmp_path / "live"), "--params", str(ROOT / "params.yaml")],
                              capture_output=True, text=True, env=env, timeout=120)
    assert one_line_error(proc).startswith(f"error: {run_dir}: another trainer is already running on it")
    assert sorted(p.name for p in run_dir.iterdir()) == []


def test_a_stage_dies_with_the_process_that_started_it(tmp_path):
    pid_file = tmp_path / "stage.pid"
    stage = (f"import os, sys, time; sys.path.insert(0, {str(ROOT / 'src')!r})\n"
             f"from cnnbench.core.entry_point import stage_main\n"
             f"def main(argv):\n    open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(120)\n"
             f"stage_main(main, die_with_parent=True)\n")
    launcher = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {stage!r}])"
    parent = subprocess.Popen([PYTHON, "-c", launcher])
    deadline = time.monotonic() + 60
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.1)
    child = int(pid_file.read_text())
    parent.send_signal(signal.SIGKILL)  # as when `dvc repro` is killed
    parent.wait()
    deadline = time.monotonic() + 5
    while _alive(child):
        assert time.monotonic() < deadline, "the stage outlived its parent"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[-1][0] != "Z"
    except FileNotFoundError:
        return False


def test_reading_a_zip_from_a_remote_checks_its_directory_too(tmp_path):
    bomb = overlapping_zip(tmp_path / "archive.zip")
    raw = tmp_path / "raw"
    raw.mkdir()
    shutil.copy(bomb, raw / "archive.zip")
    (raw / "source.json").write_text('{"format": "image-folder", "file": "archive.zip"}')
    with pytest.raises(DataError, match="overlap"):
        read_source(raw)


def test_nothing_above_wrote_into_the_repository():
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "--", "data", "reports"],
                            cwd=ROOT, capture_output=True, text=True).stdout
    assert "outside" not in status and "pwned" not in status
    assert not (ROOT.parent / "outside").exists()


def test_a_worker_forked_by_a_stage_ends_by_sigterm_as_any_process_does():
    """multiprocessing.Pool.terminate() SIGTERMs its workers. A worker that inherited the door's handler must die
    of the signal, not unwind Python code."""
    code = (f"import sys; sys.path.insert(0, {str(ROOT / 'src')!r})\n"
            "import multiprocessing, os, signal, time\n"
            "from cnnbench.core.entry_point import stage_main\n"
            "def main(argv):\n"
            "    child = multiprocessing.get_context('fork').Process(target=time.sleep, args=(60,))\n"
            "    child.start(); time.sleep(0.5); os.kill(child.pid, signal.SIGTERM); child.join(20)\n"
            "    print(child.exitcode)\n"
            "stage_main(main)\n")
    proc = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{-signal.SIGTERM}\n", proc.stdout + proc.stderr  # killed by the signal, no traceback
    assert "Traceback" not in proc.stderr


def test_a_forked_worker_starts_with_sigterm_default_and_unblocked_and_its_parent_keeps_its_mask():
    """The door's SIGTERM handler is Python's, and a fork clears a pending Python signal: a worker must begin with
    the kernel's default action, so a SIGTERM that reaches it at any moment kills it."""
    code = (f"import sys; sys.path.insert(0, {str(ROOT / 'src')!r})\n"
            "import os, signal\n"
            "from cnnbench.core.entry_point import stage_main\n"
            "def main(argv):\n"
            "    r, w = os.pipe()\n"
            "    pid = os.fork()\n"
            "    if pid == 0:\n"
            "        state = (signal.getsignal(signal.SIGTERM) == signal.SIG_DFL,\n"
            "                 signal.SIGTERM in signal.pthread_sigmask(signal.SIG_BLOCK, []))\n"
            "        os.write(w, repr(state).encode()); os._exit(0)\n"
            "    os.waitpid(pid, 0)\n"
            "    print(os.read(r, 100).decode(), signal.SIGTERM in signal.pthread_sigmask(signal.SIG_BLOCK, []),\n"
            "          signal.getsignal(signal.SIGTERM).__name__)\n"
            "stage_main(main)\n")
    proc = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "(True, False) False _terminate\n"


def test_a_stage_that_opens_and_closes_pools_never_hangs():
    """`with Pool() as p:` SIGTERMs its workers on exit, however far they got. With the door's handler inherited
    by the workers, one SIGTERMed right after its fork lost the signal and waited forever for a lock its parent
    held: 2 runs in 5 of 1,000 pools hung on this 2-core machine, and the audit stage (cleanlab's pool) about
    one run in 50 under load. 2,000 pools here, about 16 s."""
    code = (f"import sys; sys.path.insert(0, {str(ROOT / 'src')!r})\n"
            "import multiprocessing, operator\n"
            "from cnnbench.core.entry_point import stage_main\n"
            "def main(argv):\n"
            "    for _ in range(2000):\n"
            "        with multiprocessing.get_context('fork').Pool(2) as pool:\n"
            "            assert pool.map(operator.neg, range(4)) == [0, -1, -2, -3]\n"
            "    print('done')\n"
            "stage_main(main)\n")
    proc = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=300)
    assert (proc.returncode, proc.stdout) == (0, "done\n"), proc.stderr
