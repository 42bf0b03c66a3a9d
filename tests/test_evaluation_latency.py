"""Inference cost: what a measurement holds, that it is stable enough to compare models with, and
`cnnbench cost` as a user runs it.

This machine is shared (2 cores, other test suites running): timing tests compare medians of
interleaved calls in one process, never absolute times, with bounds far from the effects measured.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cnnbench.evaluation.latency import (
    LATENCY,
    InferenceCost,
    Precision,
    Repeats,
    Timed,
    cpu_latency,
    interleaved_times,
    measure_inference,
    throughput,
)
from cnnbench.models.build import build_model
from cnnbench.models.summary import summarize_spec
from cnnbench.params.config import load_params, parse_model_spec
from fixtures import TINY_RESNET, run_cnnbench

ROOT = Path(__file__).resolve().parents[1]
QUICK = Repeats(warmup=1, warmup_seconds=0.0, calls=5, min_calls=5, seconds=0.0)
STABLE_WITHIN = 1.5   # two measurements of one model agree within this ratio of medians (see the tests)


def tiny() -> nn.Module:
    return build_model(parse_model_spec("tiny", TINY_RESNET), num_classes=10, image_size=8)


def tiny_resnet(width: int):
    """TINY_RESNET's spec with `width` channels in the stem and first stage, twice that in the second."""
    return parse_model_spec(f"tiny{width}", {**TINY_RESNET, "stem": {**TINY_RESNET["stem"], "widths": [width]},
                                             "widths": [width, 2 * width]})


def registered(name: str, image_size: int) -> nn.Module:
    spec = load_params(ROOT / "params.yaml").model(name)
    return build_model(spec, num_classes=10, image_size=image_size).eval()


def median_ms(times: np.ndarray) -> float:
    return 1000 * float(np.median(times))


# ------------------------------------------------------------------ structure


def test_measurement_holds_every_figure_under_its_stable_name():
    model = tiny()
    (cost,) = measure_inference([model], image_size=8, cpu_batch=4, threads=2, latency=QUICK)
    assert isinstance(cost, InferenceCost)
    assert cost.image_size == 8 and cost.threads_all == 2 and cost.throughput_cpu_batch == 4
    assert cost.latency_calls == 5 == len(cost.latency_cpu_b1_1t_samples_ms) == len(cost.latency_cpu_b1_all_samples_ms)
    assert cost.latency_cpu_b1_1t_ms == pytest.approx(float(np.median(cost.latency_cpu_b1_1t_samples_ms)), abs=1e-3)
    assert 0 < cost.latency_cpu_b1_1t_ms <= cost.latency_cpu_b1_1t_p95_ms
    assert 0 < cost.latency_cpu_b1_all_ms <= cost.latency_cpu_b1_all_p95_ms
    assert cost.throughput_cpu_ips > 0
    assert cost.gpu is None and cost.throughput_gpu_ips is None  # no GPU asked for
    assert cost.params == sum(p.numel() for p in model.parameters())
    # The saved state dict: every fp32 weight and buffer, plus the archive's own few KB.
    tensors = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    assert tensors < cost.weights_bytes < tensors + 64_000
    assert json.loads(json.dumps(cost.to_dict())) == cost.to_dict()  # JSON holds it as it is
    assert {"latency_cpu_b1_1t_ms", "latency_cpu_b1_all_ms", "weights_bytes"} <= set(cost.to_dict())
    with pytest.raises(dataclasses.FrozenInstanceError):
        cost.params = 0


def test_the_callers_model_and_thread_count_are_left_as_they_were():
    model = tiny().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.set_num_threads(1)  # conftest's setting; the measurement switches to 2 and back
    measure_inference([model], image_size=8, cpu_batch=4, threads=2, latency=QUICK)
    assert torch.get_num_threads() == 1
    assert model.training  # measured in eval mode, on a copy
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


class _Fails(nn.Module):
    def forward(self, x):
        raise RuntimeError("boom")


def test_thread_count_is_restored_when_the_model_fails():
    torch.set_num_threads(1)
    with pytest.raises(RuntimeError, match="boom"):
        cpu_latency([_Fails()], image_size=8, threads=(2,), repeats=QUICK)
    assert torch.get_num_threads() == 1


