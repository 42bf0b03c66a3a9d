"""The CI gate, through the `cnnbench` command: check-metrics and update-baseline on fake runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from cnnbench import cli
from cnnbench.evaluation.gate import check_metrics, collect_metrics
from cnnbench.params.config import CheckConfig

ROOT = Path(__file__).resolve().parents[1]
METRICS = {"digits-resnet18": (0.97, 0.965), "digits-mobilenet_v2": (0.93, 0.925)}


def write_runs(root: Path, metrics: dict[str, tuple[float, float]]) -> Path:
    """Runs as the evaluate stage writes them (eval/metrics.json) beside train's summary."""
    for run, (top1, f1) in metrics.items():
        (root / run / "eval" / "seed0").mkdir(parents=True, exist_ok=True)
        (root / run / "train" / "seed0").mkdir(parents=True, exist_ok=True)
        (root / run / "eval" / "seed0" / "metrics.json").write_text(json.dumps(
            {"test_top1": top1, "test_top5": 0.99, "test_macro_f1": f1, "test_loss": 0.2, "num_test": 360,
             "num_classes": 10}))
        (root / run / "train" / "seed0" / "metrics.json").write_text(json.dumps(
            {"train": {"loss": 0.1, "acc": 0.99}, "val": {"loss": 0.2, "acc": 0.96}, "step": 11,
             "best_val_acc": 0.96, "sec_per_epoch": 1.5, "device": "cpu"}))
    return root


@pytest.fixture
def project(tmp_path) -> dict[str, Path]:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["check"] = {"suite": "offline", "metrics": ["test_top1", "test_macro_f1"], "tolerance": 0.02,
                    "tolerances": {}}
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    return {"params": params, "runs": write_runs(tmp_path / "runs", METRICS), "baseline": tmp_path / "baseline.json"}


def cnnbench(project, command: str, capsys) -> tuple[int, str, str]:
    argv = ["--params", str(project["params"]), command, "--runs-dir", str(project["runs"]),
            "--baseline", str(project["baseline"])]
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    out = capsys.readouterr()
    return exit_.value.code, out.out, out.err


def set_params(project, **check) -> None:
    raw = yaml.safe_load(project["params"].read_text())
    raw["check"].update(check)
    project["params"].write_text(yaml.safe_dump(raw))


def test_update_then_check_round_trips(project, capsys):
    code, out, _ = cnnbench(project, "update-baseline", capsys)
    assert code == 0 and f"wrote {project['baseline']}" in out
    baseline = json.loads(project["baseline"].read_text())
    assert baseline == {"suite": "offline", "metrics": {
        "digits-mobilenet_v2": {"test_macro_f1": 0.925, "test_top1": 0.93},
        "digits-resnet18": {"test_macro_f1": 0.965, "test_top1": 0.97}}}
    assert list(baseline["metrics"]) == sorted(baseline["metrics"])  # sorted on disk: readable diffs
    code, out, _ = cnnbench(project, "check-metrics", capsys)
    assert code == 0
    assert out.strip().splitlines()[-1] == "check-metrics: 4 ok, 0 failed"
    header = out.splitlines()[0].split()
    assert header == ["run", "metric", "baseline", "now", "delta", "tolerance", "verdict"]


def test_drop_beyond_tolerance_fails_and_shows_the_row(project, capsys):
    cnnbench(project, "update-baseline", capsys)
    write_runs(project["runs"], {"digits-resnet18": (0.94, 0.965)})
    code, out, _ = cnnbench(project, "check-metrics", capsys)
    assert code == 1
    drop = [line.split() for line in out.splitlines() if line.endswith("DROP")]
    assert drop == [["digits-resnet18", "test_top1", "0.9700", "0.9400", "-0.0300", "0.0200", "DROP"]]
    assert out.strip().splitlines()[-1] == "check-metrics: 3 ok, 1 failed"
    assert "cnnbench update-baseline" in out


def test_noise_within_tolerance_passes(project, capsys):
    cnnbench(project, "update-baseline", capsys)
    write_runs(project["runs"], {"digits-resnet18": (0.955, 0.95), "digits-mobilenet_v2": (0.93, 0.945)})
    code, out, _ = cnnbench(project, "check-metrics", capsys)
    assert code == 0 and "DROP" not in out
    assert "-0.0150" in out and "+0.0200" in out


