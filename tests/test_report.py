"""The suite report's README: sections, links and figures, rendered from runs in the stages' real formats.

The fake suite is tests/report_fixtures.py's; the tables, figures and pairs have their own
test modules, and these tests check what the README assembles from them, and the stage.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from cnnbench.core.entry_point import stage_main
from cnnbench.evaluation.predict import NOT_ASKED
from cnnbench.report import render_report
from report_fixtures import CLAIMS, DATASETS, DIGITS_RUNS, REPORT_CFG, links, make_suite, section, table

ROOT = Path(__file__).resolve().parents[1]
CHECKOUT_ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src")}  # subprocesses import this checkout's cnnbench


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> tuple[Path, str]:
    """The whole fake suite rendered once, with a data report and sample sheet for digits: (out dir, README)."""
    base = tmp_path_factory.mktemp("suite")
    runs = make_suite(base / "reports" / "runs" / "demo")
    data = base / "reports" / "data"
    data.mkdir()
    (data / "digits.json").write_text("{}")
    Image.new("RGB", (10, 10)).save(data / "digits_samples.png")
    out = base / "reports" / "demo"
    readme = render_report(runs, out, REPORT_CFG, "demo", DATASETS, data, CLAIMS)
    return out, readme.read_text()


# ------------------------------------------------------------------ the README


def test_each_dataset_has_its_table_and_replicates_are_named(rendered):
    _, readme = rendered
    assert table(readme, "digits")["digits-resnet18"]["run"] == "`digits-resnet18` (n=2, seeds 0, 1)"
    assert table(readme, "cifar10")["cifar10-resnet18"]["study s/epoch"] == "186"
    assert "3 runs (4 trained models: some runs have several seeds)" in section(readme, "digits")
    assert "*test top-1* is the mean with its 95 % interval in parentheses" in section(readme, "digits")


def test_the_readme_opens_with_the_claims_re_tested(rendered):
    _, readme = rendered
    assert readme.index("## The study's claims, re-tested") < readme.index("## butterflies")
    claims = readme.split("## The study's claims, re-tested", 1)[1].split("\n## ", 1)[0]
    rows = {row["claim"]: row for row in claim_rows(claims)}
    stem3 = rows["The 3x3 stem beats the 7x7 stem"]
    assert stem3["the study"] == "76.1 vs — % (best_val_acc)"  # the reference lists only run A
    assert stem3["ours"] == "98.5 vs 96.0 % on 400 test images; 1 and 2 seeds"
    # under 3 seeds a side: the difference is shown, no verdict, and the seeds' spread (digits-resnet18's
    # two) says about how many seeds would decide it
    assert stem3["A − B (95 % interval)"] == "+2.5 points (no interval)" and stem3["detectable (80 % power)"] == ""
    assert re.fullmatch(r"\*\*undecided: needs seeds \(about \d+ seeds a side would decide it\)\*\*", stem3["verdict"])
    faster = rows["MobileNetV2 trains faster than the 3x3-stem ResNet"]
    assert faster["ours"] == "0.80 vs 3.00 s/epoch (0.27×)"
    assert faster["verdict"] == "**undecided: needs seeds**"  # one seed a side: s/epoch's spread is unknown
    device = rows["MobileNetV2 runs faster on a device"]  # latency: decided over the timed calls, not seeds
    assert device["ours"] == "12.00 vs 5.25 (2.29×); 60 and 60 timed calls" and device["verdict"] == "**refuted**"
    assert device["A − B (95 % interval)"].startswith("+7 (+")
    clean = rows["Dropping the noisy classes improves accuracy"]["ours"]
    assert clean.startswith("93.0 vs 87.4 % on the 470 test images of the 94 shared classes") and "restricted" in clean
    assert rows["The 3x3 stem beats the 7x7 stem on CIFAR-10"]["verdict"] == "**not run yet**"


def claim_rows(markdown: str) -> list[dict[str, str]]:
    """The claims table's rows, by column."""
    lines = [ln for ln in markdown.splitlines() if ln.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(header, (c.strip() for c in ln.strip("|").split("|")))) for ln in lines[2:]]


def test_summary_sentences_and_how_the_readme_was_made(rendered):
    _, readme = rendered
    assert "**Test top-1:** no run is distinguishably the most accurate: `digits-resnet18_stem3` and " \
           "`digits-resnet18` are undecided, needs seeds: 1 and 2" in section(readme, "digits")
    assert "| `digits-resnet18_stem3` | `digits-mobilenet_v2` | 1 vs 1 | +5.5 |" in section(readme, "digits")
    assert "No run is evaluated on the test split yet" in section(readme, "cifar10")
    assert "`dvc repro report@demo`" in readme


