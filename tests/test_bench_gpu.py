"""bench/gpu.py: its CPU path at tiny sizes, run as the GPU machine runs it, so the GPU command cannot rot.

The GPU figures themselves come only from a GPU; here every section runs on the CPU (the ddp section
with 2 gloo processes) in a subprocess that cannot import any installed package the GPU machine's image
lacks (bench/gpu_image_packages.txt, less what this environment has: dvc, dvclive, kaggle, imagehash,
cleanlab and their dependencies).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cnnbench.params.config import load_params

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import gpu  # noqa: E402  (bench/ is no package: its scripts import each other by path, as here)
from gpu_report import markdown  # noqa: E402

IMAGE_PACKAGES = ROOT / "bench" / "gpu_image_packages.txt"
# Leaves the import system's path finder unable to find these top-level names, as if not installed:
# `import x` raises ModuleNotFoundError and importlib.util.find_spec("x") is None, in every process
# started with this on PYTHONPATH (the ddp section's spawned ranks too).
SITECUSTOMIZE = """import sys
from importlib.machinery import PathFinder

ABSENT = frozenset({absent!r})


class ImageOnlyPathFinder(PathFinder):
    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        if path is None and fullname in ABSENT:
            return None
        return super().find_spec(fullname, path, target)


sys.meta_path[:] = [ImageOnlyPathFinder if finder is PathFinder else finder for finder in sys.meta_path]
"""


def canonical(name: str) -> str:
    """A distribution's name as pip compares them (PEP 503): `PyYAML` and `pyyaml`, `a_b` and `a-b` alike."""
    return re.sub(r"[-_.]+", "-", name).lower()


def image_packages() -> set[str]:
    lines = IMAGE_PACKAGES.read_text().splitlines()
    return {canonical(line) for line in lines if line.strip() and not line.startswith("#")}


def absent_modules() -> list[str]:
    """Top-level import names of the installed distributions that the GPU image lacks.

    cnnbench itself travels to the GPU machine as source (PYTHONPATH=src), so it is never absent.
    """
    keep = image_packages() | {"cnnbench"}
    provided = importlib.metadata.packages_distributions()
    return sorted(name for name, dists in provided.items()
                  if name.isidentifier() and not any(canonical(d) in keep for d in dists))


@pytest.fixture(scope="module")
def image_env(tmp_path_factory) -> dict:
    """The environment of a process that sees only the GPU image's packages (and cnnbench's source)."""
    site = tmp_path_factory.mktemp("gpu-image")
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE.format(absent=absent_modules()))
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT / "src")]), "OMP_NUM_THREADS": "1"}


def bench_gpu(image_env: dict, out: Path, *flags: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "bench/gpu.py", "--smoke", "--out", str(out), *flags], cwd=ROOT,
                          env=image_env, capture_output=True, text=True, timeout=600, **kwargs)


@pytest.fixture(scope="module")
def smoke(image_env, tmp_path_factory) -> Path:
    """`bench/gpu.py --smoke` as the GPU machine's image would run it."""
    out = tmp_path_factory.mktemp("bench") / "out"
    result = bench_gpu(image_env, out)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return out


