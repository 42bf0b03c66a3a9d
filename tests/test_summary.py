"""Model summaries over the registry: shapes follow the conv formula, totals add up; and `cnnbench summary`.

Model summaries run on the meta device: shapes and FLOPs are exact and nothing is computed.
"""

from __future__ import annotations

import json
import math
from functools import cache
from pathlib import Path

import pytest
import torch
from fixtures import registry
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cnnbench import cli
from cnnbench.models import build_model, min_image_size
from cnnbench.summary import format_summary, summarize, summary_to_json

ROOT = Path(__file__).resolve().parents[1]
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


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", NAMES)
def test_summary_totals(name, size):
    if size < min_image_size(SPECS[name]):
        pytest.skip(f"{name} cannot take {size}x{size}")
    summary = _summary(name, size)
    model = _meta_model(name, size).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, size, size, device="meta"))
    assert summary.params == sum(p.numel() for p in model.parameters())
    assert summary.flops == counter.get_total_flops() > 0
    assert sum(r.flops for r in summary.rows) == summary.flops
    assert summary.rows[-1].output_shape == (10,)


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
    last_map = [r for r in rows if len(r.input_shape) == 3][-1]  # the map the head pools
    assert first_block.input_shape[-2:] == (stage1_input, stage1_input)
    assert last_map.input_shape[-2:] == (final, final)


def test_summary_restores_training_mode_and_formats():
    model = build_model(SPECS["resnet18"], num_classes=10, image_size=32).train()
    summary = summarize(model, image_size=32)
    assert model.training
    text = format_summary(summary, title="resnet18")
    assert "11,181,642" in text and "stem.0.conv" in text and "64x16x16" in text
    data = json.loads(summary_to_json(summary))
    assert set(data) == {"params", "flops", "input_size", "layers"}
    assert data["input_size"] == [3, 32, 32] and data["params"] == 11_181_642


# ------------------------------------------------------------------ CLI


def test_cli_summary_json(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--params", str(ROOT / "params.yaml"), "summary", "resnet18",
                  "--num-classes", "10", "--image-size", "32", "--json"])
    assert exit_.value.code == 0
    assert json.loads(capsys.readouterr().out)["params"] == 11_181_642


def test_cli_unknown_model_is_a_one_line_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--params", str(ROOT / "params.yaml"), "summary", "no_such_model"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no_such_model" in err
    assert err.count("\n") == 1 and "Traceback" not in err