def test_every_linked_file_exists_and_figures_are_sensible_pngs(rendered):
    out, readme = rendered
    targets = links(readme)
    figures = sorted(t for t in targets if t.startswith("figures/"))
    assert set(figures) == {f"figures/{p.name}" for p in (out / "figures").iterdir()}
    for target in targets:
        assert (out / target).is_file(), target
    for target in figures:
        with Image.open(out / target) as image:
            assert image.format == "PNG"
            width, height = image.size
            assert 500 <= width <= 3000 and 300 <= height <= 4000, (target, image.size)
    names = {Path(f).name for f in figures}
    assert {"digits_val_acc.png", "digits_acc_vs_time.png", "digits_family_curves.png", "digits_confusion.png",
            "digits_comparisons.png",
            "butterflies_per_class.png", "butterflies_confused_pairs.png", "cifar10_val_acc.png",
            "noisy_classes_effect.png"} <= names


def test_inference_cost_table_and_deployment_figure(rendered):
    out, readme = rendered
    digits = section(readme, "digits")
    assert "**Inference cost**, measured by `evaluate` on Test CPU @ 2.0GHz on random images" in digits
    assert "load average was 0.5-1.5 while measuring" in digits
    assert "| `digits-mobilenet_v2` | mobilenet_v2 | 2.24 | 9.0 | 12.00 (p95 18.00) | 7.20 (p95 12.00) |" in digits
    assert "[figures/digits_acc_vs_latency.png]" in digits and (out / "figures" / "digits_acc_vs_latency.png").is_file()
    assert "and NVIDIA H100 80GB HBM3" in section(readme, "butterflies")
    cifar10 = section(readme, "cifar10")  # trained, not evaluated: nothing measured, nothing shown
    assert "Inference cost" not in cifar10 and "acc_vs_latency" not in cifar10


def test_figures_without_data_are_neither_drawn_nor_linked(rendered):
    out, readme = rendered
    for absent in ("cifar10_confusion.png", "butterflies_family_curves.png", "butterflies_confusion.png",
                   "digits_per_class.png", "cifar10_per_class.png"):
        assert absent not in readme
        assert not (out / "figures" / absent).exists()


def test_data_report_links_are_relative_to_the_readme(rendered):
    _, readme = rendered
    assert "[data-cleaning report](../data/digits.json)" in section(readme, "digits")
    assert "[sample images](../data/digits_samples.png)" in section(readme, "digits")
    assert "../data/cifar10" not in readme  # not there: not linked


def test_dropping_classes_section_compares_the_paired_runs(rendered):
    out, readme = rendered
    effect = readme.split("## Effect of dropping classes", 1)[1]
    assert "`butterflies_clean` is `butterflies` without some classes (6 classes dropped: BLUE SPOTTED CROW" in effect
    assert "| resnet18-imagenet | 88.0 | 93.0 | +5.0 |" in effect.split("Not comparable, kept for reference", 1)[1]
    assert "| resnet18-imagenet | 470 | " in effect  # the 94 shared classes' 5 test images each
    assert json.loads((out / "metrics.json").read_text())["digits-resnet18"]["test_top1"] == 0.96


def test_no_pair_no_effect_figure_and_subset_renders_with_stale_figures_removed(tmp_path):
    runs = make_suite(tmp_path / "runs", DIGITS_RUNS)
    out = tmp_path / "out"
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "butterflies_per_class.png").write_bytes(b"stale")
    readme = render_report(runs, out, REPORT_CFG, "demo", DATASETS, tmp_path / "none").read_text()
    assert not (out / "figures" / "butterflies_per_class.png").exists()
    assert "noisy_classes_effect" not in readme and "## butterflies" not in readme
    assert sorted(p.name for p in (out / "figures").iterdir()) == [
        "digits_acc_vs_latency.png", "digits_acc_vs_time.png", "digits_comparisons.png", "digits_confusion.png",
        "digits_family_curves.png",
        "digits_val_acc.png"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left behind


def test_run_without_eval_or_curves_still_appears(tmp_path):
    runs = make_suite(tmp_path / "runs", ["digits-mobilenet_v2"])
    (tmp_path / "runs" / "digits-mobilenet_v2" / "eval" / "seed0" / "metrics.json").unlink()
    for tsv in (tmp_path / "runs" / "digits-mobilenet_v2" / "train" / "seed0" / "plots").rglob("*.tsv"):
        tsv.unlink()
    readme = render_report(runs, tmp_path / "out", REPORT_CFG, "demo", DATASETS, tmp_path / "none").read_text()
    row = table(readme, "digits")["digits-mobilenet_v2"]
    assert row["test top-1 (%)"] == "" and row["best val acc (%)"] == "92.00"
    assert "digits_val_acc.png" not in readme


def test_zero_runs_say_how_to_produce_them(tmp_path):
    out = tmp_path / "out"
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "old.png").write_bytes(b"stale")
    readme = render_report(tmp_path / "runs", out, REPORT_CFG, "offline", DATASETS, tmp_path / "none").read_text()
    assert "No runs of suite `offline` have metrics yet" in readme
    assert "dvc repro report@offline" in readme
    assert list((out / "figures").iterdir()) == []
    assert json.loads((out / "metrics.json").read_text()) == {}


# ------------------------------------------------------------------ the stage