def test_the_simulated_image_lacks_what_the_gpu_machine_lacks(image_env):
    """The blocked list is derived, not written by hand: the project's packages that the image has not are in it."""
    absent = set(absent_modules())
    assert {"dvc", "dvclive", "kaggle", "imagehash", "cleanlab"} <= absent
    assert not {"torch", "torchvision", "numpy", "scipy", "sklearn", "yaml", "PIL", "cnnbench"} & absent
    probe = ("import importlib.util as u\n"
             "for name in ('dvc', 'imagehash', 'cleanlab'):\n"
             "    assert u.find_spec(name) is None, name\n"
             "    try:\n        __import__(name)\n    except ModuleNotFoundError:\n        pass\n"
             "    else:\n        raise SystemExit(name + ' imported')\n"
             "import yaml, scipy.fftpack, cnnbench.data.near_duplicates\n")
    result = subprocess.run([sys.executable, "-c", probe], env=image_env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_smoke_run_writes_the_documented_json_and_markdown(smoke):
    assert sorted(p.name for p in smoke.iterdir() if not p.name.startswith(".")) == ["gpu-cpu.json", "gpu-cpu.md"]
    report = json.loads((smoke / "gpu-cpu.json").read_text())
    assert report["schema"] == gpu.SCHEMA and report["complete"] is True and report["seconds"] > 0
    assert set(report) == {"schema", "complete", "seconds", "environment", "settings", *gpu.SECTIONS}
    assert not [section for section in gpu.SECTIONS if "error" in report[section]]
    assert report["environment"]["card"] == "cpu" and report["settings"]["ddp_cpu_procs"] == 2

    quoted = {run: ref["sec_per_epoch"] for run, ref in load_params(ROOT / "params.yaml").report.reference.items()}
    epochs = report["epochs"]["rows"]
    assert [r["run"] for r in epochs] == list(quoted) and len(quoted) == 4  # the study's four ResNet18 variants
    for row in epochs:
        assert row["study_seconds_per_epoch"] == quoted[row["run"]] and row["seconds_per_epoch"] > 0
        assert row["ratio_vs_study"] == pytest.approx(row["seconds_per_epoch"] / quoted[row["run"]], abs=1e-4)

    rows = report["throughput"]["rows"]
    assert [(r["model"], r["image_size"]) for r in rows] == [("resnet18_stem1_l3", 32), ("resnet18", 72)]
    for row in rows:
        assert all(row[loop]["images_per_sec"] > 0 and row[loop]["peak_mem_mb"] is None
                   for loop in ("reference", "cnnbench", "resident"))
        assert row["ratio_cnnbench_vs_reference"] == pytest.approx(
            row["cnnbench"]["images_per_sec"] / row["reference"]["images_per_sec"], abs=1e-3)
        assert row["steps_per_epoch"] == row["timed_images"] // row["batch_size"]

    precision = report["precision"]
    assert [r["variant"] for r in precision["rows"]] == ["fp32", "tf32", "bf16", "bf16_compiled"]
    assert precision["amp_active"] is False
    assert all(0.5 < acc <= 1.0 for r in precision["rows"] for acc in r["test_acc"])  # it learnt (chance: 0.1)
    # On the CPU the four variants are the same fp32 computation (the compile backend there is `eager`).
    assert precision["agree"] is True and set(precision["differences"].values()) == {0.0}
    compile_ = report["compile"]
    assert [r["mode"] for r in compile_["rows"]] == ["eager", "compiled"] and compile_["backend"] == "eager"
    assert compile_["speedup"] > 0 and all(r["ms_per_step"] > 0 for r in compile_["rows"])
    ddp = report["ddp"]
    assert ddp["world"] == 2 and ddp["backend"] == "gloo" and ddp["rows"][0]["images_per_sec"] > 0

    text = (smoke / "gpu-cpu.md").read_text()
    assert text == markdown(report)
    assert "| resnet18_stem1_l3 | 32 | 16 |" in text and "2 ranks (gloo)" in text and "agree within 0.02" in text
    assert "| cifar10-resnet18_stem3 | resnet18_stem3 | 32 | 16 | 32 |" in text


@pytest.mark.slow
def test_a_killed_run_keeps_every_row_measured_before(image_env, tmp_path):
    """The GPU session may end mid-run: each row is in --out (both files, whole) from the moment it is measured."""
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "bench/gpu.py", "--smoke", "--out", str(out)], cwd=ROOT, env=image_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not (_rows(out / "gpu-cpu.json") and "cifar10-resnet18" in _text(out / "gpu-cpu.md")) \
                and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    report = json.loads((out / "gpu-cpu.json").read_text())
    assert report["complete"] is False and report["epochs"]["rows"][0]["run"] == "cifar10-resnet18"
    assert report["epochs"]["rows"][0]["seconds_per_epoch"] > 0
    assert "throughput" not in report  # killed long before it: what is there was measured, nothing more
    # The two files are written one after the other, each atomically: the Markdown is whole and holds the row,
    # though a kill between the two writes leaves it one write behind the JSON (its "took N s" older by a second).
    shown, rendered = (out / "gpu-cpu.md").read_text(), markdown(report)
    assert shown.splitlines()[0] == rendered.splitlines()[0] and "(incomplete: the run had not ended)" in shown
    first_row = [next(line for line in text.splitlines() if "cifar10-resnet18" in line) for text in (shown, rendered)]
    assert first_row[0] == first_row[1]  # a row once measured is written as it is, in both files


