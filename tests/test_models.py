"""Every model declared in params.yaml: builds, runs backward, counts, loads weights, summarises.

The registry is read from the repository's params.yaml, so a new variant is tested the moment
it is declared. Nothing here touches the network.
"""

from __future__ import annotations

import json
import math
import urllib.error
from functools import cache
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cnnbench import cli
from cnnbench.config import ConfigError, load_params
from cnnbench.errors import CnnbenchError
from cnnbench.models import (
    MobileNetV2Spec,
    ResNetSpec,
    build_model,
    format_summary,
    load_pretrained,
    min_image_size,
    spec_from_dict,
    summarize,
    summary_to_json,
    torchvision_to_cnnbench_keys,
)

ROOT = Path(__file__).resolve().parents[1]
SPECS = load_params(ROOT / "params.yaml").models
NAMES = list(SPECS)
SIZES = (32, 224)

RESNET18 = {
    "family": "resnet",
    "stem": {"kernel": 7, "widths": [64], "strides": [2], "pool": True},
    "block": "basic",
    "depths": [2, 2, 2, 2],
    "widths": [64, 128, 256, 512],
    "strides": [1, 2, 2, 2],
    "torchvision_weights": "ResNet18_Weights.IMAGENET1K_V1",
}


def _randomise_bn_stats(model: nn.Module) -> nn.Module:
    """Non-trivial running stats, so loading them (or not) changes eval outputs."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
    return model


def _meta_model(name: str, size: int) -> nn.Module:
    """The model on the meta device: shapes and FLOPs are exact, and nothing is computed."""
    with torch.device("meta"):
        return build_model(SPECS[name], num_classes=10, image_size=size)


@cache
def _summary(name: str, size: int):
    """One summary per (variant, size), shared by the summary tests; on meta, as 224x224 is slow on a CPU."""
    return summarize(_meta_model(name, size), image_size=size)


# ------------------------------------------------------------------ building and training


@pytest.mark.parametrize("num_classes", [10, 100])
@pytest.mark.parametrize("name", NAMES)
def test_builds_with_head_for_num_classes(name, num_classes):
    model = build_model(SPECS[name], num_classes=num_classes, image_size=32)
    head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    assert head.out_features == num_classes


@pytest.mark.parametrize("size,num_classes", [(32, 10), (224, 100)])
@pytest.mark.parametrize("name", NAMES)
def test_forward_backward(name, size, num_classes):
    spec = SPECS[name]
    if size < min_image_size(spec):
        with pytest.raises(ConfigError, match=str(min_image_size(spec))):
            build_model(spec, num_classes=num_classes, image_size=size)
        return
    torch.manual_seed(0)
    model = build_model(spec, num_classes=num_classes, image_size=size)
    out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, num_classes)
    assert torch.isfinite(out).all()
    out.sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


@pytest.mark.parametrize("name", NAMES)
def test_too_small_image_or_too_few_classes_fail_at_build(name):
    with pytest.raises(ConfigError, match=rf"{name}.*image size 0.*smallest.*{min_image_size(SPECS[name])}"):
        build_model(SPECS[name], num_classes=10, image_size=0)
    with pytest.raises(ConfigError, match="num_classes"):
        build_model(SPECS[name], num_classes=1, image_size=32)


# ------------------------------------------------------------------ parameter counts


def _expected_resnet_params(spec: ResNetSpec, num_classes: int) -> int:
    """Count from the spec alone: conv k*k*cin*cout (no bias), BN 2*c, linear cin*cout + cout."""
    def conv(k, cin, cout):
        return k * k * cin * cout

    total, cin = 0, 3
    for width in spec.stem.widths:
        total += conv(spec.stem.kernel, cin, width) + 2 * width
        cin = width
    expansion = 4 if spec.block == "bottleneck" else 1
    for depth, width, stride in zip(spec.depths, spec.widths, spec.strides):
        for i in range(depth):
            out = width * expansion
            if spec.block == "basic":
                total += conv(3, cin, width) + conv(3, width, width) + 4 * width
            else:
                total += conv(1, cin, width) + conv(3, width, width) + conv(1, width, out) + 4 * width + 2 * out
            if (stride if i == 0 else 1) != 1 or cin != out:
                total += conv(1, cin, out) + 2 * out
            cin = out
    return total + cin * num_classes + num_classes


@pytest.mark.parametrize("name", NAMES)
def test_param_count_matches_spec(name):
    spec = SPECS[name]
    model = build_model(spec, num_classes=10, image_size=32)
    count = sum(p.numel() for p in model.parameters())
    if isinstance(spec, ResNetSpec):
        assert count == _expected_resnet_params(spec, 10)
    else:
        reference = torchvision.models.MobileNetV2(num_classes=10, width_mult=spec.width_mult,
                                                   inverted_residual_setting=[list(r) for r in spec.setting],
                                                   dropout=spec.dropout)
        assert count == sum(p.numel() for p in reference.parameters())


def test_bottleneck_resnet50_is_torchvision_resnet50():
    spec = spec_from_dict("resnet50", {**RESNET18, "block": "bottleneck", "depths": [3, 4, 6, 3],
                                       "torchvision_weights": "ResNet50_Weights.IMAGENET1K_V2"})
    ours = build_model(spec, num_classes=10, image_size=224)
    theirs = torchvision_to_cnnbench_keys(torchvision.models.resnet50(num_classes=10).state_dict())
    assert {k: v.shape for k, v in theirs.items()} == {k: v.shape for k, v in ours.state_dict().items()}
    assert sum(p.numel() for p in ours.parameters()) == _expected_resnet_params(spec, 10)


# ------------------------------------------------------------------ torchvision equivalence


@pytest.mark.parametrize("name,factory", [("resnet18", torchvision.models.resnet18),
                                          ("mobilenet_v2", torchvision.models.mobilenet_v2)])
def test_standard_variants_are_torchvision_models(name, factory):
    torch.manual_seed(0)
    theirs = _randomise_bn_stats(factory(num_classes=10)).eval()
    ours = build_model(SPECS[name], num_classes=10, image_size=224).eval()
    mapped = torchvision_to_cnnbench_keys(theirs.state_dict())
    assert {k: v.shape for k, v in mapped.items()} == {k: v.shape for k, v in ours.state_dict().items()}
    ours.load_state_dict(mapped)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)


def test_resnet18_has_torchvision_param_count():
    ours = build_model(SPECS["resnet18"], num_classes=10, image_size=32)
    theirs = torchvision.models.resnet18(num_classes=10)
    assert sum(p.numel() for p in ours.parameters()) == 11_181_642
    assert sum(p.numel() for p in theirs.parameters()) == 11_181_642


# ------------------------------------------------------------------ pretrained weights


@pytest.mark.parametrize("name,factory,head", [
    ("resnet18", torchvision.models.resnet18, "fc"),
    ("mobilenet_v2", torchvision.models.mobilenet_v2, "classifier.1"),
])
@pytest.mark.parametrize("num_classes", [1000, 100])
def test_load_pretrained_from_torchvision_file(tmp_path, name, factory, head, num_classes):
    torch.manual_seed(0)
    imagenet = _randomise_bn_stats(factory(num_classes=1000))
    path = tmp_path / f"{name}.pth"
    torch.save(imagenet.state_dict(), path)
    model = build_model(SPECS[name], num_classes=num_classes, image_size=224)
    fresh_head = {k: v.clone() for k, v in model.state_dict().items() if k.startswith(head + ".")}
    load_pretrained(model, SPECS[name], str(path))
    expected = torchvision_to_cnnbench_keys(imagenet.state_dict())
    for key, value in model.state_dict().items():
        if key.startswith(head + ".") and num_classes != 1000:
            assert torch.equal(value, fresh_head[key]), key  # head kept as initialised
        else:
            assert torch.equal(value, expected[key]), key


def test_load_pretrained_accepts_cnnbench_keys(tmp_path):
    torch.manual_seed(0)
    source = _randomise_bn_stats(build_model(SPECS["resnet18_stem3"], num_classes=10, image_size=32))
    torch.save(source.state_dict(), tmp_path / "w.pt")
    model = build_model(SPECS["resnet18_stem3"], num_classes=10, image_size=32)
    load_pretrained(model, SPECS["resnet18_stem3"], str(tmp_path / "w.pt"))
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in model.state_dict().items())


def test_load_pretrained_names_first_mismatching_key(tmp_path):
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pth")
    model = build_model(SPECS["resnet18_stem3"], num_classes=10, image_size=32)
    with pytest.raises(CnnbenchError, match=r"stem\.0\.conv\.weight: shape \(64, 3, 7, 7\)"):
        load_pretrained(model, SPECS["resnet18_stem3"], str(tmp_path / "r18.pth"))


def test_load_pretrained_without_bn_counters_but_not_with_extra_keys(tmp_path):
    # torchvision's older ImageNet files predate BatchNorm's num_batches_tracked.
    state = {k: v for k, v in torchvision.models.resnet18().state_dict().items()
             if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "old.pth")
    model = build_model(SPECS["resnet18"], num_classes=10, image_size=32)
    load_pretrained(model, SPECS["resnet18"], str(tmp_path / "old.pth"))
    torch.save({**state, "extra.weight": torch.zeros(1)}, tmp_path / "extra.pth")
    with pytest.raises(CnnbenchError, match="unexpected key 'extra.weight'"):
        load_pretrained(model, SPECS["resnet18"], str(tmp_path / "extra.pth"))


def test_load_pretrained_missing_file(tmp_path):
    model = build_model(SPECS["resnet18"], num_classes=10, image_size=32)
    with pytest.raises(CnnbenchError, match="no such file"):
        load_pretrained(model, SPECS["resnet18"], str(tmp_path / "nope.pth"))


def test_imagenet_without_torchvision_weights():
    spec = next(s for s in SPECS.values() if s.torchvision_weights is None)
    model = build_model(spec, num_classes=10, image_size=32)
    with pytest.raises(CnnbenchError, match="no ImageNet weights"):
        load_pretrained(model, spec, "imagenet")


def test_imagenet_download_failure_suggests_a_local_file(monkeypatch):
    def offline(self, *args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", offline)
    model = build_model(SPECS["resnet18"], num_classes=10, image_size=32)
    message = r"local weights file path.*train\.pretrained: /path/to/resnet18\.pth"
    with pytest.raises(CnnbenchError, match=message):
        load_pretrained(model, SPECS["resnet18"], "imagenet")


# ------------------------------------------------------------------ summary


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


# ------------------------------------------------------------------ invalid specs


@pytest.mark.parametrize("change,field,message", [
    ({"depths": [], "widths": [], "strides": []}, "models.bad.depths", "non-empty list of positive integers"),
    ({"widths": [64, -128, 256, 512]}, "models.bad.widths", "non-empty list of positive integers"),
    ({"widths": [64, 0, 256, 512]}, "models.bad.widths", "positive integers"),
    ({"family": "vgg"}, "models.bad.family", "must be one of resnet, mobilenet_v2"),
    ({"colour": "blue"}, "models.bad.colour", "unknown field"),
    ({"strides": [1, 2, 2]}, "models.bad.strides", "one entry per stage"),
    ({"widths": [64, 128]}, "models.bad.widths", "one entry per stage"),
    ({"stem": {"kernel": 3, "widths": [32, 64], "strides": [1], "pool": False}}, "models.bad.stem.strides",
     "one entry per stem conv"),
    ({"stem": {"kernel": 4, "widths": [64], "strides": [1], "pool": False}}, "models.bad.stem.kernel", "odd"),
    ({"stem": {"kernel": 3, "widths": [64], "strides": [1], "pool": False, "act": "gelu"}},
     "models.bad.stem.act", "unknown field"),
    ({"block": "dense"}, "models.bad.block", "basic, bottleneck"),
    ({"torchvision_weights": "ResNet18_Weights.NOPE"}, "models.bad.torchvision_weights", "unknown torchvision"),
])
def test_invalid_resnet_spec(change, field, message):
    with pytest.raises(ConfigError, match=rf"{field}: .*{message}"):
        spec_from_dict("bad", {**RESNET18, **change})


def test_missing_field_and_invalid_mobilenet_spec():
    with pytest.raises(ConfigError, match=r"models\.bad\.block: is required"):
        spec_from_dict("bad", {k: v for k, v in RESNET18.items() if k != "block"})
    good = {"family": "mobilenet_v2", "width_mult": 1.0, "stem_stride": 2, "dropout": 0.2,
            "setting": [[1, 16, 1, 1], [6, 24, 2, 2]]}
    assert isinstance(spec_from_dict("ok", good), MobileNetV2Spec)
    with pytest.raises(ConfigError, match=r"models\.bad\.setting\[1\]"):
        spec_from_dict("bad", {**good, "setting": [[1, 16, 1, 1], [6, 24, 2, 3]]})
    with pytest.raises(ConfigError, match=r"models\.bad\.width_mult"):
        spec_from_dict("bad", {**good, "width_mult": -1})


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
