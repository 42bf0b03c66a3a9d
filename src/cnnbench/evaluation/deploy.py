"""Deployment cost: a trained network exported to ONNX and run in ONNX Runtime, in fp32 and in int8.

Eager PyTorch is not how anyone deploys to a limited device, so the study's claim that MobileNetV2
"runs faster on resource-limited devices" is measured here where it is meant: in ONNX Runtime, the
standard CPU inference engine, at the run's resolution and at 224 px. The export uses the exporter
PyTorch maintains (`torch.onnx.export(dynamo=True)`, built on torch.export) and is checked against
eager PyTorch on real images (largest logit difference, top-1 agreement); int8 is ONNX Runtime's
static post-training quantization (QDQ, weights per channel), calibrated on training images, with
its accuracy beside fp32's. Latency is timed as latency.py times eager PyTorch: batch 1, the
settings' calls interleaved in a shuffled order after warm-up, median and p95 of the timed calls.

onnx, onnxscript and onnxruntime are the `deploy` extra (`pip install -e '.[deploy]'`); without
them `unavailable()` says what is missing and the callers record that, never silently.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cnnbench.core.errors import CnnbenchError, one_line
from cnnbench.evaluation.latency import LATENCY, KeptThreads, Repeats, Timed, interleaved_times, latency_fields
from cnnbench.evaluation.stats import timing_ratio

# The runtimes a model is timed in: eager PyTorch, ONNX Runtime fp32, ONNX Runtime int8 (static QDQ).
RUNTIMES = ("eager", "onnxruntime", "onnxruntime-int8")
DEPLOY_SIZE = 224          # the deployment resolution measured beside the run's own (the butterflies' and ImageNet's)
CALIBRATION_IMAGES = 64    # training images the int8 calibration sees (ONNX Runtime's examples use 10-100)
OPSET = 18


def unavailable() -> str | None:
    """Why ONNX export or ONNX Runtime cannot run here, or None when both can."""
    missing = []
    for name in ("onnx", "onnxscript", "onnxruntime"):
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        return f"{', '.join(missing)} not installed (pip install -e '.[deploy]')"
    return None


def require_deploy() -> None:
    """A CnnbenchError saying what to install when the deploy extra is missing."""
    reason = unavailable()
    if reason:
        raise CnnbenchError(f"the ONNX runtimes need the deploy extra: {reason}")


def export_onnx(model: nn.Module, image_size: int, path: str | Path) -> Path:
    """`model` (in eval mode, on the CPU) as an ONNX file taking (batch, 3, size, size) float32 images."""
    path = Path(path)
    model = model.to("cpu").eval()
    x = torch.zeros(1, 3, image_size, image_size)
    batch = torch.export.Dim("batch", min=1, max=4096)
    # The exporter prints its progress and warns about what it decomposes: neither is the user's concern.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(model, (x,), str(path), dynamo=True, opset_version=OPSET, input_names=["input"],
                              output_names=["logits"], dynamic_shapes=({0: batch},), verbose=False, external_data=False)
        except Exception as err:  # the exporter raises its own types for what it cannot translate
            raise CnnbenchError(f"ONNX export failed: {type(err).__name__}: {one_line(err)[:300]}") from None
    return path


def session(path: str | Path, threads: int):
    """An ONNX Runtime CPU session with `threads` intra-op threads (inter-op 1: a CNN is one sequential graph)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def normalized(images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """uint8 (N, H, W, 3) images as the float32 (N, 3, H, W) the network takes (as data.datasets.Normalize)."""
    x = images.astype(np.float32).transpose(0, 3, 1, 2) / 255.0
    return ((x - np.asarray(mean, np.float32).reshape(1, -1, 1, 1)) / np.asarray(std, np.float32).reshape(1, -1, 1, 1)
            ).astype(np.float32)


def run_session(sess, x: np.ndarray, batch: int = 256) -> np.ndarray:
    """Logits of `x` (float32 NCHW) through an ONNX Runtime session, `batch` images per call."""
    return np.concatenate([sess.run(None, {"input": x[i:i + batch]})[0] for i in range(0, len(x), batch)])


def quantize_int8(fp32_path: str | Path, calibration: np.ndarray, path: str | Path) -> Path:
    """Static int8 quantization of an ONNX model (QDQ, weights per channel), calibrated on `calibration`."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"input": calibration[i:i + 1]} for i in range(len(calibration))])

        def get_next(self):
            return next(self.batches, None)

    path = Path(path)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True)
    return path


@dataclass(frozen=True)
class Agreement:
    """How an exported model's outputs compare with eager PyTorch's on the same images."""

    images: int
    max_abs_logit_diff: float
    top1_agreement: float       # share of images where both pick the same class
    top1: float | None = None   # the exported model's own accuracy, when labels are given


def agreement(reference: np.ndarray, logits: np.ndarray, labels: np.ndarray | None = None) -> Agreement:
    """`logits` (an exported model's) against `reference` (eager PyTorch's), image by image."""
    top1 = float((logits.argmax(1) == labels).mean()) if labels is not None else None
    return Agreement(len(logits), float(np.abs(logits - reference).max()),
                     float((logits.argmax(1) == reference.argmax(1)).mean()), top1)


@dataclass
class Deployed:
    """One network in the three runtimes at one resolution: what `latencies` times."""

    eager: nn.Module
    fp32: Path
    int8: Path | None


def deploy(model: nn.Module, image_size: int, directory: Path, calibration: np.ndarray | None) -> Deployed:
    """Export `model` at `image_size` into `directory` (fp32, and int8 when calibration images are given)."""
    directory.mkdir(parents=True, exist_ok=True)
    fp32 = export_onnx(model, image_size, directory / f"model_{image_size}.onnx")
    int8 = quantize_int8(fp32, calibration, directory / f"model_{image_size}_int8.onnx") if calibration is not None \
        else None
    return Deployed(model.to("cpu").eval(), fp32, int8)


def latencies(models: Sequence[Deployed], image_size: int, threads: Sequence[int], runtimes: Sequence[str] = RUNTIMES,
              repeats: Repeats = LATENCY) -> list[dict[tuple[str, int], np.ndarray]]:
    """Seconds per batch-1 call, per model, runtime and thread count; every setting takes turns with every other."""
    x = torch.randn(1, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    keys = [(r, n) for r in runtimes for n in sorted(set(threads))]
    settings, owners = [], []
    with KeptThreads(), torch.inference_mode():
        for i, m in enumerate(models):
            for runtime, n in keys:
                settings.append(_timed(m, runtime, n, x))
                owners.append((i, (runtime, n)))
        times = interleaved_times(settings, repeats)
    out: list[dict] = [{} for _ in models]
    for (i, key), t in zip(owners, times):
        out[i][key] = t
    return out


def _timed(m: Deployed, runtime: str, threads: int, x: torch.Tensor) -> Timed:
    """The timed call of one (model, runtime, thread count) setting."""
    if runtime == "eager":
        return Timed(lambda: m.eager(x), lambda: torch.set_num_threads(threads))
    path = m.int8 if runtime == "onnxruntime-int8" else m.fp32
    if path is None:
        raise CnnbenchError(f"{runtime}: no int8 model was made (no calibration images)")
    sess, feed = session(path, threads), {"input": x.numpy()}
    return Timed(lambda: sess.run(None, feed))


# ------------------------------------------------------------------ what evaluate records


def deployment_record(model: nn.Module, image_size: int, mean: Sequence[float], std: Sequence[float],
                      test: tuple[np.ndarray, np.ndarray], train_images: np.ndarray,
                      repeats: Repeats = LATENCY) -> dict:
    """inference.json's deployment keys for one trained model: the exports' agreement with eager PyTorch on
    the test split, int8's accuracy, and batch-1 1-thread latency in each runtime at the run's size and at
    DEPLOY_SIZE; or {"deployment_measured": False, "deployment_reason": ...} when it cannot be measured."""
    reason = unavailable()
    if reason:
        return {"deployment_measured": False, "deployment_reason": reason}
    import onnxruntime

    model = model.to("cpu").eval()
    images, labels = test
    x = normalized(images, mean, std)
    pick = np.random.default_rng(0).permutation(len(train_images))[:CALIBRATION_IMAGES]
    calibration = normalized(train_images[pick], mean, std)
    with torch.inference_mode():
        reference = torch.cat([model(torch.from_numpy(x[i:i + 256])) for i in range(0, len(x), 256)]).numpy()
    record: dict = {"deployment_measured": True, "onnxruntime": onnxruntime.__version__, "onnx_opset": OPSET,
                    "deploy_size": DEPLOY_SIZE, "calibration_images": len(calibration)}
    with tempfile.TemporaryDirectory() as tmp:
        here = deploy(model, image_size, Path(tmp) / "run", calibration)
        for name, path in (("onnx", here.fp32), ("int8", here.int8)):
            found = agreement(reference, run_session(session(path, 1), x), labels)
            record.update({f"{name}_top1_agreement": found.top1_agreement, f"{name}_test_top1": found.top1,
                           f"{name}_max_abs_logit_diff": found.max_abs_logit_diff})
        record.update(_latency_keys(latencies([here], image_size, (1,), repeats=repeats)[0], ""))
        big = torch.nn.functional.interpolate(torch.from_numpy(calibration), size=DEPLOY_SIZE, mode="bilinear")
        large = deploy(model, DEPLOY_SIZE, Path(tmp) / "large", big.numpy())
        record.update(_latency_keys(latencies([large], DEPLOY_SIZE, (1,), repeats=repeats)[0], f"_{DEPLOY_SIZE}"))
    return record


# The inference.json key of each runtime's batch-1 latency: eager keeps latency.py's `latency_cpu_...`.
RUNTIME_KEYS = {"eager": "cpu", "onnxruntime": "ort", "onnxruntime-int8": "ort_int8"}


def latency_key(runtime: str, size_suffix: str = "", threads: str = "1t") -> str:
    """e.g. latency_ort_224_b1_1t (add `_ms`, `_p95_ms` or `_samples_ms`)."""
    return f"latency_{RUNTIME_KEYS[runtime]}{size_suffix}_b1_{threads}"


def _latency_keys(times: dict[tuple[str, int], np.ndarray], size_suffix: str) -> dict:
    """Median, p95 and every timed call in ms, under latency_key's names, for the 1-thread settings."""
    out = {}
    for (runtime, threads), seconds in times.items():
        if threads != 1 or (runtime == "eager" and not size_suffix):  # eager at the run's size: latency.py's
            continue
        out.update(latency_fields(latency_key(runtime, size_suffix), seconds))
    return out


# ------------------------------------------------------------------ `cnnbench cost --runtime`


def compare_runtimes(models: dict[str, nn.Module], image_size: int, runtimes: Sequence[str], threads: Sequence[int],
                     repeats: Repeats = LATENCY) -> dict:
    """Each model in each runtime and thread count, all calls interleaved: medians, p95s, and each model's
    latency ratio to the first model's in the same setting, with its 95 % interval (bootstrap of the calls).

    Random weights: int8 is calibrated on random images, which sets its scales but not its accuracy."""
    require_deploy()
    calibration = np.random.default_rng(0).standard_normal((8, 3, image_size, image_size)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        deployed = [deploy(m, image_size, Path(tmp) / str(i), calibration if "onnxruntime-int8" in runtimes else None)
                    for i, m in enumerate(models.values())]
        times = latencies(deployed, image_size, threads, runtimes, repeats)
    names = list(models)
    rows = []
    for (runtime, n) in times[0]:
        for name, t in zip(names, times):
            ratio, low, high = timing_ratio(t[(runtime, n)], times[0][(runtime, n)]) if name != names[0] else (1, 1, 1)
            rows.append({"model": name, "runtime": runtime, "threads": n, "image_size": image_size,
                         "median_ms": round(1000 * float(np.median(t[(runtime, n)])), 4),
                         "p95_ms": round(1000 * float(np.percentile(t[(runtime, n)], 95)), 4),
                         "calls": len(t[(runtime, n)]), f"ratio_to_{names[0]}": round(ratio, 4),
                         "ratio_low": round(low, 4), "ratio_high": round(high, 4)})
    return {"reference": names[0], "rows": rows}


def format_runtimes(result: dict) -> str:
    """compare_runtimes as an aligned table, one row per model, runtime and thread count."""
    ref = result["reference"]
    header = ("model", "runtime", "threads", "median ms", "p95 ms", f"x {ref} (95% interval)")
    rows = [(r["model"], r["runtime"], str(r["threads"]), f"{r['median_ms']:.2f}", f"{r['p95_ms']:.2f}",
             "reference" if r["model"] == ref
             else f"{r[f'ratio_to_{ref}']:.2f} ({r['ratio_low']:.2f}-{r['ratio_high']:.2f})")
            for r in result["rows"]]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    return (f"batch-1 latency at {result['rows'][0]['image_size']} px, every setting's calls interleaved "
            f"(random weights):\n" + "\n".join(lines))
