"""evaluate and predict: test metrics a user can recompute, and `cnnbench predict` on whatever files it gets.

A tiny ResNet is trained for a few seconds on the embedded digits (prepared at 8x8 by the real
pipeline functions), once with all ten classes and once with four, so top-5 is undefined.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image
from sklearn.metrics import accuracy_score, f1_score, top_k_accuracy_score
from statsmodels.stats.proportion import proportion_confint

from cnnbench.cli import main as cnnbench_main
from cnnbench.data.arrays import load_prepared, write_prepared
from cnnbench.data.fetch import fetch_source
from cnnbench.data.prepare import prepare_dataset
from cnnbench.evaluation.class_scores import SCORES, load_scores
from cnnbench.evaluation.predict import INFERENCE, evaluate_run, load_model, predict_probs
from cnnbench.params.config import (
    AugmentConfig,
    DatasetConfig,
    EvaluateConfig,
    NearDuplicatesConfig,
    RunConfig,
    SourceConfig,
    TrainConfig,
    parse_model_spec,
)
from cnnbench.training.checkpoint import BEST
from cnnbench.training.loop import train_run
from fixtures import TINY_RESNET

ROOT = Path(__file__).resolve().parents[1]
TINY = parse_model_spec("tiny", TINY_RESNET)
PREDICTIONS_COLUMNS = ["index", "id", "true", "predicted", "confidence"]


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("raw") / "digits"
    fetch_source(SourceConfig("digits", "sklearn:digits", "npz"), out)
    return out


def _trained(raw: Path, base: Path, drop_classes: tuple[str, ...] = ()) -> tuple[Path, Path]:
    """(prepared data dir, run dir holding best.pt) of a 3-epoch tiny run."""
    cfg = DatasetConfig("digits", "digits", image_size=8, val_fraction=0.1, test_fraction=0.2, split_seed=0,
                        near_duplicates=NearDuplicatesConfig(max_distance=0),  # as params.yaml's digits
                        drop_classes=drop_classes)
    write_prepared(prepare_dataset(cfg, raw), base / "prepared")
    run = RunConfig("tiny", "offline", "digits", "tiny",
                    TrainConfig(epochs=3, batch_size=64, lr=0.2, augment=AugmentConfig(pad=1, flip=True)))
    train_run(run, TINY, base / "prepared", base / "run", base / "live", device="cpu", progress=False)
    return base / "prepared", base / "run"


@pytest.fixture(scope="module")
def ten_classes(raw, tmp_path_factory):
    return _trained(raw, tmp_path_factory.mktemp("ten"))


@pytest.fixture(scope="module")
def four_classes(raw, tmp_path_factory):
    return _trained(raw, tmp_path_factory.mktemp("four"), drop_classes=tuple("456789"))


def read_predictions(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"id": str, "true": str, "predicted": str})


# ------------------------------------------------------------------ evaluate


def test_metrics_agree_with_scikit_learn_on_the_written_predictions(ten_classes, tmp_path):
    data_dir, run_dir = ten_classes
    returned = evaluate_run(run_dir / BEST, data_dir, tmp_path, EvaluateConfig(batch_size=100), device="cpu",
                            tta="hflip")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics == returned
    test = load_prepared(data_dir, splits=("test",))
    classes, split = test.classes, test.splits["test"]

    predictions = read_predictions(tmp_path / "predictions.csv")
    assert list(predictions.columns) == PREDICTIONS_COLUMNS
    assert len(predictions) == metrics["num_test"] == len(split.y) == 360
    assert predictions["index"].tolist() == list(range(len(split.y)))
    assert predictions["id"].tolist() == split.ids
    assert predictions["true"].tolist() == [classes[i] for i in split.y]
    assert predictions["confidence"].between(1 / len(classes), 1.0).all()

    assert metrics["test_top1"] == pytest.approx(accuracy_score(predictions["true"], predictions["predicted"]))
    assert metrics["test_macro_f1"] == pytest.approx(
        f1_score(predictions["true"], predictions["predicted"], labels=classes, average="macro", zero_division=0))
    model, ckpt = load_model(run_dir / BEST, torch.device("cpu"))
    probs = predict_probs(model, split.x, ckpt.mean, ckpt.std, torch.device("cpu"))
    assert [classes[i] for i in probs.argmax(1)] == predictions["predicted"].tolist()
    assert metrics["test_top5"] == pytest.approx(top_k_accuracy_score(split.y, probs, k=5, labels=range(10)))
    assert metrics["test_top1"] <= metrics["test_top5"] <= 1.0
    assert 0.0 <= metrics["test_top1_tta"] <= 1.0
    assert metrics["checkpoint_epoch"] == ckpt.epoch and metrics["num_classes"] == 10

    per_class = pd.read_csv(tmp_path / "per_class.csv", dtype={"class": str})
    assert per_class["class"].tolist() == classes
    assert per_class["support"].tolist() == predictions["true"].value_counts().reindex(classes).tolist()
    assert per_class["f1"].mean() == pytest.approx(metrics["test_macro_f1"], abs=1e-4)


def test_top1_comes_with_its_wilson_interval_and_scores_match_the_predictions(ten_classes, tmp_path):
    data_dir, run_dir = ten_classes
    metrics = evaluate_run(run_dir / BEST, data_dir, tmp_path, EvaluateConfig(), device="cpu")
    predictions = read_predictions(tmp_path / "predictions.csv")
    correct = int((predictions["true"] == predictions["predicted"]).sum())
    low, high = proportion_confint(correct, len(predictions), alpha=0.05, method="wilson")
    assert (metrics["test_top1_ci_low"], metrics["test_top1_ci_high"]) == pytest.approx((low, high))
    assert metrics["test_top1_ci_low"] < metrics["test_top1"] < metrics["test_top1_ci_high"]

    scores = load_scores(tmp_path / SCORES)
    assert scores.probs.dtype == np.float16 and scores.probs.shape == (len(predictions), 10)
    assert scores.ids.tolist() == predictions["id"].tolist()
    assert scores.classes.tolist() == load_prepared(data_dir, splits=()).classes
    predicted = [int(np.flatnonzero(scores.classes == p)[0]) for p in predictions["predicted"]]
    rows = np.arange(len(predictions))
    assert (scores.probs[rows, predicted] == scores.probs.max(axis=1)).all()  # float16 may tie, never contradict
    assert np.allclose(scores.probs.astype(float).sum(axis=1), 1.0, atol=0.01)


def own_forward(run_dir: Path, data_dir: Path, flip: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(softmax of the model's own forward on the test images, labels), normalised here by hand."""
    model, ckpt = load_model(run_dir / BEST, torch.device("cpu"))
    test = load_prepared(data_dir, splits=("test",)).splits["test"]
    x = torch.from_numpy(test.x).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(ckpt.mean).view(1, -1, 1, 1)) / torch.tensor(ckpt.std).view(1, -1, 1, 1)
    with torch.no_grad():
        return torch.softmax(model(x.flip(3) if flip else x), dim=1).numpy(), test.y