STAGE_ARGS = ["reports/runs/offline", "reports/data", "reports"]  # as dvc.yaml passes them for the offline suite


def _stage_module():
    spec = importlib.util.spec_from_file_location("report_stage", ROOT / "stages" / "report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_stage_renders_the_suite_into_its_dir(tmp_path, monkeypatch):
    params = tmp_path / "params.yaml"
    params.write_text((ROOT / "params.yaml").read_text())
    make_suite(tmp_path / "reports" / "runs" / "offline", ["digits-resnet18_stem3"])
    (tmp_path / "reports" / "data").mkdir()
    (tmp_path / "reports" / "data" / "digits.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    assert _stage_module().main(["offline", *STAGE_ARGS, "--params", str(params)]) == 0
    readme = (tmp_path / "reports" / "README.md").read_text()
    assert "# cnnbench report: suite `offline`" in readme and "## digits" in readme
    assert "[data-cleaning report](data/digits.json)" in readme
    assert "`dvc repro report@offline`" in readme and "`reports/runs/offline/`" in readme
    assert (tmp_path / "reports" / "figures" / "digits_confusion.png").is_file()
    assert (tmp_path / "reports" / "metrics.json").is_file()


def test_stage_unknown_suite_is_one_line_and_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        stage_main(_stage_module().main, ["nope", *STAGE_ARGS, "--params", str(ROOT / "params.yaml")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err.startswith("error: ") and "unknown suite 'nope'" in err and len(err.strip().splitlines()) == 1


def run_stage(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """stages/report.py as DVC runs it."""
    return subprocess.run([sys.executable, str(ROOT / "stages" / "report.py"), *args], cwd=cwd, env=CHECKOUT_ENV,
                          capture_output=True, text=True)


def test_report_package_does_not_import_torch():
    code = "import sys, cnnbench.report; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], env=CHECKOUT_ENV, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_stage_script_runs_as_a_command(tmp_path):
    result = run_stage("offline", *STAGE_ARGS, "--params", "missing.yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: missing.yaml: no such file") and "Traceback" not in result.stderr


def test_stage_script_with_an_unknown_suite_exits_2_with_one_line(tmp_path):
    result = run_stage("nope", *STAGE_ARGS, "--params", str(ROOT / "params.yaml"), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "unknown suite 'nope'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""
    assert not (tmp_path / "reports").exists()


def test_runs_not_measured_as_deployed_are_named_under_the_deployment_table(tmp_path):
    runs = make_suite(tmp_path / "runs", ["digits-resnet18", "digits-resnet18_stem3", "digits-mobilenet_v2"])
    deployed = {"deployment_measured": True, "onnx_top1_agreement": 1.0, "onnx_test_top1": 0.97,
                "int8_test_top1": 0.96, **{f"latency_{r}_b1_1t_ms": 3.0 for r in ("ort", "ort_int8", "cpu_224",
                                                                                     "ort_224", "ort_int8_224")}}
    for run, extra in (("digits-resnet18", deployed), ("digits-mobilenet_v2", deployed),
                       ("digits-resnet18_stem3", {"deployment_measured": False, "deployment_reason": NOT_ASKED})):
        path = runs / run / "eval" / "seed0" / "inference.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **extra}))
    readme = render_report(runs, tmp_path / "out", REPORT_CFG, "demo", DATASETS, tmp_path / "data", []).read_text()
    digits = section(readme, "digits")
    deployment = digits.split("**As deployed**", 1)[1].split("\n\n**", 1)[0]
    rows = [line.split(" |")[0] for line in deployment.splitlines() if line.startswith("| `")]
    assert rows == ["| `digits-mobilenet_v2`", "| `digits-resnet18` (n=2, seeds 0, 1)"]
    assert deployment.rstrip().endswith(f"\n\nNot measured as deployed: `digits-resnet18_stem3`: {NOT_ASKED}.")


def test_timings_of_a_run_trained_on_a_busy_machine_carry_a_warning(tmp_path):
    runs = make_suite(tmp_path / "runs", ["digits-resnet18", "digits-mobilenet_v2"])
    quiet = render_report(runs, tmp_path / "quiet", REPORT_CFG, "demo", DATASETS, tmp_path / "data", []).read_text()
    assert "busy machine" not in quiet
    # One seed of resnet18 trained while the 1-minute load average reached 3.4 on the 2 CPUs it recorded.
    path = runs / "digits-resnet18" / "train" / "seed1" / "metrics.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "train_load_max": 3.4}))
    digits = section(render_report(runs, tmp_path / "busy", REPORT_CFG, "demo", DATASETS, tmp_path / "data",
                                   []).read_text(), "digits")
    parts = digits.split("\n\n")
    after_table = parts[next(i for i, part in enumerate(parts) if part.startswith("| run")) + 1]
    assert after_table.startswith("**Warning: timed on a busy machine.** The load average went above the CPUs while "
                                  "training `digits-resnet18` (load up to 3.4 on 2 CPUs): ")
    assert "digits-mobilenet_v2" not in after_table
