"""Summaries: over the registry, shapes follow the conv formula and the counts add up; one layer
alone, with its formula; and `cnnbench summary` as a user runs it, errors included.

Summaries run on the meta device: shapes and FLOPs are exact and nothing is computed.
"""

from __future__ import annotations

import json
import math
import re
from functools import cache

import pytest
import torch
from torch import nn

from cnnbench.models.build import build_model, min_image_size
from cnnbench.models.specs import parse_model_spec
from cnnbench.models.summary import (
    format_summary,
    output_size,
    output_size_formula,
    summarize,
    summarize_layer,
    summarize_spec,
    summary_to_json,
)
from cnnbench.params.config import ConfigError
from fixtures import TINY_RESNET, registry, run_cnnbench

SPECS = registry()
NAMES = list(SPECS)
SIZES = (32, 224)


def _meta_model(name: str, size: int) -> nn.Module:
    """The model on the meta device: shapes and FLOPs are exact, and nothing is computed."""
    with torch.device("meta"):
        return build_model(SPECS[name], num_classes=10, image_size=size)


@cache
def _summary(name: str, size: int):
    """One summary per (variant, size), shared by the summary tests; on meta, as 224x224 is slow on a CPU."""
    return summarize(_meta_model(name, size), image_size=size)


def _out_size(n: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    return math.floor((n + 2 * padding - dilation * (kernel - 1) - 1) / stride) + 1


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", NAMES)
def test_summary_shapes_follow_the_conv_formula(name, size):
    if size < min_image_size(SPECS[name]):
        pytest.skip(f"{name} cannot take {size}x{size}")
    rows = [r for r in _summary(name, size).rows if r.kernel is not None]
    assert any(r.type == "Conv2d" for r in rows)
    for r in rows:
        expected = tuple(_out_size(n, *geometry) for n, *geometry in
                         zip(r.input_shape[-2:], r.kernel, r.stride, r.padding, r.dilation))
        assert r.output_shape[-2:] == expected, r


def _expected_flops(module: nn.Module, row) -> int:
    """FLOPs of one conv or linear row from its shapes alone: 2 per multiply-accumulate, per image."""
    if isinstance(module, nn.Conv2d):
        macs_per_output = module.in_channels // module.groups * math.prod(module.kernel_size)
        return 2 * math.prod(row.output_shape[1:]) * macs_per_output
    if isinstance(module, nn.Linear):
        return 2 * module.in_features * module.out_features
    return 0


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", NAMES)
def test_summary_rows_add_up_to_the_totals(name, size):
    if size < min_image_size(SPECS[name]):
        pytest.skip(f"{name} cannot take {size}x{size}")
    summary = _summary(name, size)
    modules = dict(_meta_model(name, size).named_modules())
    firsts = {}  # a module called twice (a block's ReLU) counts once, at its first call
    for r in summary.rows:
        firsts.setdefault(r.name, r)
    assert all(r.flops == _expected_flops(modules[r.name], r) for r in firsts.values())
    assert sum(r.params for r in summary.rows) == summary.params
    assert sum(r.flops for r in summary.rows) == summary.flops > 0
    assert summary.rows[-1].output_shape == (1, 10)


@pytest.mark.parametrize("name", NAMES)
def test_batch_dimension_in_shapes_flops_per_image_and_per_batch(name):
    one, eight = _summary(name, 32), summarize_spec(SPECS[name], num_classes=10, image_size=32, batch_size=8)
    assert [r.output_shape for r in eight.rows] == [(8, *r.output_shape[1:]) for r in one.rows]
    assert [r.flops for r in eight.rows] == [r.flops for r in one.rows]
    assert (eight.flops, eight.flops_per_batch, eight.params) == (one.flops, 8 * one.flops, one.params)


@pytest.mark.parametrize("name,stage1_input,final", [
    ("resnet18", 8, 1),                 # 7x7/2 stem and 3x3/2 max-pool: stage 1 sees 8x8
    ("resnet18_stem3", 32, 4),          # CIFAR stems: full resolution into stage 1
    ("resnet18_stem3_l3", 32, 8),
    ("resnet18_stem1_l3", 32, 8),
    ("mobilenet_v2", 16, 1),
    ("mobilenet_v2_cifar", 32, 4),      # total stride 8 instead of 32
])
def test_cifar_variants_keep_resolution_at_32(name, stage1_input, final):
    if name not in SPECS:
        pytest.skip(f"{name} is not declared in params.yaml")
    rows = _summary(name, 32).rows
    first_block = next(r for r in rows if r.name.startswith(("layer1.", "features.1.")))
    last_map = [r for r in rows if len(r.input_shape) == 4][-1]  # the map the head pools
    assert first_block.input_shape[-2:] == (stage1_input, stage1_input)
    assert last_map.input_shape[-2:] == (final, final)


def test_summary_restores_training_mode_and_formats():
    model = build_model(SPECS["resnet18"], num_classes=10, image_size=32).train()
    summary = summarize(model, image_size=32)
    assert model.training
    lines = format_summary(summary, title="resnet18").splitlines()
    assert lines[0] == "resnet18  (input [1, 3, 32, 32])"
    assert lines[2].split() == ["layer", "type", "kernel", "stride", "padding", "output", "shape", "params",
                                "FLOPs/image"]
    assert lines[4].split() == ["stem.0.conv", "Conv2d", "7x7", "2", "3", "[1,", "64,", "16,", "16]", "9,408",
                                "4,816,896"]
    assert lines[-3:] == ["params: 11,181,642", "FLOPs per image, forward: 74,033,152 (74 M)",
                          "FLOPs per batch of 1, forward: 74,033,152 (74 M)"]
    data = json.loads(summary_to_json(summary))
    assert set(data) == {"params", "flops", "flops_per_batch", "input_size", "batch_size", "layers"}
    assert data["input_size"] == [3, 32, 32] and data["params"] == 11_181_642
    assert data["layers"][0]["output_shape"] == [1, 64, 16, 16]


# ------------------------------------------------------------------ one layer


def test_output_size_formula_text():
    assert output_size_formula(32, kernel=3, stride=2, padding=1) == (
        "out = floor((n + 2p - f) / s) + 1 = floor((32 + 2*1 - 3) / 2) + 1 = 16")


@pytest.mark.parametrize("layer", ["conv", "maxpool", "avgpool"])
@pytest.mark.parametrize("n,kernel,stride,padding", [(32, 3, 2, 1), (7, 2, 2, 0), (5, 5, 1, 2), (224, 7, 2, 3),
                                                     (9, 3, 3, 1), (6, 1, 4, 0)])
def test_output_size_is_what_torch_computes(layer, n, kernel, stride, padding):
    if layer != "conv" and padding > kernel // 2:
        pytest.skip("torch refuses pooling padded by more than half the kernel")
    summary = summarize_layer(layer, (2, 4, n, n + 1), kernel, stride, padding,
                              out_channels=6 if layer == "conv" else None)
    channels = 6 if layer == "conv" else 4
    assert summary.output_shape == (2, channels, output_size(n, kernel, stride, padding),
                                    output_size(n + 1, kernel, stride, padding))


def test_conv_layer_params_and_flops():
    conv = summarize_layer("conv", (8, 3, 32, 32), kernel=3, stride=2, padding=1, out_channels=6)
    assert conv.output_shape == (8, 6, 16, 16)
    assert conv.params == 6 * 3 * 3 * 3 + 6 and conv.param_shapes == {"weight": (6, 3, 3, 3), "bias": (6,)}
    assert conv.flops == 2 * (6 * 16 * 16) * (3 * 3 * 3) and conv.flops_per_batch == 8 * conv.flops
    no_bias = summarize_layer("conv", (8, 3, 32, 32), kernel=3, out_channels=6, bias=False)
    assert no_bias.params == 6 * 3 * 3 * 3 and no_bias.output_shape == (8, 6, 30, 30)  # stride 1 by default


@pytest.mark.parametrize("kwargs,message", [
    ({"layer": "pool"}, "layer must be one of conv, maxpool, avgpool"),
    ({"kernel": 0}, "kernel must be a positive integer"),
    ({"stride": 0}, "stride must be a positive integer"),
    ({"padding": -1}, "padding must be an integer >= 0"),
    ({"out_channels": None}, "a conv needs out_channels"),
    ({"layer": "maxpool"}, "maxpool keeps the channels"),
    ({"layer": "maxpool", "out_channels": None, "padding": 2}, r"padding must be at most half the kernel \(1\)"),
    ({"input_shape": (1, 3, 32)}, "input shape must be N,C,H,W"),
    ({"input_shape": (1, 3, 2, 32)}, r"input H 2 is too small for kernel 3 with padding 0: .* = 0; .* at least 3"),
])
def test_layer_errors_name_the_argument(kwargs, message):
    args = {"layer": "conv", "input_shape": (1, 3, 32, 32), "kernel": 3, "out_channels": 6, **kwargs}
    with pytest.raises(ConfigError, match=message):
        summarize_layer(**args)


# ------------------------------------------------------------------ CLI


def test_cli_summary_json(capsys):
    code, out, _ = run_cnnbench(capsys, "summary", "resnet18", "--num-classes", "10", "--image-size", "32", "--json")
    assert code == 0
    assert json.loads(out)["params"] == 11_181_642


def test_cli_summary_batch_size(capsys):
    code, out, _ = run_cnnbench(capsys, "summary", "resnet18", "--batch-size", "8")
    assert code == 0
    assert out.splitlines()[0] == "resnet18  (input [8, 3, 32, 32])"
    assert "[8, 64, 16, 16]" in out and "FLOPs per batch of 8, forward: 592,265,216 (592 M)" in out


def test_cli_conv_layer(capsys):
    code, out, _ = run_cnnbench(capsys, "summary", "--layer", "conv", "--in", "8,3,32,32", "--out-channels", "6",
                             "--kernel", "3", "--stride", "2", "--padding", "1")
    assert code == 0
    assert out.splitlines() == [
        "Conv2d(3, 6, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1))",
        "input shape:  [8, 3, 32, 32]",
        "output shape: [8, 6, 16, 16]",
        "out = floor((n + 2p - f) / s) + 1 = floor((32 + 2*1 - 3) / 2) + 1 = 16",
        "params: 168 (weight 6x3x3x3 + bias 6)",
        "FLOPs per image, forward: 82,944 (82.9 K)",
        "FLOPs per batch of 8, forward: 663,552 (664 K)",
    ]


def test_cli_pooling_layers(capsys):
    code, out, _ = run_cnnbench(capsys, "summary", "--layer", "maxpool", "--in", "1,64,112,112", "--kernel", "3",
                             "--stride", "2", "--padding", "1")
    assert code == 0
    assert "output shape: [1, 64, 56, 56]" in out and "params: 0\n" in out
    assert "floor((112 + 2*1 - 3) / 2) + 1 = 56" in out
    # stride defaults to the kernel, as in torch; a non-square input gets a formula per axis
    code, out, _ = run_cnnbench(capsys, "summary", "--layer", "avgpool", "--in", "[2, 3, 8, 6]", "--kernel", "2",
                             "--json")
    data = json.loads(out)
    assert code == 0 and data["output_shape"] == [2, 3, 4, 3] and data["stride"] == 2


def test_cli_spec_and_spec_file_use_the_params_parser(capsys, tmp_path):
    code, out, _ = run_cnnbench(capsys, "summary", "--spec", json.dumps(TINY_RESNET), "--json")
    assert code == 0
    expected = summarize_spec(parse_model_spec("tiny", TINY_RESNET), num_classes=10, image_size=32)
    assert json.loads(out)["params"] == expected.params and json.loads(out)["flops"] == expected.flops
    flow = "{family: resnet, stem: {kernel: 3, widths: [8], strides: [1], pool: false}, block: basic, " \
           "depths: [1, 1], widths: [8, 16], strides: [1, 2]}"
    code, out, _ = run_cnnbench(capsys, "summary", "--spec", flow, "--image-size", "8")
    assert code == 0 and out.startswith("spec  (input [1, 3, 8, 8])")
    (tmp_path / "tiny.yaml").write_text(flow)
    code, out, _ = run_cnnbench(capsys, "summary", "--spec-file", str(tmp_path / "tiny.yaml"))
    assert code == 0 and out.startswith("tiny  (input [1, 3, 32, 32])")


@pytest.mark.parametrize("argv,message", [
    (["summary", "no_such_model"], "params: unknown model 'no_such_model'"),
    (["summary", "resnet18", "--image-size", "0"], r"--image-size: must be an integer in 4\.\.1024 \(as params"),
    (["summary", "--layer", "conv", "--in", "8,3,32", "--out-channels", "6", "--kernel", "3"],
     "--in: expected N,C,H,W"),
    (["summary", "--layer", "maxpool", "--in", "1,3,2,2", "--kernel", "5"], "input H 2 is too small"),
    (["summary", "--spec", "{family: resnet"], "--spec: not valid YAML at line 1, column 16"),
    (["summary", "--spec", "[1, 2]"], "--spec: expected a mapping"),
    (["summary", "--spec", "{family: resnet}"], r"--spec\.stem: is required"),
    (["summary", "--spec", json.dumps({**TINY_RESNET, "torchvision_weights": "Nope.V1"})],
     "unknown torchvision weights 'Nope.V1'"),
    (["summary"], "give one of MODEL, --spec, --spec-file, --layer"),
    (["summary", "resnet18", "--layer", "conv"], "not MODEL and --layer"),
    (["summary", "resnet18", "--kernel", "3"], "--kernel: only with --layer"),
    (["summary", "--layer", "conv", "--in", "1,3,8,8", "--kernel", "3", "--batch-size", "4"],
     "--batch-size: only for models"),
    (["summary", "--layer", "conv", "--kernel", "3"], "--layer needs --in"),
    (["summary", "--kernel", "x"], "argument --kernel: invalid int value: 'x'"),
])
def test_cli_errors_are_one_line_and_exit_2(capsys, argv, message):
    code, out, err = run_cnnbench(capsys, *argv)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert re.search(message, err), err
