"""train: reproducible, resumable, DDP-ready training, and the on-device augmentation it feeds on.

Every run here is a 5k-parameter ResNet on the embedded digits at 8x8 (fetched and prepared with the
real pipeline functions), so an epoch takes a fraction of a second on one CPU thread. The stage
itself (`stages/train.py`, torchrun) runs in subprocesses where a kill, an exit code or a second
process is what is tested. Nothing asserts on timings: other jobs share this machine.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import cnnbench.training.fingerprint as fingerprint_module
import cnnbench.training.loop as train_module
import cnnbench.training.precision as precision_module
import cnnbench.training.resume as resume_module
import cnnbench.training.session as session_module
from cnnbench.core.errors import CnnbenchError
from cnnbench.data.arrays import write_prepared
from cnnbench.data.datasets import batches, random_crop_padded, random_flip, random_resized_crop
from cnnbench.data.fetch import fetch_source
from cnnbench.data.prepare import prepare_dataset
from cnnbench.evaluation.predict import load_model
from cnnbench.models.build import build_model
from cnnbench.models.specs import parse_model_spec
from cnnbench.models.summary import summarize, summarize_spec
from cnnbench.params.config import RunConfig, TrainConfig, load_params
from cnnbench.training.checkpoint import (
    BEST,
    LAST,
    load_model_checkpoint,
    load_training_state,
    save_checkpoint,
    weights_digest,
)
from cnnbench.training.loop import NonFiniteLoss, dropout_seed, make_schedule, train_replicates, train_run
from cnnbench.training.precision import step_precision, unreproducible_in_bf16
from fixtures import TINY_RESNET

ROOT = Path(__file__).resolve().parents[1]
TIMING_KEYS = {"sec_per_epoch", "train_seconds", "images_per_sec", "peak_mem_mb", "epoch_seconds", "train_load_max"}
SUMMARY_KEYS = {"best_val_acc", "final_val_acc", "sec_per_epoch", "images_per_sec", "peak_mem_mb",
                "peak_mem_kind", "resident_data_mb", "params", "flops_per_image", "device", "epochs"}
PLOTS = ("train/loss", "train/acc", "val/loss", "val/acc", "lr", "epoch_seconds")

TINY_TRAIN = {"epochs": 3, "batch_size": 64, "lr": 0.2, "augment": {"pad": 1, "flip": True}}


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def repo_dvc_yaml() -> bytes:
    """dvc.yaml as it was before any run: DVCLive must never write into the pipeline's map."""
    return (ROOT / "dvc.yaml").read_bytes()


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    """The embedded digits, fetched and prepared by the real stage functions at 8x8 (1257 train, 180 val)."""
    base = tmp_path_factory.mktemp("digits")
    params = load_params(write_params(base))
    fetch_source(params.source("digits"), base / "raw")
    write_prepared(prepare_dataset(params.dataset("digits"), base / "raw"), base / "prepared")
    return base / "prepared"


def write_params(directory: Path, **train) -> Path:
    """A params.yaml laid out like the project's, declaring the tiny model and one run `tiny`."""
    overrides = {**TINY_TRAIN, **train}
    params = {
        "sources": {"digits": {"uri": "sklearn:digits", "md5": None, "format": "npz"}},
        "datasets": {"digits": {"source": "digits", "image_size": 8, "val_fraction": 0.1, "test_fraction": 0.2,
                                "near_duplicates": {"max_distance": 0},  # as params.yaml's digits
                                "split_seed": 0, "drop_classes": []}},
        "models": {"tiny": TINY_RESNET},
        "train": {"epochs": 30, "batch_size": 512, "optimizer": "sgd", "lr": 0.4, "seed": 0},
        "evaluate": {"batch_size": 1024},
        "runs": {"tiny": {"suite": "offline", "dataset": "digits", "model": "tiny", "train": overrides}},
        "suites": {"offline": {"dir": "reports"}},
    }
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def tiny_run(directory: Path, **train) -> tuple[Path, RunConfig, object]:
    """(params path, run, spec) of run `tiny`, read back through load_params as the stage reads them."""
    path = write_params(directory, **train)
    params = load_params(path)
    return path, params.run("tiny"), params.model("tiny")


def train_in_process(data: Path, out: Path, run: RunConfig, spec) -> dict:
    return train_run(run, spec, data, out / "run", out / "live", device="cpu", progress=False)