def test_settings_take_turns_in_shuffled_rounds_and_stop_at_the_time_budget():
    order: list[str] = []
    settings = [Timed(lambda: order.append("a"), lambda: order.append("A")),
                Timed(lambda: order.append("b"), lambda: order.append("B"))]
    times = interleaved_times(settings, Repeats(warmup=1, warmup_seconds=1e9, calls=8, min_calls=2, seconds=1e9))
    assert [len(t) for t in times] == [8, 8]
    assert "".join(order[:4]) == "AaBb"  # warm-up
    rounds = ["".join(order[i:i + 4]) for i in range(4, len(order), 4)]
    assert set(rounds) == {"AaBb", "BbAa"}  # every round times each setting once, prepared, in either order
    # Past the budget, the first round that reaches min_calls is the last.
    times = interleaved_times([Timed(lambda: None)], Repeats(warmup=0, warmup_seconds=0.0, calls=100, min_calls=3,
                                                             seconds=0.0))
    assert len(times[0]) == 3
    # A slow setting warms up once, not `warmup` times.
    warm: list[int] = []
    interleaved_times([Timed(lambda: warm.append(1))], Repeats(warmup=50, warmup_seconds=0.0, calls=1,
                                                               min_calls=1, seconds=0.0))
    assert len(warm) == 1 + 1


def test_one_thread_count_given_twice_is_measured_once():
    (times,) = cpu_latency([tiny()], 8, threads=(1, 1), repeats=QUICK)
    assert list(times) == [1] and len(times[1]) == 5


def test_several_models_are_measured_side_by_side_in_their_order():
    small, large = tiny(), build_model(parse_model_spec("wide", {**TINY_RESNET, "widths": [64, 128]}), 10, 8)
    costs = measure_inference([small, large], image_size=8, cpu_batch=4, threads=1, latency=QUICK)
    assert [c.params for c in costs] == [sum(p.numel() for p in m.parameters()) for m in (small, large)]


def test_throughput_is_images_per_second_of_the_batch():
    ips = throughput(tiny().eval(), image_size=8, batch_size=16, device=torch.device("cpu"), threads=1)
    assert 0 < ips < 16 / 1e-6


# ------------------------------------------------------------------ stability


def test_two_measurements_of_the_same_model_agree():
    """Medians of interleaved batch-1 calls agree within a factor 1.5 (STABLE_WITHIN).

    This machine is shared: a burst of load slows whatever runs during it, so the two measurements
    take turns call by call, in a shuffled order (a burst hits both alike), and are compared by
    their medians (a burst shorter than half the calls moves neither). With other test suites on
    both cores (load 7), 15 repetitions gave ratios of 0.99-1.03 for resnet18_stem3_l3 at 32 px:
    1.5x leaves room for worse, and stays below the gap the next test must resolve.
    resnet18 itself is not this stable on a busy machine (0.56-1.54): at 32 px its batch-1 time
    is reading 45 MB of weights, so it depends on what else competes for the CPU's caches.
    """
    model = registered("resnet18_stem3_l3", 32)
    x = torch.randn(1, 3, 32, 32)
    with torch.inference_mode():
        first, second = interleaved_times([Timed(lambda: model(x)), Timed(lambda: model(x))], LATENCY)
    ratio = median_ms(first) / median_ms(second)
    assert 1 / STABLE_WITHIN < ratio < STABLE_WITHIN, (median_ms(first), median_ms(second))


def test_a_model_with_sixteen_times_the_flops_measures_slower():
    """A tiny ResNet four times as wide has 15x the FLOPs at 32 px, and measures 4.5-4.8x slower on
    this busy machine (15 repetitions, load 7): small enough to be bound by arithmetic, not by
    reading weights. The test asks for twice as slow, clear of the noise STABLE_WITHIN allows.
    """
    narrow, wide = tiny_resnet(16), tiny_resnet(64)
    flops = [summarize_spec(spec, 10, 32).flops for spec in (narrow, wide)]
    assert flops[1] > 10 * flops[0]
    fast, slow = (build_model(spec, num_classes=10, image_size=32).eval() for spec in (narrow, wide))
    x = torch.randn(1, 3, 32, 32)
    with torch.inference_mode():
        fast_times, slow_times = interleaved_times([Timed(lambda: fast(x)), Timed(lambda: slow(x))], LATENCY)
    assert median_ms(slow_times) > 2 * median_ms(fast_times), (median_ms(fast_times), median_ms(slow_times))