def _text(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def _rows(path: Path) -> list:
    try:
        return json.loads(path.read_text()).get("epochs", {}).get("rows", [])
    except (FileNotFoundError, json.JSONDecodeError):  # not written yet (a half-written file would fail here too)
        return []


@pytest.mark.slow
def test_failures_are_recorded_where_they_happen_and_the_rest_is_kept(image_env, tmp_path):
    """A compile backend that does not exist fails the compiled precision variant and compile row only; an
    unknown run fails its row; fp32, tf32, bf16 and the eager timing are all kept, and the run completes."""
    result = bench_gpu(image_env, tmp_path, "--sections", "epochs,precision,compile", "--compile-backend", "nope",
                       "--epoch-runs", "no-such-run,cifar10-resnet18_stem1_l3")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "gpu-cpu.json").read_text())
    assert report["complete"] is True
    bad, good = report["epochs"]["rows"]
    assert bad["run"] == "no-such-run" and "no-such-run" in bad["error"] and good["seconds_per_epoch"] > 0
    variants = {r["variant"]: r for r in report["precision"]["rows"]}
    assert all(variants[name]["mean"] > 0.5 for name in ("fp32", "tf32", "bf16"))
    assert "nope" in variants["bf16_compiled"]["error"] and "test_acc" not in variants["bf16_compiled"]
    assert report["precision"]["differences"]["bf16_compiled - bf16"] is None and report["precision"]["agree"]
    eager, compiled = report["compile"]["rows"]
    assert eager["ms_per_step"] > 0 and "nope" in compiled["error"] and "speedup" not in report["compile"]
    text = (tmp_path / "gpu-cpu.md").read_text()
    assert "| bf16_compiled | failed: `" in text and "| compiled | failed: `" in text and "- no-such-run: `" in text
    assert "precision bf16_compiled failed" in result.stdout


def test_the_study_batches_and_sizes_come_from_params():
    params = load_params(ROOT / "params.yaml")
    settings = gpu.resolve(gpu.Settings(), params)
    small, large = params.run(settings.small_run), params.run(settings.large_run)
    assert (settings.small_size, settings.small_batch) == (params.dataset(small.dataset).image_size,
                                                           small.train.batch_size) == (32, 512)
    assert (settings.large_size, settings.large_batch) == (params.dataset(large.dataset).image_size,
                                                           large.train.batch_size) == (224, 128)
    assert gpu.resolve(gpu.SMOKE, params).large_batch == gpu.SMOKE.large_batch  # a setting given wins


