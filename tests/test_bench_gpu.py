"""bench/gpu.py: its CPU path at tiny sizes, run as the GPU machine runs it, so the GPU command cannot rot.

The GPU figures themselves come only from a GPU; here every section runs on the CPU (the ddp section
with 2 gloo processes), with dvc, dvclive and kaggle made unimportable, as on a bare GPU machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import gpu  # noqa: E402  (bench/ is no package: its scripts import each other by path, as here)
from gpu_report import markdown  # noqa: E402

ABSENT = ("dvc", "dvclive", "kaggle")  # not on the GPU machine


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    """`bench/gpu.py --smoke` in a subprocess that cannot import dvc, dvclive or kaggle."""
    base = tmp_path_factory.mktemp("bench")
    for name in ABSENT:
        (base / "absent" / name).mkdir(parents=True)
        (base / "absent" / name / "__init__.py").write_text(f"raise ImportError('{name} is not on the GPU machine')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(base / "absent"), str(ROOT / "src")]),
           "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "bench/gpu.py", "--smoke", "--out", str(base / "out")], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return base / "out"


@pytest.mark.slow
def test_smoke_run_writes_the_documented_json_and_markdown(smoke):
    assert sorted(p.name for p in smoke.iterdir()) == ["gpu-cpu.json", "gpu-cpu.md"]
    report = json.loads((smoke / "gpu-cpu.json").read_text())
    assert report["schema"] == 1 and report["complete"] is True and report["seconds"] > 0
    assert set(report) == {"schema", "complete", "seconds", "environment", "settings", *gpu.SECTIONS}
    assert report["environment"]["card"] == "cpu" and report["settings"]["ddp_cpu_procs"] == 2

    rows = report["throughput"]
    assert [(r["model"], r["image_size"]) for r in rows] == [("resnet18_stem1_l3", 32), ("resnet18", 72)]
    for row in rows:
        assert all(row[loop]["images_per_sec"] > 0 and row[loop]["peak_mem_mb"] is None
                   for loop in ("reference", "cnnbench", "resident"))
        assert row["ratio_cnnbench_vs_reference"] == pytest.approx(
            row["cnnbench"]["images_per_sec"] / row["reference"]["images_per_sec"], abs=1e-3)
        assert row["steps_per_epoch"] == row["timed_images"] // row["batch_size"]

    precision = report["precision"]
    assert set(precision["test_acc"]) == {"fp32", "bf16", "bf16_compiled"} and precision["amp_active"] is False
    assert all(0.5 < acc <= 1.0 for accs in precision["test_acc"].values() for acc in accs)  # it learnt (chance: 0.1)
    # On the CPU the three variants are the same fp32 computation (the compile backend there is `eager`).
    assert precision["agree"] is True and precision["bf16_vs_fp32"] == 0.0
    assert report["compile"]["eager_ms_per_step"] > 0 and report["compile"]["backend"] == "eager"
    assert report["ddp"]["world"] == 2 and report["ddp"]["backend"] == "gloo"
    assert report["ddp"]["images_per_sec"] > 0 and report["ddp"]["scaling"] > 0

    text = (smoke / "gpu-cpu.md").read_text()
    assert text == markdown(report)
    assert "| resnet18_stem1_l3 | 32 | 16 |" in text and "2 ranks (gloo)" in text and "agree within 0.02" in text


def test_every_setting_is_a_flag_and_smoke_is_a_starting_point():
    settings, args = gpu.parse_settings(["--out", "x", "--smoke", "--small-images", "128",
                                         "--sections", "throughput,ddp", "--small-models", "a,b"])
    assert args.smoke and settings.small_images == 128 and settings.sections == ("throughput", "ddp")
    assert settings.small_models == ("a", "b") and settings.large_size == gpu.SMOKE.large_size
    assert gpu.parse_settings(["--out", "x"])[0] == gpu.Settings()


def test_an_unknown_section_is_refused(capsys):
    with pytest.raises(SystemExit):
        gpu.parse_settings(["--out", "x", "--sections", "throughput,speed"])
    assert "--sections: unknown speed" in capsys.readouterr().err


def test_a_skipped_ddp_section_and_gpu_figures_render():
    report = {"schema": 1, "complete": True, "seconds": 300.0, "settings": gpu.dataclasses.asdict(gpu.Settings()),
              "environment": {"device": "NVIDIA H200", "torch": "2.11", "torchvision": "0.26", "cuda": "12.8",
                              "cudnn": 91000, "python": "3.12", "gpus": 1, "cpus": 16, "started": "t", "command": "c"},
              "throughput": [{"model": "resnet18", "image_size": 224, "batch_size": 256, "steps_per_epoch": 50,
                              "timed_images": 12800, "resident_data_mb": 1837.5,
                              "reference": {"images_per_sec": 1000.0, "peak_mem_mb": 3000.0},
                              "cnnbench": {"images_per_sec": 2000.0, "peak_mem_mb": 3100.0},
                              "resident": {"images_per_sec": 2500.0, "peak_mem_mb": 3000.0},
                              "ratio_cnnbench_vs_reference": 2.0, "ratio_cnnbench_vs_resident": 0.8}],
              "ddp": {"skipped": "1 visible GPU(s); DDP needs more than one"}}
    text = markdown(report)
    assert "| resnet18 | 224 | 256 | 50 | 1,000 | 2,000 | 2,500 | 2.00x | 0.80x | 3,000 | 3,100 | 1,838 |" in text
    assert "Skipped: 1 visible GPU(s); DDP needs more than one." in text


def test_a_failed_loop_or_section_is_reported_and_the_rest_kept():
    """A GPU session is too short to lose to one failure: the benchmark records it and goes on."""
    from throughput import attempt

    def out_of_memory():
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail")

    assert attempt(out_of_memory) == {"error": "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"}
    with pytest.raises(TypeError):  # a bug is not a measurement
        attempt(lambda: None + 1)
    row = {"model": "resnet18", "image_size": 224, "batch_size": 256, "steps_per_epoch": 50, "timed_images": 12800,
           "resident_data_mb": 1837.5, "reference": {"error": "RuntimeError: DataLoader worker (pid 7) is killed"},
           "cnnbench": {"images_per_sec": 2000.0, "peak_mem_mb": 3100.0},
           "resident": {"images_per_sec": 2500.0, "peak_mem_mb": 3000.0},
           "ratio_cnnbench_vs_reference": None, "ratio_cnnbench_vs_resident": 0.8}
    report = {"schema": 1, "complete": True, "seconds": 1.0, "settings": gpu.dataclasses.asdict(gpu.Settings()),
              "environment": {"device": "d", "torch": "t", "torchvision": "v", "cuda": "c", "cudnn": 1, "python": "p",
                              "gpus": 1, "cpus": 16, "started": "s", "command": "c"},
              "throughput": [row], "compile": {"error": "RuntimeError: no C compiler"}}
    text = markdown(report)
    assert "| resnet18 | 224 | 256 | 50 | n/a | 2,000 | 2,500 | n/a | 0.80x | n/a | 3,100 | 1,838 |" in text
    assert "- resnet18 at 224 px, reference: `RuntimeError: DataLoader worker (pid 7) is killed`" in text
    assert "## compile\n\nFailed: `RuntimeError: no C compiler`" in text