def test_with_tta_none_every_output_is_the_models_plain_forward(ten_classes, tmp_path):
    data_dir, run_dir = ten_classes
    metrics = evaluate_run(run_dir / BEST, data_dir, tmp_path, EvaluateConfig(), device="cpu", tta="none")
    probs, y = own_forward(run_dir, data_dir)
    scores = load_scores(tmp_path / SCORES)
    assert np.abs(scores.probs.astype(np.float32) - probs).max() < 1e-3  # scores.npz is float16
    assert metrics["test_top1"] == pytest.approx(float((probs.argmax(1) == y).mean()))
    assert "test_top1_tta" not in metrics
    assert "test_top1_tta" not in json.loads((tmp_path / "metrics.json").read_text())


def test_with_tta_hflip_the_extra_top1_is_that_of_the_mean_with_the_mirror(ten_classes, tmp_path):
    data_dir, run_dir = ten_classes
    metrics = evaluate_run(run_dir / BEST, data_dir, tmp_path, EvaluateConfig(), device="cpu", tta="hflip")
    (plain, y), (mirrored, _) = own_forward(run_dir, data_dir), own_forward(run_dir, data_dir, flip=True)
    assert metrics["test_top1_tta"] == pytest.approx(float((((plain + mirrored) / 2).argmax(1) == y).mean()))
    assert metrics["test_top1"] == pytest.approx(float((plain.argmax(1) == y).mean()))  # the rest stays plain
    assert np.abs(load_scores(tmp_path / SCORES).probs.astype(np.float32) - plain).max() < 1e-3