def stage(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python stages/train.py ...` from the project root, as `dvc repro` runs it."""
    return subprocess.run([sys.executable, "stages/train.py", *args, "--device", "cpu"], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=timeout)


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def live_values(live_dir: Path) -> dict:
    """What DVCLive logged, less the timings (which differ between any two runs)."""
    metrics = json.loads((live_dir / "metrics.json").read_text())
    values = {key: value for key, value in metrics.items() if key not in TIMING_KEYS}
    for plot in PLOTS:
        if plot != "epoch_seconds":
            values[f"plot:{plot}"] = read_tsv(live_dir / "plots" / "metrics" / f"{plot}.tsv")
    return values


def epochs_trained(out: str) -> list[str]:
    """The `k/n` of each epoch line a training printed (`<run> seed <s>  epoch   k/n  train loss ...`)."""
    return re.findall(r"^\S+ seed \d+  epoch +(\d+/\d+)  train loss", out, flags=re.MULTILINE)


def read_tsv(path: Path) -> list[list[str]]:
    with open(path, newline="") as fh:
        return list(csv.reader(fh, delimiter="\t"))


def assert_same_weights(a: Path, b: Path) -> None:
    sa, sb = torch.load(a, weights_only=True)["weights"], torch.load(b, weights_only=True)["weights"]
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def without_timings(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in history]


@pytest.fixture(scope="module")
def trained(digits, tmp_path_factory, repo_dvc_yaml):
    """One finished 3-epoch run of `tiny`, trained in this process."""
    out = tmp_path_factory.mktemp("trained")
    _, run, spec = tiny_run(out)
    summary = train_in_process(digits, out, run, spec)
    return out, run, spec, summary


# ------------------------------------------------------------------ reproducibility and outputs


def test_same_run_twice_gives_identical_metrics_and_weights(digits, trained, tmp_path):
    first, run, spec, _ = trained
    train_in_process(digits, tmp_path, run, spec)
    assert live_values(tmp_path / "live") == live_values(first / "live")
    assert_same_weights(tmp_path / "run" / BEST, first / "run" / BEST)
    assert_same_weights(tmp_path / "run" / LAST, first / "run" / LAST)


def test_cpu_amp_trains_in_bf16_where_the_cpu_computes_it_reproducibly(digits, trained, tmp_path, monkeypatch):
    """train.cpu_amp on a CPU with native bf16 (faked where this one has none: autocast itself runs anywhere): the
    steps run in bf16, so the weights are not fp32's, the same twice, and the record says which precision."""
    first, _, spec, _ = trained
    monkeypatch.setattr(precision_module, "cpu_computes_bf16", lambda: True)
    _, run, _ = tiny_run(tmp_path, cpu_amp=True)
    for out in (tmp_path / "a", tmp_path / "b"):
        summary = train_in_process(digits, out, run, spec)
        assert summary["precision"] == "bf16 autocast"
        assert json.loads((out / "live" / "metrics.json").read_text())["precision"] == "bf16 autocast"
    assert_same_weights(tmp_path / "a" / "run" / LAST, tmp_path / "b" / "run" / LAST)
    with pytest.raises(AssertionError):
        assert_same_weights(tmp_path / "a" / "run" / LAST, first / "run" / LAST)


def test_cpu_amp_on_a_cpu_without_native_bf16_trains_fp32_and_says_so(digits, trained, tmp_path, monkeypatch, capsys):
    first, _, spec, _ = trained
    monkeypatch.setattr(precision_module, "cpu_computes_bf16", lambda: False)
    _, run, _ = tiny_run(tmp_path, cpu_amp=True)
    capsys.readouterr()
    summary = train_in_process(digits, tmp_path, run, spec)
    assert "note: run tiny: train.cpu_amp is ignored, this CPU has no native bf16 (AMX); training in fp32" in \
        capsys.readouterr().err
    assert summary["precision"] == "fp32"
    assert_same_weights(tmp_path / "run" / LAST, first / "run" / LAST)  # fp32's arithmetic exactly


# A ResNet whose last stage reaches a 1x1 map through a stride-2 conv at 8 px (8 -> 4 -> 2 -> 1), as ResNet18's
# layer4 does at 16 px: oneDNN's bf16 weight gradient of that conv differs from run to run.
ONTO_ONE_PIXEL = {**TINY_RESNET, "depths": [1, 1, 1, 1], "widths": [8, 16, 16, 16], "strides": [1, 2, 2, 2]}


@pytest.mark.parametrize("deterministic", [True, False])
def test_cpu_amp_trains_fp32_where_bf16_steps_would_not_reproduce(digits, tmp_path, monkeypatch, capsys,
                                                                   deterministic):
    monkeypatch.setattr(precision_module, "cpu_computes_bf16", lambda: True)
    spec = parse_model_spec("tiny", ONTO_ONE_PIXEL)
    _, run, _ = tiny_run(tmp_path, cpu_amp=True, deterministic=deterministic, epochs=1)
    capsys.readouterr()
    summary = train_in_process(digits, tmp_path / "amp", run, spec)
    err = capsys.readouterr().err
    if not deterministic:  # asked for: bf16, reproducible or not
        assert summary["precision"] == "bf16 autocast" and "note:" not in err
        return
    assert ("note: run tiny: train.cpu_amp is ignored, its bf16 steps are not reproducible on a CPU for a strided "
            "conv onto a 1-pixel map (layer4.0.conv1 (2x2 -> 1x1, stride 2) and 1 more; train.deterministic: false "
            "allows them); training in fp32") in err
    assert summary["precision"] == "fp32"
    _, fp32_run, _ = tiny_run(tmp_path / "fp32", epochs=1)
    train_in_process(digits, tmp_path / "fp32", fp32_run, spec)
    assert_same_weights(tmp_path / "amp" / "run" / LAST, tmp_path / "fp32" / "run" / LAST)


def test_every_conv_whose_bf16_gradient_differs_between_runs_is_one_the_rule_names():
    """The rule behind the fp32 fallback, against the kernels themselves: one conv of every small geometry, its bf16
    weight gradient computed three times; each geometry where the three differ must be one the rule names (on this
    CPU: stride 2-3 onto a 1-pixel map from 1-2 pixels). Were a torch upgrade to add others, this fails."""
    missed, named = [], 0
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        for size, kernel, stride, fmt in itertools.product((1, 2, 3, 4), (1, 3, 5), (1, 2, 3),
                                                           (torch.contiguous_format, torch.channels_last)):
            for padding in range(kernel // 2 + 1):
                if size + 2 * padding < kernel:
                    continue
                conv = torch.nn.Conv2d(32, 32, kernel, stride, padding, bias=False)
                flagged = bool(unreproducible_in_bf16(summarize(conv, image_size=size, in_channels=32)))
                named += flagged
                grads = {bf16_weight_grad(conv, size, fmt).numpy().tobytes() for _ in range(3)}
                if len(grads) > 1 and not flagged:
                    missed.append((size, kernel, stride, padding, fmt))
    finally:
        torch.use_deterministic_algorithms(before)
    assert named and not missed


def bf16_weight_grad(conv: torch.nn.Conv2d, size: int, fmt: torch.memory_format) -> torch.Tensor:
    conv = conv.to(memory_format=fmt)
    conv.zero_grad()
    x = torch.randn(8, 32, size, size, generator=torch.Generator().manual_seed(0)).contiguous(memory_format=fmt)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        conv(x).float().sum().backward()
    return conv.weight.grad.clone()


def test_the_offline_suite_s_bf16_runs_keep_bf16_on_a_cpu_that_computes_it(monkeypatch):
    """Every offline run that asks for cpu_amp trains in bf16 where the CPU computes it (the rule above names none
    of their convs); ResNet18 at the suite's 16 px would not (layer3 and layer4 end in 1x1 maps)."""
    monkeypatch.setattr(precision_module, "cpu_computes_bf16", lambda: True)
    params, cpu = load_params(ROOT / "params.yaml"), torch.device("cpu")
    size = params.datasets["digits"].image_size
    asking = [run for run in params.runs.values() if run.suite == "offline" and run.train.cpu_amp]
    assert asking
    for run in asking:
        assert step_precision(run.train, cpu, summarize_spec(params.model(run.model), 10, size)) == (True, None)
    bf16, why = step_precision(asking[0].train, cpu, summarize_spec(params.model("resnet18"), 10, size))
    assert not bf16 and "(layer3.0.conv1 (2x2 -> 1x1, stride 2) and 3 more;" in why


def test_a_bf16_checkpoint_is_retrained_where_the_cpu_trains_fp32(digits, trained, tmp_path, monkeypatch, capsys):
    """A seed trained with cpu_amp on a CPU with native bf16, carried to one without (same params, data and code):
    its steps would now run in fp32, so it is trained again from scratch, not kept or continued in fp32."""
    first, _, spec, _ = trained
    _, run, _ = tiny_run(tmp_path, cpu_amp=True)
    monkeypatch.setattr(precision_module, "cpu_computes_bf16", lambda: True)
    assert train_in_process(digits, tmp_path, run, spec)["precision"] == "bf16 autocast"
    monkeypatch.setattr(precision_module, "cpu_computes_bf16", lambda: False)
    capsys.readouterr()
    summary = train_in_process(digits, tmp_path, run, spec)
    out, err = capsys.readouterr()
    assert "was trained with other settings; training from scratch" in err
    assert epochs_trained(out) == ["1/3", "2/3", "3/3"]
    assert summary["precision"] == "fp32"
    assert_same_weights(tmp_path / "run" / LAST, first / "run" / LAST)


@pytest.mark.parametrize("terminal", [True, False])
def test_the_progress_bar_shows_on_a_terminal_and_stays_out_of_logs(digits, tmp_path, monkeypatch, terminal):
    """A bar is for someone watching a terminal; in a log (CI's, a pipe, `dvc repro > log`) its carriage-return
    updates would be debris between the epoch lines. Here it may show from an epoch's first step."""

    class Stderr(io.StringIO):
        def isatty(self) -> bool:
            return terminal

    stderr = Stderr()
    monkeypatch.setattr(train_module, "PROGRESS_DELAY", 0)
    monkeypatch.setattr(sys, "stderr", stderr)
    _, run, spec = tiny_run(tmp_path, epochs=1)
    train_run(run, spec, digits, tmp_path / "run", tmp_path / "live", device="cpu", progress=True)
    assert ("tiny seed 0 epoch 1:" in stderr.getvalue()) is terminal


def test_dvclive_output_holds_summary_params_and_one_plot_row_per_epoch(digits, trained, repo_dvc_yaml):
    out, run, spec, summary = trained
    live = out / "live"
    metrics = json.loads((live / "metrics.json").read_text())
    assert SUMMARY_KEYS <= metrics.keys()
    assert {k: metrics[k] for k in summary} == summary
    assert metrics["peak_mem_kind"] == "cpu_peak_rss" and metrics["device"] == "cpu"
    assert metrics["precision"] == "fp32"  # train.cpu_amp is off by default
    assert metrics["epochs"] == run.train.epochs == 3 and metrics["world_size"] == 1
    assert metrics["params"] == sum(p.numel() for p in build_model(spec, 10, 8).parameters())
    assert metrics["flops_per_image"] > 0 and metrics["peak_mem_mb"] > 0
    # What the report's busy-machine warning reads: the machine's load while training, and its CPUs.
    assert metrics["cpus"] == os.cpu_count() and 0 <= metrics["train_load_max"] < 1000
    arrays = [np.load(digits / f"{split}_{part}.npy") for split in ("train", "val") for part in "xy"]
    resident = sum(a.size * (1 if a.dtype == np.uint8 else 8) for a in arrays)  # labels live as int64
    assert metrics["resident_data_mb"] == round(resident / 2**20, 1)
    assert 0.0 <= metrics["final_val_acc"] <= metrics["best_val_acc"] <= 1.0

    logged = yaml.safe_load((live / "params.yaml").read_text())
    assert logged == {"run": "tiny", "suite": "offline", "dataset": "digits", "model": "tiny",
                      "model_family": "resnet", "train": dataclasses.asdict(run.train)}

    history = load_training_state(out / "run" / LAST).history
    for plot in PLOTS:
        rows = read_tsv(live / "plots" / "metrics" / f"{plot}.tsv")
        assert rows[0] == ["step", plot.split("/")[-1]]
        assert [int(r[0]) for r in rows[1:]] == list(range(3)), plot
        if "/" in plot:
            expected = [round(row[plot.replace("/", "_")], 6) for row in history]
            assert [float(r[1]) for r in rows[1:]] == pytest.approx(expected, abs=1e-6), plot
    assert metrics["best_val_acc"] == max(row["val_acc"] for row in history)

    assert not list(live.rglob("dvc.yaml")), "DVCLive must not write a dvc.yaml (dvcyaml=False)"
    assert (ROOT / "dvc.yaml").read_bytes() == repo_dvc_yaml


def test_registered_resnet18_trains_one_epoch(digits, tmp_path):
    spec = load_params(ROOT / "params.yaml").model("resnet18")
    run = RunConfig("digits-resnet18-smoke", "offline", "digits", "resnet18",
                    TrainConfig(epochs=1, batch_size=32, lr=0.05, max_images=96))
    summary = train_in_process(digits, tmp_path, run, spec)
    assert summary["epochs"] == 1 and summary["params"] == 11_181_642  # torchvision's resnet18, 10 classes
    history = load_training_state(tmp_path / "run" / LAST).history
    assert np.isfinite([history[0]["train_loss"], history[0]["val_loss"]]).all()
    model, ckpt = load_model(tmp_path / "run" / BEST, torch.device("cpu"))
    assert ckpt.spec["name"] == "resnet18" and model(torch.zeros(2, 3, 8, 8)).shape == (2, 10)


# ------------------------------------------------------------------ resuming, and when not to


@pytest.mark.slow
def test_killed_stage_resumes_and_ends_as_an_uninterrupted_run(digits, tmp_path, repo_dvc_yaml):
    epochs = 10
    params, run, spec = tiny_run(tmp_path, epochs=epochs)
    run_dir, live_dir = tmp_path / "killed" / "run", tmp_path / "killed" / "live"
    args = ["tiny", str(digits), str(run_dir), str(live_dir), "--params", str(params)]
    seed_run, seed_live = run_dir / "seed0", live_dir / "seed0"  # the stage writes one directory per seed
    log = tmp_path / "killed.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "stages/train.py", *args, "--device", "cpu"], cwd=ROOT,
                                env=_env(), stdout=fh, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while _epochs_done(seed_run / LAST) < 2:
            assert proc.poll() is None, f"the stage ended before it could be killed:\n{log.read_text()}"
            assert time.monotonic() < deadline, "no checkpoint after 240 s"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = _epochs_done(seed_run / LAST)
    assert 2 <= done < epochs, f"the kill landed after epoch {done}; the test needs it mid-way"
    assert not (seed_live / "metrics.json").exists()

    resumed = stage(*args)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming tiny from {seed_run / LAST}: {done}/{epochs} epochs done" in resumed.stdout
    assert f"epoch {done:>3}/{epochs}" not in resumed.stdout
    assert f"epoch {done + 1:>3}/{epochs}" in resumed.stdout

    train_in_process(digits, tmp_path / "whole", run, spec)
    assert live_values(seed_live) == live_values(tmp_path / "whole" / "live")
    assert_same_weights(seed_run / BEST, tmp_path / "whole" / "run" / BEST)
    histories = [load_training_state(d / LAST).history for d in (seed_run, tmp_path / "whole" / "run")]
    assert without_timings(histories[0]) == without_timings(histories[1])
    assert not list(live_dir.rglob("dvc.yaml")) and (ROOT / "dvc.yaml").read_bytes() == repo_dvc_yaml


def _epochs_done(path: Path) -> int:
    if not path.is_file():
        return 0
    return load_training_state(path).epoch  # written by rename: never half a file


def test_finished_checkpoint_without_its_logs_is_trained_again_from_scratch(digits, trained, tmp_path, capsys):
    first, run, spec, _ = trained
    shutil.copytree(first / "run", tmp_path / "run")
    capsys.readouterr()
    train_in_process(digits, tmp_path, run, spec)
    out, err = capsys.readouterr()
    assert "holds a finished run (3/3 epochs); training from scratch" in err
    assert "resuming" not in out
    assert epochs_trained(out) == ["1/3", "2/3", "3/3"]
    assert live_values(tmp_path / "live") == live_values(first / "live")


def test_finished_replicate_with_the_same_params_data_and_code_is_kept(digits, trained, tmp_path, capsys):
    first, run, spec, _ = trained
    shutil.copytree(first / "run", tmp_path / "run")
    shutil.copytree(first / "live", tmp_path / "live")
    before = (tmp_path / "run" / BEST).stat().st_mtime_ns
    capsys.readouterr()
    summary = train_in_process(digits, tmp_path, run, spec)
    out, _ = capsys.readouterr()
    assert "already trained with these params, data and code (3 epochs); kept" in out
    assert epochs_trained(out) == []
    assert (tmp_path / "run" / BEST).stat().st_mtime_ns == before
    assert summary == json.loads((first / "live" / "metrics.json").read_text())


def test_finished_replicate_whose_log_is_another_trainings_is_trained_again(digits, trained, tmp_path, capsys):
    """A metrics.json beside weights it does not describe (docs/cost.md's `git checkout -- reports` after a
    rerun on another CPU, whose weights differ) is not kept: it would report the other training's curves."""
    first, run, spec, _ = trained
    shutil.copytree(first / "run", tmp_path / "run")
    shutil.copytree(first / "live", tmp_path / "live")
    log = json.loads((first / "live" / "metrics.json").read_text())
    assert log["weights_sha256"] == weights_digest(load_training_state(first / "run" / LAST).weights)
    # the same seed's last.pt with other weights, as another machine trains them (settings, fingerprint unchanged)
    state = load_training_state(first / "run" / LAST)
    other = dataclasses.replace(state, weights={k: v + 1 if v.is_floating_point() else v
                                                for k, v in state.weights.items()})
    save_checkpoint(other, tmp_path / "run" / LAST)
    capsys.readouterr()
    train_in_process(digits, tmp_path, run, spec)
    out, err = capsys.readouterr()
    assert "kept" not in out and "describes other weights than" in err and "training again" in err
    assert epochs_trained(out) == ["1/3", "2/3", "3/3"]
    retrained = json.loads((tmp_path / "live" / "metrics.json").read_text())
    assert retrained["weights_sha256"] == weights_digest(load_training_state(tmp_path / "run" / LAST).weights)


def test_finished_replicate_trained_by_other_code_is_trained_again(digits, trained, tmp_path, capsys, monkeypatch):
    first, run, spec, _ = trained
    shutil.copytree(first / "run", tmp_path / "run")
    shutil.copytree(first / "live", tmp_path / "live")
    monkeypatch.setattr(fingerprint_module, "code_fingerprint", lambda: "edited-code")
    capsys.readouterr()
    train_in_process(digits, tmp_path, run, spec)
    out, err = capsys.readouterr()
    assert "kept" not in out and "was trained with other settings; training from scratch" in err
    assert epochs_trained(out) == ["1/3", "2/3", "3/3"]


def test_checkpoint_from_other_settings_is_not_resumed(digits, trained, tmp_path, capsys):
    first = trained[0]
    shutil.copytree(first / "run", tmp_path / "run")
    _, run, spec = tiny_run(tmp_path / "params", lr=0.1)
    capsys.readouterr()
    train_in_process(digits, tmp_path, run, spec)
    out, err = capsys.readouterr()
    assert "was trained with other settings; training from scratch" in err
    assert "resuming" not in out and "epoch   1/3" in out
    assert load_training_state(tmp_path / "run" / LAST).history[0]["lr"] != \
        load_training_state(first / "run" / LAST).history[0]["lr"]


# ------------------------------------------------------------------ failures


@pytest.mark.slow
def test_nan_loss_stops_the_stage_with_one_line_and_exit_2(digits, tmp_path):
    params, _, _ = tiny_run(tmp_path, lr=1.0e6, optimizer="sgd", epochs=2)
    result = stage("tiny", str(digits), str(tmp_path / "run"), str(tmp_path / "live"), "--params", str(params))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert re.match(r"error: the training loss became (nan|-?inf) at epoch 1, step \d+\. Lower train\.lr", errors[0])
    assert not (tmp_path / "live" / "metrics.json").exists()


def test_nan_loss_keeps_the_last_good_checkpoint_and_the_run_resumes_from_it(digits, trained, tmp_path,
                                                                             monkeypatch, capsys):
    """A loss that turns NaN in epoch 2 leaves epoch 1's checkpoint; the next start resumes from it."""
    first, run, spec, _ = trained
    steps_per_epoch = len(np.load(digits / "train_y.npy")) // run.train.batch_size
    calls = []
    real_augment = train_module.augment

    def poisoned_from_epoch_2(x, cfg, gen):
        calls.append(1)
        out = real_augment(x, cfg, gen)
        return out * float("nan") if len(calls) > steps_per_epoch else out

    monkeypatch.setattr(train_module, "augment", poisoned_from_epoch_2)
    with pytest.raises(NonFiniteLoss, match=r"became nan at epoch 2, step 1\. .*last good checkpoint is kept"):
        train_in_process(digits, tmp_path, run, spec)
    kept = load_training_state(tmp_path / "run" / LAST)
    assert kept.epoch == 1 and all(torch.isfinite(t).all() for t in kept.weights.values())
    assert load_model_checkpoint(tmp_path / "run" / BEST).epoch == 1

    monkeypatch.setattr(train_module, "augment", real_augment)
    capsys.readouterr()
    summary = train_in_process(digits, tmp_path, run, spec)
    assert "1/3 epochs done" in capsys.readouterr().out
    assert live_values(tmp_path / "live") == live_values(first / "live")
    assert_same_weights(tmp_path / "run" / BEST, first / "run" / BEST)
    # The first epoch of each process pays for warm-up: epoch 1 (first process) and epoch 2 (the resumed
    # one) are marked, and the median s/epoch is epoch 3's alone.
    rows = json.loads((tmp_path / "run" / "timings.json").read_text())["epochs"]
    assert [(r["epoch"], r["warmup"]) for r in rows] == [(1, True), (2, True), (3, False)]
    assert summary["sec_per_epoch"] == round(rows[2]["epoch_seconds"], 4)


def test_peak_memory_is_the_steady_training_epochs_less_the_resident_data(monkeypatch):
    """On CUDA the summary's peak is the largest steady (non-warm-up) epoch, read before evaluation."""
    monkeypatch.setattr(train_module, "device_name", lambda device: "a GPU")
    env = train_module.Dist(0, 1, torch.device("cuda", 0))
    history = [{"epoch": e, "val_acc": 0.5} for e in (1, 2, 3, 4)]
    timings = [{"epoch": 1, "epoch_seconds": 1.0, "images_per_sec": 10.0, "warmup": True},  # resumed: no peak
               {"epoch": 2, "epoch_seconds": 9.0, "images_per_sec": 1.0, "warmup": True, "peak_mem_mb": 900.0},
               {"epoch": 3, "epoch_seconds": 1.0, "images_per_sec": 10.0, "warmup": False, "peak_mem_mb": 500.0},
               {"epoch": 4, "epoch_seconds": 1.0, "images_per_sec": 10.0, "warmup": False, "peak_mem_mb": 520.0}]
    model_summary = type("S", (), {"params": 1, "flops": 1})()
    out = train_module._summary(history, timings, model_summary, env, True, 3 * 2**20)
    assert (out["peak_mem_mb"], out["peak_mem_kind"], out["resident_data_mb"]) == \
        (520.0, "cuda_train_max_allocated", 3.0)
    # Only warm-up epochs measured in this process (a one-epoch resume): that is the figure there is.
    out = train_module._summary(history[:2], timings[:2], model_summary, env, True, 0)
    assert out["peak_mem_mb"] == 900.0


def test_global_batch_that_does_not_divide_across_ranks_is_refused(digits, tmp_path, monkeypatch):
    _, run, spec = tiny_run(tmp_path, batch_size=63)
    monkeypatch.setattr(session_module, "setup_distributed",
                        lambda device="auto": train_module.Dist(0, 2, torch.device("cpu")))
    with pytest.raises(CnnbenchError, match=r"train\.batch_size 63 must divide evenly across 2 processes"):
        train_in_process(digits, tmp_path, run, spec)
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------ DistributedDataParallel

# BatchNorm statistics are per rank under DDP (each normalises its half-batch) and the two ranks draw
# different augmentations, so the result is close to, not equal to, a single process's. Over five seeds
# a single process ends between 0.939 and 0.967 val accuracy (180 images, 1 image = 0.0056); 0.05 is
# twice that seed-to-seed range.
DDP_TOLERANCE = 0.05


def test_a_stage_hashes_its_data_once_and_reads_each_seeds_last_pt_once(digits, tmp_path, monkeypatch):
    """One session per train stage: its three seeds share one hash of the prepared arrays; a rerun reads each
    seed's last.pt once, and that one read decides between keeping the seed and resuming it."""
    _, run, spec = tiny_run(tmp_path, epochs=1)
    run = dataclasses.replace(run, seeds=(0, 1, 2))
    hashes, reads = [], []
    real_hash, real_load = session_module.data_fingerprint, resume_module.load_training_state
    monkeypatch.setattr(session_module, "data_fingerprint", lambda d: hashes.append(d) or real_hash(d))
    monkeypatch.setattr(resume_module, "load_training_state",
                        lambda path, *a, **k: reads.append(Path(path).parent.name) or real_load(path, *a, **k))

    def stage_run() -> dict:
        return train_replicates(run, spec, digits, tmp_path / "run", tmp_path / "live", device="cpu", progress=False)

    first = stage_run()
    assert len(hashes) == 1 and reads == []  # three seeds trained, nothing on disk to read yet
    kept = stage_run()  # every seed kept: its summary read back from its metrics.json
    assert {seed: {k: kept[seed][k] for k in summary} for seed, summary in first.items()} == first
    assert len(hashes) == 2 and reads == ["seed0", "seed1", "seed2"]


@pytest.mark.slow
def test_ddp_on_two_gloo_processes_matches_one_process(digits, tmp_path):
    params, run, spec = tiny_run(tmp_path, epochs=8, augment={"pad": 1, "flip": False})
    live_dir = tmp_path / "ddp" / "live"
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone", "stages/train.py",
         "tiny", str(digits), str(tmp_path / "ddp" / "run"), str(live_dir), "--params", str(params),
         "--device", "cpu"], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("epoch   8/8") == 1  # rank 0 alone reports
    ddp = json.loads((live_dir / "seed0" / "metrics.json").read_text())
    assert ddp["world_size"] == 2 and ddp["ranks_in_sync"] is True and ddp["epochs"] == 8
    single = train_in_process(digits, tmp_path / "single", run, spec)
    difference = abs(ddp["final_val_acc"] - single["final_val_acc"])
    print(f"final val acc: ddp {ddp['final_val_acc']:.4f}, single {single['final_val_acc']:.4f}, "
          f"difference {difference:.4f}")
    assert difference <= DDP_TOLERANCE


def poisoned_script(directory: Path, ranks: str = "01", after_steps: int = 0) -> Path:
    """An entry point for torchrun that runs stages/train.py with NaN images on `ranks` after `after_steps` steps."""
    script = directory / "poisoned.py"
    script.write_text(f"""
import os, runpy, sys
sys.path.insert(0, {str(ROOT / "src")!r})
import cnnbench.training.loop as train
if os.environ["RANK"] in {ranks!r}:
    real, calls = train.augment, []
    def poisoned(x, cfg, gen):
        calls.append(1)
        return real(x, cfg, gen) * (float("nan") if len(calls) > {after_steps} else 1.0)
    train.augment = poisoned
sys.argv[0] = {str(ROOT / "stages" / "train.py")!r}
runpy.run_path(sys.argv[0], run_name="__main__")
""")
    return script


def torchrun(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone", *args],
                          cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_nan_on_one_rank_stops_every_rank_with_the_message(digits, tmp_path):
    """The non-finite check is collective: rank 0, whose loss is finite, stops with rank 1 instead of
    waiting in backward's all-reduce for a peer that is gone."""
    params, _, _ = tiny_run(tmp_path, epochs=2)
    result = torchrun(str(poisoned_script(tmp_path, ranks="1")), "tiny", str(digits), str(tmp_path / "run"),
                      str(tmp_path / "live"), "--params", str(params), "--device", "cpu")
    assert result.returncode != 0
    # Both ranks print to one stderr at the same moment, so their lines may interleave: count, do not split.
    message = ("error: the training loss became nan at epoch 1, step 1. Lower train.lr, or check the data; "
               "the last good checkpoint is kept.")
    assert result.stderr.count(message) == 2, result.stderr[-3000:]
    assert "raise NonFiniteLoss" not in result.stderr  # the door's one line, no traceback, on both ranks
    assert not (tmp_path / "run" / LAST).exists() and not (tmp_path / "live" / "metrics.json").exists()


@pytest.mark.slow
def test_a_two_node_run_resumes_from_node_0s_checkpoint_alone(digits, tmp_path):
    """Each machine has its own disk, so only node 0 has last.pt: rank 0 reads it and sends it, and
    both nodes resume at the same epoch (a rank starting afresh would train one epoch more than the other)."""
    params, run, _ = tiny_run(tmp_path, epochs=3)
    steps_per_epoch = len(np.load(digits / "train_y.npy")) // run.train.batch_size
    node0, node1 = tmp_path / "node0", tmp_path / "node1"
    first = torchrun(str(poisoned_script(tmp_path, after_steps=steps_per_epoch)), "tiny", str(digits),
                     str(node0 / "run"), str(node0 / "live"), "--params", str(params), "--device", "cpu")
    assert "became nan at epoch 2, step 1" in first.stderr, first.stderr[-3000:]
    assert load_training_state(node0 / "run" / "seed0" / LAST).epoch == 1

    raw = yaml.safe_load(params.read_text())
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    raw["launch"] = {"nproc_per_node": 1, "nnodes": 2, "rdzv_endpoint": f"127.0.0.1:{port}"}
    params.write_text(yaml.safe_dump(raw))
    args = ["tiny", str(digits), "--params", str(params), "--device", "cpu"]
    second = subprocess.Popen([sys.executable, "stages/train.py", *args[:2], str(node1 / "run"), str(node1 / "live"),
                               *args[2:], "--node-rank", "1"], cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        main = subprocess.run([sys.executable, "stages/train.py", *args[:2], str(node0 / "run"), str(node0 / "live"),
                               *args[2:]], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
        log, _ = second.communicate(timeout=60)
    finally:
        second.kill()
    assert main.returncode == 0 and second.returncode == 0, main.stderr[-3000:] + log[-3000:]
    assert f"resuming tiny from {node0 / 'run' / 'seed0' / LAST}: 1/3 epochs done" in main.stdout
    metrics = json.loads((node0 / "live" / "seed0" / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["ranks_in_sync"] is True and metrics["epochs"] == 3
    assert not (node1 / "run").exists()


def test_dropout_seed_differs_per_rank_and_is_unchanged_on_rank_0():
    seeds = {(s, e, r): dropout_seed(s, e, r) for s in range(5) for e in range(100) for r in range(8)}
    assert len(set(seeds.values())) == len(seeds)
    assert all(dropout_seed(s, e) == s * 10_007 + e for s in range(5) for e in range(100))  # as before ranks


# ------------------------------------------------------------------ schedule


@pytest.mark.parametrize("schedule", ["onecycle", "cosine"])
@pytest.mark.parametrize("total_steps,warmup_fraction", [(2, 0.15), (3, 0.15), (13, 0.0), (28, 0.15), (500, 0.5)])
def test_lr_schedule_stays_positive_and_below_the_peak(schedule, total_steps, warmup_fraction):
    cfg = TrainConfig(lr=0.4, schedule=schedule, warmup_fraction=warmup_fraction)
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=cfg.lr)
    sched = make_schedule(optimizer, cfg, total_steps)
    lrs = [sched.get_last_lr()[0]]
    for _ in range(total_steps - 1):  # train_run steps total_steps - 1 times (see its "+1")
        optimizer.step()
        sched.step()
        lrs.append(sched.get_last_lr()[0])
    assert min(lrs) > 0, lrs
    assert max(lrs) <= cfg.lr * (1 + 1e-9), lrs
    if total_steps >= 13:
        assert max(lrs) == pytest.approx(cfg.lr) and lrs[-1] < cfg.lr / 10


def test_lr_logged_by_a_run_is_positive(trained):
    rows = read_tsv(trained[0] / "live" / "plots" / "metrics" / "lr.tsv")[1:]
    assert all(float(value) > 0 for _, value in rows)


# ------------------------------------------------------------------ augmentation and batching


def _distinct_images(n: int, c: int = 3, h: int = 5, w: int = 6) -> torch.Tensor:
    """Images where every pixel value is unique, so any crop or flip is identifiable."""
    return torch.arange(n * c * h * w, dtype=torch.float32).reshape(n, c, h, w)


def test_random_crop_padded_is_a_crop_of_the_reflect_padded_image():
    x, pad = _distinct_images(64), 2
    out = random_crop_padded(x, pad, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    padded = torch.from_numpy(np.pad(x.numpy(), ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode="reflect"))
    offsets = []
    for i in range(len(x)):
        found = [(dy, dx) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
                 if torch.equal(out[i], padded[i, :, dy:dy + 5, dx:dx + 6])]
        assert len(found) == 1, i
        offsets.append(found[0])
    # The offsets are the seeded generator's draws: rows first, then columns.
    gen = torch.Generator().manual_seed(0)
    dy, dx = torch.randint(0, 2 * pad + 1, (64,), generator=gen), torch.randint(0, 2 * pad + 1, (64,), generator=gen)
    assert offsets == list(zip(dy.tolist(), dx.tolist()))
    assert len(set(offsets)) > 10
    assert torch.equal(random_crop_padded(x, 0, torch.Generator().manual_seed(0)), x)


def test_random_flip_mirrors_exactly_the_selected_images():
    x = _distinct_images(200)
    out = random_flip(x, torch.Generator().manual_seed(3))
    flipped = []
    for i in range(len(x)):
        assert torch.equal(out[i], x[i]) or torch.equal(out[i], x[i].flip(-1))
        flipped.append(torch.equal(out[i], x[i].flip(-1)))
    selected = torch.rand(200, generator=torch.Generator().manual_seed(3)) < 0.5
    assert flipped == selected.tolist()
    assert 60 < sum(flipped) < 140


def test_random_resized_crop_keeps_shape_and_range_and_full_area_is_identity_along_the_long_side():
    # A horizontal ramp, constant down each column. With scale_min=1 the box covers the whole image
    # along one axis and is cropped only by the aspect ratio along the other: images whose box spans
    # the full width come back unchanged.
    n, h, w = 64, 8, 8
    ramp = torch.linspace(-1.0, 1.0, w).expand(n, 3, h, w).contiguous()
    out = random_resized_crop(ramp, 1.0, torch.Generator().manual_seed(0))
    assert out.shape == ramp.shape and out.dtype == ramp.dtype
    unchanged = [torch.allclose(out[i], ramp[i], atol=1e-5) for i in range(n)]
    assert 10 < sum(unchanged) < n - 10
    assert torch.allclose(out, out[:, :, :1, :].expand_as(out), atol=1e-5)  # columns stay constant

    x = torch.rand(32, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    out = random_resized_crop(x, 0.35, torch.Generator().manual_seed(2))
    assert out.shape == x.shape
    assert out.min() >= x.min() - 1e-6 and out.max() <= x.max() + 1e-6
    assert not torch.allclose(out, x)


def test_batches_split_global_batches_across_ranks_and_drop_the_partial_one():
    order = torch.randperm(103, generator=torch.Generator().manual_seed(0))
    single = list(batches(order, 20))
    assert [len(b) for b in single] == [20] * 5
    assert torch.equal(torch.cat(single), order[:100])

    per_rank = [list(batches(order, 20, rank=r, world=2)) for r in range(2)]
    assert [len(b) for b in per_rank[0]] == [len(b) for b in per_rank[1]] == [10] * 5
    for step, whole in enumerate(single):
        parts = [per_rank[r][step] for r in range(2)]
        assert not set(parts[0].tolist()) & set(parts[1].tolist())
        assert torch.equal(torch.cat(parts), whole)
    assert set(torch.cat([torch.cat(p) for p in per_rank]).tolist()) == set(order[:100].tolist())

    tail = list(batches(order, 20, drop_last=False))
    assert len(tail) == 6 and torch.equal(tail[-1], order[100:])


def test_a_dataset_without_a_validation_split_is_refused(tmp_path):
    base = tmp_path / "noval"
    raw = yaml.safe_load(write_params(base).read_text())
    raw["datasets"]["digits"]["val_fraction"] = 0.0
    (base / "params.yaml").write_text(yaml.safe_dump(raw))
    params = load_params(base / "params.yaml")
    fetch_source(params.source("digits"), base / "raw")
    write_prepared(prepare_dataset(params.dataset("digits"), base / "raw"), base / "prepared")
    with pytest.raises(CnnbenchError, match=r"no validation split, so no epoch can be chosen as best.*val_fraction"):
        train_in_process(base / "prepared", tmp_path, params.run("tiny"), params.model("tiny"))
    assert not (tmp_path / "run" / BEST).exists()


def test_a_non_finite_validation_loss_fails_the_run(digits, tmp_path, monkeypatch):
    _, run, spec = tiny_run(tmp_path)
    monkeypatch.setattr(train_module, "evaluate_split", lambda *a, **k: {"loss": float("nan"), "acc": 0.5})
    with pytest.raises(NonFiniteLoss, match=r"validation loss became nan after epoch 1"):
        train_in_process(digits, tmp_path, run, spec)


class _WritesAMarker:
    """A pickle payload that, when unpickled, creates a file: what a hostile checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_hostile_last_pt_is_refused_not_run(digits, tmp_path):
    """A last.pt that unpickles to code (a poisoned DVC remote, say) runs nothing and stops the stage."""
    params_path, run, spec = tiny_run(tmp_path)
    marker = tmp_path / "pwned"
    (tmp_path / "run" / "seed0").mkdir(parents=True)
    torch.save({"epoch": 1, "payload": _WritesAMarker(marker)}, tmp_path / "run" / "seed0" / LAST)
    result = stage("tiny", str(digits), str(tmp_path / "run"), str(tmp_path / "live"), "--params", str(params_path))
    assert result.returncode == 2 and not marker.exists()
    last = result.stderr.strip().splitlines()[-1]
    assert "not a cnnbench checkpoint" in last and "never code" in last and "Traceback" not in result.stderr


def test_a_run_of_under_10_steps_per_epoch_is_warned_about(digits, tmp_path, capsys):
    _, run, spec = tiny_run(tmp_path, epochs=1, batch_size=256)  # 1257 training images: 4 steps an epoch
    train_in_process(digits, tmp_path / "few", run, spec)
    assert ("warning: run tiny: 1257 training images at train.batch_size 256 make 4 steps per epoch (under 10)"
            in capsys.readouterr().err)
    _, run, spec = tiny_run(tmp_path / "more", epochs=1, batch_size=64)  # 19 steps: no warning
    train_in_process(digits, tmp_path / "many", run, spec)
    assert "steps per epoch" not in capsys.readouterr().err