# ------------------------------------------------------------------ cnnbench cost


def test_cli_cost_prints_the_measurement(capsys):
    code, out, err = run_cnnbench(capsys, "cost", "mobilenet_v2", "--image-size", "16", "--repeats", "5",
                               "--batch-size", "4", "--threads", "1", "--device", "cpu")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "mobilenet_v2  (random weights, input 3x16x16)"
    assert lines[1] == "params: 2,236,682; weights on disk: 9.2 MB"
    assert "5 timed calls per thread count" in lines[2]
    assert re.match(r"  batch-1 latency, 1 thread: +[\d.]+ ms median, +[\d.]+ ms p95$", lines[3])
    assert re.match(r"  throughput, batch 4, 1 thread: [\d,]+ images/s$", lines[-1])


def test_cli_cost_json_of_a_spec(capsys):
    code, out, _ = run_cnnbench(capsys, "cost", "--spec", json.dumps(TINY_RESNET), "--image-size", "8",
                             "--num-classes", "3", "--repeats", "5", "--threads", "1", "--json")
    data = json.loads(out)["spec"]
    expected = build_model(parse_model_spec("tiny", TINY_RESNET), num_classes=3, image_size=8)
    assert code == 0 and data["params"] == sum(p.numel() for p in expected.parameters())
    assert data["image_size"] == 8 and data["threads_all"] == 1 and data["latency_calls"] == 5


def test_cli_cost_of_two_models_gives_their_ratio(capsys):
    code, out, err = run_cnnbench(capsys, "cost", "resnet18", "mobilenet_v2", "--image-size", "16", "--repeats", "5",
                               "--batch-size", "4", "--threads", "1", "--device", "cpu")
    assert code == 0, err
    assert out.startswith("resnet18  (") and "\n\nmobilenet_v2  (" in out
    assert "batch-1 latency relative to resnet18 (medians of interleaved calls):" in out
    assert re.search(r"\n  mobilenet_v2: [\d.]+x with 1 thread, [\d.]+x with 1 thread\n?$", out), out


@pytest.mark.parametrize("argv,message", [
    (["cost", "no_such_model"], "params: unknown model 'no_such_model'"),
    (["cost", "resnet18", "mobilenet_v2", "resnet18"], "cost: resnet18 given more than once"),
    (["cost"], "give one of MODEL, --spec, --spec-file"),
    (["cost", "resnet18", "--spec", "{}"], "not MODEL and --spec"),
    (["cost", "resnet18", "--image-size", "0"], r"--image-size: must be an integer in 4\.\.1024 \(as params.yaml"),
    (["cost", "resnet18", "--repeats", "0"], r"--repeats: must be an integer in 1\.\.10000"),
    (["cost", "resnet18", "--device", "tpu"], "--device tpu: expected auto, cpu, cuda or cuda:N"),
])
def test_cli_cost_errors_are_one_line_and_exit_2(capsys, argv, message):
    code, out, err = run_cnnbench(capsys, *argv)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert re.search(message, err), err


def test_the_report_loads_the_names_the_measurement_writes():
    from cnnbench.report.runs import INFERENCE_KEYS

    assert set(INFERENCE_KEYS) <= {f.name for f in dataclasses.fields(InferenceCost)}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_gpu_is_measured_in_the_given_precision():
    (cost,) = measure_inference([tiny()], image_size=8, cpu_batch=4, gpu=torch.device("cuda"), gpu_batch=64,
                                precision=Precision(amp=True, channels_last=True), threads=1, latency=QUICK)
    assert cost.gpu == torch.cuda.get_device_name() and cost.gpu_precision == "bf16 autocast, channels_last"
    assert cost.throughput_gpu_batch == 64 and cost.throughput_gpu_ips > 0