def test_a_bad_tta_in_params_stops_the_evaluate_stage_with_one_line(tmp_path):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["datasets"]["digits"]["tta"] = "flip"
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw, sort_keys=False))
    proc = subprocess.run([sys.executable, "stages/evaluate.py", "digits-resnet18", str(tmp_path / "data"),
                           str(tmp_path / "run"), str(tmp_path / "out"), "--params", str(params)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: params: datasets.digits.tta: must be one of none, hflip, not 'flip' (hflip only where a mirrored "
        "image keeps its class)"]
    assert not (tmp_path / "out").exists()


def test_top5_is_null_with_four_classes(four_classes, tmp_path):
    data_dir, run_dir = four_classes
    evaluate_run(run_dir / BEST, data_dir, tmp_path, EvaluateConfig(), device="cpu")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["test_top5"] is None and metrics["num_classes"] == 4
    per_class = pd.read_csv(tmp_path / "per_class.csv", dtype={"class": str})
    assert per_class["class"].tolist() == ["0", "1", "2", "3"]
    predictions = read_predictions(tmp_path / "predictions.csv")
    assert metrics["test_top1"] == pytest.approx(accuracy_score(predictions["true"], predictions["predicted"]))


# ------------------------------------------------------------------ inference cost


def test_evaluate_writes_the_inference_cost_beside_the_metrics_not_in_them(ten_classes, tmp_path):
    data_dir, run_dir = ten_classes
    metrics = evaluate_run(run_dir / BEST, data_dir, tmp_path, EvaluateConfig(inference_cpu_batch=8),
                           device="cpu")
    cost = json.loads((tmp_path / INFERENCE).read_text())
    model, _ = load_model(run_dir / BEST, torch.device("cpu"))
    assert cost["params"] == sum(p.numel() for p in model.parameters())
    assert cost["image_size"] == 8 and cost["throughput_cpu_batch"] == 8 and cost["gpu"] is None
    assert 0 < cost["latency_cpu_b1_1t_ms"] <= cost["latency_cpu_b1_1t_p95_ms"]
    # Timings stay out of what `dvc metrics diff` compares.
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    assert not set(metrics) & set(cost)


def test_inference_off_in_params_says_so_and_off_in_the_call_writes_nothing(ten_classes, tmp_path):
    data_dir, run_dir = ten_classes
    evaluate_run(run_dir / BEST, data_dir, tmp_path / "a", EvaluateConfig(inference=False),
                 device="cpu")
    # DVC requires the declared output: it exists, and says why it holds no figures.
    assert json.loads((tmp_path / "a" / INFERENCE).read_text())["measured"] is False
    evaluate_run(run_dir / BEST, data_dir, tmp_path / "b", EvaluateConfig(), device="cpu",
                 inference=False)
    assert (tmp_path / "b" / "metrics.json").is_file() and not (tmp_path / "b" / INFERENCE).exists()


@pytest.mark.slow
def test_the_evaluate_stage_writes_inference_json(ten_classes, tmp_path):
    data_dir, run_dir = ten_classes
    shutil.copytree(run_dir, tmp_path / "run" / "seed0")  # the stage reads one seed<k>/ per seed of the run
    result = subprocess.run([sys.executable, str(ROOT / "stages" / "evaluate.py"), "digits-resnet18", str(data_dir),
                             str(tmp_path / "run"), str(tmp_path / "eval"), "--params", str(ROOT / "params.yaml"),
                             "--device", "cpu"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    cost = json.loads((tmp_path / "eval" / "seed0" / INFERENCE).read_text())
    assert cost["latency_cpu_b1_1t_ms"] > 0 and cost["image_size"] == 8


# ------------------------------------------------------------------ predict


def _encoded(image: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt)
    return buf.getvalue()


def _gradient(width: int, height: int) -> np.ndarray:
    """Smooth RGB content: compresses well even when large."""
    yy, xx = np.mgrid[0:height, 0:width]
    return np.stack([xx * 255 // max(1, width - 1), yy * 255 // max(1, height - 1),
                     (xx + yy) * 255 // max(1, width + height - 2)], axis=-1).astype(np.uint8)


def odd_images(directory: Path) -> tuple[list[str], list[str]]:
    """(readable images of awkward kinds, files no decoder can read); the paths, in that order."""
    directory.mkdir(parents=True, exist_ok=True)
    rgba = Image.fromarray(_gradient(1600, 1200)).convert("RGBA")
    rgba.putalpha(128)
    gray = Image.fromarray(_gradient(64, 48)[..., 0], mode="L")
    files = {
        "large_rgba.png": _encoded(rgba, "PNG"),
        "gray.jpg": _encoded(gray, "JPEG"),
        "cmyk.jpg": _encoded(Image.fromarray(_gradient(40, 30)).convert("CMYK"), "JPEG"),
        "tiny_3x5.png": _encoded(Image.fromarray(_gradient(3, 5)), "PNG"),
        "really_png.jpg": _encoded(Image.fromarray(_gradient(20, 20)), "PNG"),
        "random.jpg": np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "empty.png": b"",
    }
    for name, data in files.items():
        (directory / name).write_bytes(data)
    good = [str(directory / name) for name in list(files)[:5]]
    bad = [str(directory / "random.jpg"), str(directory / "empty.png"), str(directory / "missing.jpg")]
    return good, bad


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        cnnbench_main(argv)
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def parse_predictions(out: str) -> dict[str, list[tuple[str, float]] | str]:
    """`cnnbench predict` output: path -> [(class, probability)], or path -> its error message."""
    parsed: dict = {}
    current = None
    for line in out.splitlines():
        if line.startswith("  "):
            percent, name = line.split()
            parsed[current].append((name, float(percent.rstrip("%")) / 100))
        elif ": error: " in line:
            path, message = line.split(": error: ", 1)
            parsed[path] = message
        else:
            assert line.endswith(":"), line
            current = line[:-1]
            parsed[current] = []
    return parsed


def test_predict_odd_files_each_get_a_top5_or_an_error_line(ten_classes, tmp_path, capsys):
    _, run_dir = ten_classes
    good, bad = odd_images(tmp_path / "images")
    mixed = [good[0], bad[0], good[1], good[2], bad[1], good[3], bad[2], good[4]]
    code, out, err = run_cli(["predict", str(run_dir), *mixed, "--device", "cpu"], capsys)
    assert code == 1, err
    parsed = parse_predictions(out)
    assert list(parsed) == mixed  # one entry per file, in the order given
    for path in good:
        top = parsed[path]
        assert isinstance(top, list) and len(top) == 5, (path, top)
        names, probs = [n for n, _ in top], [p for _, p in top]
        assert len(set(names)) == 5 and set(names) <= {str(d) for d in range(10)}
        assert probs == sorted(probs, reverse=True)
        assert 0 < sum(probs) <= 1 + 5e-4  # each printed to 0.01%
    assert parsed[bad[0]].startswith("undecodable: not an image in one of the formats opened (JPEG, PNG")
    assert parsed[bad[1]] == "empty file"
    assert parsed[bad[2]].startswith("cannot read: No such file")
    assert out.count("error:") == 3

    code, out, _ = run_cli(["predict", str(run_dir), *good, "--device", "cpu"], capsys)
    assert code == 0 and "error:" not in out
    assert parse_predictions(out).keys() == set(good)


def test_predict_json_says_the_same_as_the_text(ten_classes, tmp_path, capsys):
    _, run_dir = ten_classes
    good, bad = odd_images(tmp_path / "images")
    files = [good[0], bad[1], good[1]]
    _, text, _ = run_cli(["predict", str(run_dir), *files, "--device", "cpu", "--top-k", "3"], capsys)
    code, out, err = run_cli(["predict", str(run_dir), *files, "--device", "cpu", "--top-k", "3", "--json"], capsys)
    assert code == 1, err
    records = json.loads(out)
    assert [r["path"] for r in records] == files and [r["error"] for r in records] == [None, "empty file", None]
    parsed = parse_predictions(text)
    for record in (records[0], records[2]):
        shown = parsed[record["path"]]  # the text prints 0.01 % steps
        assert [t["class"] for t in record["top"]] == [name for name, _ in shown]
        assert [t["probability"] for t in record["top"]] == pytest.approx([p for _, p in shown], abs=5.1e-5)


def test_predict_refuses_an_eps_named_jpg_and_never_renders_it(ten_classes, tmp_path, capsys, monkeypatch):
    from PIL import EpsImagePlugin

    rendered = []
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *args, **kwargs: rendered.append(args))
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\nshowpage\n%%EOF\n")
    code, out, err = run_cli(["predict", str(ten_classes[1]), str(photo), "--device", "cpu"], capsys)
    assert code == 1 and rendered == [] and "Traceback" not in err
    assert out.strip() == (f"{photo}: error: not a raster image: a PostScript (EPS) file; only JPEG, PNG, GIF, BMP, "
                           "TIFF, WEBP, PPM are opened, and PostScript is never run")


def test_predict_with_four_classes_lists_all_four(four_classes, tmp_path, capsys):
    _, run_dir = four_classes
    good, _ = odd_images(tmp_path / "images")
    code, out, _ = run_cli(["predict", str(run_dir), good[3], "--device", "cpu"], capsys)
    top = parse_predictions(out)[good[3]]
    assert code == 0 and len(top) == 4 and sum(p for _, p in top) == pytest.approx(1.0, abs=5e-4)


def test_predict_unknown_run_exits_2_with_one_line(tmp_path, capsys):
    image = tmp_path / "x.png"
    image.write_bytes(_encoded(Image.fromarray(_gradient(8, 8)), "PNG"))
    code, out, err = run_cli(["predict", "no-such-run", str(image), "--runs-dir", str(tmp_path)], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: no-such-run: no checkpoint found")


@pytest.mark.parametrize("content", [b"", b"not a checkpoint\n", bytes(range(256)) * 8])
def test_predict_from_a_file_that_is_not_a_checkpoint_exits_2_with_one_line(tmp_path, capsys, content):
    checkpoint = tmp_path / "broken.pt"
    checkpoint.write_bytes(content)
    image = tmp_path / "x.png"
    image.write_bytes(_encoded(Image.fromarray(_gradient(8, 8)), "PNG"))
    code, out, err = run_cli(["predict", str(checkpoint), str(image), "--device", "cpu"], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith(f"error: {checkpoint}: not a cnnbench checkpoint")


# ------------------------------------------------------------------ checkpoints from elsewhere


class _WritesAMarker:
    """A pickle payload that creates a file when unpickled: what a hostile checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _hostile_best(ten_classes, directory: Path, marker: Path) -> Path:
    """A best.pt that holds the real checkpoint's fields plus a payload that runs code when unpickled."""
    _, run_dir = ten_classes
    fields = torch.load(run_dir / BEST, weights_only=True)
    directory.mkdir(parents=True, exist_ok=True)
    torch.save({**fields, "payload": _WritesAMarker(marker)}, directory / BEST)
    return directory


def test_predict_on_a_hostile_checkpoint_runs_no_code(ten_classes, tmp_path, capsys):
    marker = tmp_path / "pwned"
    run_dir = _hostile_best(ten_classes, tmp_path / "run", marker)
    image = tmp_path / "x.png"
    image.write_bytes(_encoded(Image.fromarray(_gradient(8, 8)), "PNG"))
    code, out, err = run_cli(["predict", str(run_dir), str(image), "--device", "cpu"], capsys)
    assert code == 2 and out == "" and not marker.exists()
    assert err.count("\n") == 1 and "not a cnnbench checkpoint" in err and "never code" in err


def test_the_evaluate_stage_on_a_hostile_checkpoint_runs_no_code(ten_classes, tmp_path):
    marker = tmp_path / "pwned"
    data_dir, _ = ten_classes
    run_dir = _hostile_best(ten_classes, tmp_path / "run" / "seed0", marker).parent
    result = subprocess.run([sys.executable, str(ROOT / "stages" / "evaluate.py"), "digits-resnet18", str(data_dir),
                             str(run_dir), str(tmp_path / "eval"), "--params", str(ROOT / "params.yaml"),
                             "--device", "cpu"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and not marker.exists(), result.stderr
    assert "Traceback" not in result.stderr and "not a cnnbench checkpoint" in result.stderr


def test_a_checkpoint_whose_classes_do_not_match_its_weights_is_a_clear_error(ten_classes, tmp_path, capsys):
    _, run_dir = ten_classes
    fields = torch.load(run_dir / BEST, weights_only=True)
    torch.save({**fields, "classes": fields["classes"][:4]}, tmp_path / "odd.pt")
    image = tmp_path / "x.png"
    image.write_bytes(_encoded(Image.fromarray(_gradient(8, 8)), "PNG"))
    code, _, err = run_cli(["predict", str(tmp_path / "odd.pt"), str(image), "--device", "cpu"], capsys)
    assert code == 2 and "weights do not fit the model it describes (4 classes" in err


@pytest.mark.parametrize("argv, message", [
    (["--top-k", "0"], "--top-k: must be an integer in 1..100000"),
    (["--device", "tpu"], "--device tpu: expected auto, cpu, cuda or cuda:N"),
])
def test_predict_refuses_bad_flags_with_one_line(ten_classes, tmp_path, capsys, argv, message):
    _, run_dir = ten_classes
    image = tmp_path / "x.png"
    image.write_bytes(_encoded(Image.fromarray(_gradient(8, 8)), "PNG"))
    code, _, err = run_cli(["predict", str(run_dir), str(image), *argv], capsys)
    assert code == 2 and message in err and "Traceback" not in err


def test_predict_refuses_an_image_too_large_to_decode_within_1_gb(ten_classes, tmp_path_factory, tmp_path):
    from fixtures import huge_png, run_with_peak_rss

    _, run_dir = ten_classes
    huge = huge_png(tmp_path_factory.getbasetemp())
    small = tmp_path / "small.png"
    small.write_bytes(_encoded(Image.fromarray(_gradient(8, 8)), "PNG"))
    result, peak_mb = run_with_peak_rss(
        [sys.executable, "-m", "cnnbench.cli", "predict", str(run_dir), str(huge), str(small), "--device", "cpu"],
        tmp_path / "peak_rss", timeout=300)
    assert result.returncode == 1, result.stderr
    parsed = parse_predictions(result.stdout)
    assert parsed[str(huge)] == "too large: 13000x13000 pixels (limit 64 MP)"
    assert len(parsed[str(small)]) == 5
    assert peak_mb < 1024, f"peak RSS {peak_mb:.0f} MB"