def test_an_unknown_run_is_one_line_and_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        gpu.main(["--smoke", "--out", str(tmp_path), "--small-run", "cifar10-resnet81", "--params",
                  str(ROOT / "params.yaml")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "cifar10-resnet81" in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())


def test_an_out_that_cannot_be_made_is_one_line_and_exit_2(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit) as exit_:
        gpu.main(["--smoke", "--out", str(tmp_path / "file" / "out"), "--params", str(ROOT / "params.yaml")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "file/out" in err and len(err.strip().splitlines()) == 1


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


ENVIRONMENT = {"device": "NVIDIA H200", "torch": "2.11", "torchvision": "0.26", "cuda": "12.8", "cudnn": 91000,
               "python": "3.12", "gpus": 1, "cpus": 16, "started": "t", "command": "c"}
THROUGHPUT = {"timed_epochs": 1, "warmup_steps": 10, "warmup_epochs": 1, "workers": 16}


def test_a_skipped_ddp_section_and_gpu_figures_render():
    row = {"model": "resnet18", "image_size": 224, "batch_size": 128, "steps_per_epoch": 100, "timed_images": 12800,
           "resident_data_mb": 1837.5, "reference": {"images_per_sec": 1000.0, "peak_mem_mb": 3000.0},
           "cnnbench": {"images_per_sec": 2000.0, "peak_mem_mb": 3100.0},
           "resident": {"images_per_sec": 2500.0, "peak_mem_mb": 3000.0},
           "ratio_cnnbench_vs_reference": 2.0, "ratio_cnnbench_vs_resident": 0.8}
    epoch = {"run": "cifar10-resnet18_stem3", "model": "resnet18_stem3", "image_size": 32, "batch_size": 512,
             "images": 45000, "steps_per_epoch": 87, "seconds_per_epoch": 3.72, "images_per_sec": 12000.0,
             "study_seconds_per_epoch": 186, "ratio_vs_study": 0.02}
    report = {"schema": 2, "complete": True, "seconds": 300.0, "environment": ENVIRONMENT,
              "epochs": {"timed_epochs": 1, "warmup_steps": 10, "rows": [epoch]},
              "throughput": {**THROUGHPUT, "rows": [row]},
              "ddp": {"skipped": "1 visible GPU(s); DDP needs more than one", "rows": []}}
    text = markdown(report)
    assert "| resnet18 | 224 | 128 | 100 | 1,000 | 2,000 | 2,500 | 2.00x | 0.80x | 3,000 | 3,100 | 1,838 |" in text
    assert "| cifar10-resnet18_stem3 | resnet18_stem3 | 32 | 512 | 45,000 | 3.72 | 186 | 0.020x |" in text
    assert "Skipped: 1 visible GPU(s); DDP needs more than one." in text
    assert "incomplete" not in text


def test_a_failed_loop_row_or_section_is_reported_and_the_rest_kept():
    """A GPU session is too short to lose to one failure: the benchmark records it and goes on."""
    from throughput import attempt

    def out_of_memory():
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail")

    assert attempt(out_of_memory) == {"error": "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"}
    with pytest.raises(TypeError):  # a loop's bug fails its row (gpu.py records it there), not the loop alone
        attempt(lambda: None + 1)
    row = {"model": "resnet18", "image_size": 224, "batch_size": 128, "steps_per_epoch": 100, "timed_images": 12800,
           "resident_data_mb": 1837.5, "reference": {"error": "RuntimeError: DataLoader worker (pid 7) is killed"},
           "cnnbench": {"images_per_sec": 2000.0, "peak_mem_mb": 3100.0},
           "resident": {"images_per_sec": 2500.0, "peak_mem_mb": 3000.0},
           "ratio_cnnbench_vs_reference": None, "ratio_cnnbench_vs_resident": 0.8}
    failed_row = {"model": "mobilenet_v2", "image_size": 224, "batch_size": 128, "error": "TypeError: bad operand"}
    report = {"schema": 2, "complete": False, "seconds": 1.0, "environment": ENVIRONMENT,
              "throughput": {**THROUGHPUT, "rows": [row, failed_row]},
              "compile": {"rows": [], "error": "RuntimeError: no C compiler"}}
    text = markdown(report)
    assert "| resnet18 | 224 | 128 | 100 | n/a | 2,000 | 2,500 | n/a | 0.80x | n/a | 3,100 | 1,838 |" in text
    assert "- resnet18 at 224 px, reference: `RuntimeError: DataLoader worker (pid 7) is killed`" in text
    assert "- mobilenet_v2 at 224 px: `TypeError: bad operand`" in text
    assert "## compile\n\nThe compile section failed: `RuntimeError: no C compiler`" in text
    assert "(incomplete: the run had not ended)" in text