def test_exactly_the_tolerance_passes(project, capsys):
    cnnbench(project, "update-baseline", capsys)
    write_runs(project["runs"], {"digits-resnet18": (0.95, 0.965)})  # 0.97 - 0.95 is 0.0199999... or 0.02000...1
    code, _, _ = cnnbench(project, "check-metrics", capsys)
    assert code == 0


def test_per_metric_tolerance_overrides_the_default(project, capsys):
    cnnbench(project, "update-baseline", capsys)
    write_runs(project["runs"], {"digits-resnet18": (0.97, 0.925)})  # macro-F1 -0.04
    assert cnnbench(project, "check-metrics", capsys)[0] == 1
    set_params(project, tolerances={"test_macro_f1": 0.05})
    code, out, _ = cnnbench(project, "check-metrics", capsys)
    assert code == 0
    row = next(r for r in map(str.split, out.splitlines()) if r[:2] == ["digits-resnet18", "test_macro_f1"])
    assert row[-2:] == ["0.0500", "ok"]


def test_missing_run_fails(project, capsys):
    cnnbench(project, "update-baseline", capsys)
    for path in sorted((project["runs"] / "digits-mobilenet_v2").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (project["runs"] / "digits-mobilenet_v2").rmdir()
    code, out, _ = cnnbench(project, "check-metrics", capsys)
    assert code == 1
    missing = [line.split() for line in out.splitlines() if line.endswith("MISSING")]
    assert [m[:2] for m in missing] == [["digits-mobilenet_v2", "test_top1"], ["digits-mobilenet_v2", "test_macro_f1"]]
    assert out.strip().splitlines()[-1] == "check-metrics: 2 ok, 2 failed"


def test_missing_metric_fails(project, capsys):
    cnnbench(project, "update-baseline", capsys)
    path = project["runs"] / "digits-resnet18" / "eval" / "seed0" / "metrics.json"
    data = json.loads(path.read_text())
    data["test_macro_f1"] = None
    path.write_text(json.dumps(data))
    code, out, _ = cnnbench(project, "check-metrics", capsys)
    assert code == 1
    assert [r[:2] for r in map(str.split, out.splitlines()) if r[-1:] == ["MISSING"]] == [
        ["digits-resnet18", "test_macro_f1"]]


def test_new_run_is_reported_and_does_not_fail(project, capsys):
    cnnbench(project, "update-baseline", capsys)
    write_runs(project["runs"], {"digits-resnet18_stem3": (0.5, 0.5)})
    code, out, _ = cnnbench(project, "check-metrics", capsys)
    assert code == 0
    assert sum(line.endswith("NEW") for line in out.splitlines()) == 2
    assert out.strip().splitlines()[-1] == "check-metrics: 4 ok, 0 failed, 2 new"


def test_missing_baseline_is_exit_2_with_the_fix(project, capsys):
    code, out, err = cnnbench(project, "check-metrics", capsys)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and "cnnbench update-baseline" in err and str(project["baseline"]) in err
    assert len(err.strip().splitlines()) == 1


def test_broken_baseline_is_exit_2(project, capsys):
    project["baseline"].write_text("{oops")
    code, _, err = cnnbench(project, "check-metrics", capsys)
    assert code == 2 and "unreadable baseline" in err and "cnnbench update-baseline" in err


def test_values_fall_back_to_train_metrics(tmp_path):
    write_runs(tmp_path, {"r": (0.9, 0.8)})
    cfg = CheckConfig(suite="offline", metrics=("test_top1", "best_val_acc", "final_val_acc"))  # none has final_val_acc
    assert collect_metrics(cfg, tmp_path) == {"r": {"test_top1": 0.9, "best_val_acc": 0.96}}


def test_nan_now_is_a_broken_run(tmp_path):
    write_runs(tmp_path / "runs", {"r": (0.9, 0.8)})
    baseline = tmp_path / "b.json"
    baseline.write_text(json.dumps({"suite": "offline", "metrics": {"r": {"test_top1": 0.9}}}))
    (tmp_path / "runs" / "r" / "eval" / "seed0" / "metrics.json").write_text('{"test_top1": NaN}')
    ok, table = check_metrics(CheckConfig(metrics=("test_top1",)), tmp_path / "runs", baseline)
    assert not ok and "BAD" in table


# ------------------------------------------------------------------ a gate that would check nothing fails


def test_a_misspelt_gated_metric_fails_the_gate(project, capsys):
    cnnbench(project, "update-baseline", capsys)
    set_params(project, metrics=["test_top1x"])
    code, out, err = cnnbench(project, "check-metrics", capsys)
    assert code == 2 and "'test_top1x' is not a metric the gate knows the direction of" in err


def test_an_empty_baseline_fails_the_gate(project, capsys):
    project["baseline"].write_text(json.dumps({"suite": "offline", "metrics": {}}))
    code, _, err = cnnbench(project, "check-metrics", capsys)
    assert code == 2 and "holds no metrics, so the gate would check nothing" in err


def test_a_baseline_of_other_runs_fails_the_gate(project, capsys):
    project["baseline"].write_text(json.dumps({"suite": "offline", "metrics": {"renamed-run": {"test_top1": 0.9}}}))
    code, _, err = cnnbench(project, "check-metrics", capsys)
    assert code == 2 and "the gate would compare nothing" in err


def test_update_baseline_refuses_a_metric_no_run_has(project, capsys):
    set_params(project, metrics=["test_top1", "nowhere"])
    code, _, err = cnnbench(project, "update-baseline", capsys)
    assert code == 2 and "nowhere" in err and not project["baseline"].exists()


def write_seeds(root: Path, run: str, top1s: tuple[float, ...]) -> None:
    """A run with one seed per value of top-1 (its macro-F1 0.01 below), as evaluate writes several seeds."""
    for seed, top1 in enumerate(top1s):
        (root / run / "eval" / f"seed{seed}").mkdir(parents=True, exist_ok=True)
        (root / run / "eval" / f"seed{seed}" / "metrics.json").write_text(json.dumps(
            {"test_top1": top1, "test_macro_f1": top1 - 0.01, "num_test": 360, "num_classes": 10}))


def test_the_gate_can_take_its_tolerance_from_the_seed_spread_the_baseline_records(project, capsys):
    write_seeds(project["runs"], "digits-seeds", (0.97, 0.98, 0.99))  # std 0.01
    write_seeds(project["runs"], "digits-more", (0.90, 0.92))  # std 0.0141
    cnnbench(project, "update-baseline", capsys)
    spread = json.loads(project["baseline"].read_text())["seed_spread"]
    pooled = ((0.0001 * 2 + 0.0002 * 1) / 3) ** 0.5  # variances weighted by their degrees of freedom
    assert spread["test_top1"] == {"std": pytest.approx(pooled, abs=1e-6), "dof": 3,
                                   "runs": ["digits-more", "digits-seeds"]}
    set_params(project, tolerance_from_seeds=True)
    tolerance = 3 * 2 ** 0.5 * pooled  # 0.0490: two seeds' values differ by more than this 3 times in 1,000
    write_runs(project["runs"], {"digits-resnet18": (0.97 - 0.045, 0.965)})
    code, out, _ = cnnbench(project, "check-metrics", capsys)
    row = next(r for r in map(str.split, out.splitlines()) if r[:2] == ["digits-resnet18", "test_top1"])
    assert code == 0 and row[-2:] == [f"{tolerance:.4f}", "ok"]
    write_runs(project["runs"], {"digits-resnet18": (0.97 - 0.055, 0.965)})
    code, out, _ = cnnbench(project, "check-metrics", capsys)
    assert code == 1 and [line.split()[:2] for line in out.splitlines() if line.endswith("DROP")] == [
        ["digits-resnet18", "test_top1"]]


def test_a_gate_from_seed_spread_with_no_spread_recorded_checks_nothing_and_fails(project, capsys):
    cnnbench(project, "update-baseline", capsys)  # every run has one seed: no spread
    assert "seed_spread" not in json.loads(project["baseline"].read_text())
    set_params(project, tolerance_from_seeds=True)
    code, _, err = cnnbench(project, "check-metrics", capsys)
    assert code == 2 and "the baseline records no seed spread of test_top1, test_macro_f1" in err
    set_params(project, tolerances={"test_top1": 0.02, "test_macro_f1": 0.03})  # explicit ones still do
    assert cnnbench(project, "check-metrics", capsys)[0] == 0
