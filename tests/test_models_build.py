"""Every model declared in params.yaml: builds, runs backward, counts as the spec says, parses.

The registry is read from the repository's params.yaml, so a new variant is tested the moment
it is declared. Nothing here touches the network.
"""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from cnnbench.models.build import build_model, min_image_size
from cnnbench.models.specs import MobileNetV2Spec, ResNetSpec, parse_model_spec
from cnnbench.models.weights import torchvision_to_cnnbench_keys
from cnnbench.params.config import ConfigError
from fixtures import randomise_bn_stats, registry

SPECS = registry()
NAMES = list(SPECS)

RESNET18 = {
    "family": "resnet",
    "stem": {"kernel": 7, "widths": [64], "strides": [2], "pool": True},
    "block": "basic",
    "depths": [2, 2, 2, 2],
    "widths": [64, 128, 256, 512],
    "strides": [1, 2, 2, 2],
    "torchvision_weights": "ResNet18_Weights.IMAGENET1K_V1",
}


# ------------------------------------------------------------------ building and training


@pytest.mark.parametrize("num_classes", [10, 100])
@pytest.mark.parametrize("name", NAMES)
def test_builds_with_head_for_num_classes(name, num_classes):
    model = build_model(SPECS[name], num_classes=num_classes, image_size=32)
    head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    assert head.out_features == num_classes


@pytest.mark.parametrize("name", NAMES)
def test_forward_backward(name):
    # 32 px, as the CIFAR runs train: the full-resolution stems made 224 px the suite's slowest test.
    spec = SPECS[name]
    size = max(32, min_image_size(spec))
    torch.manual_seed(0)
    model = build_model(spec, num_classes=10, image_size=size)
    out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()
    out.sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


@pytest.mark.parametrize("name", NAMES)
def test_output_shape_at_224_on_meta(name):
    # ImageNet's resolution through every layer: on the meta device shapes are exact and nothing is computed.
    with torch.device("meta"):
        model = build_model(SPECS[name], num_classes=100, image_size=224)
        assert model(torch.zeros(2, 3, 224, 224)).shape == (2, 100)


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
    spec = parse_model_spec("resnet50", {**RESNET18, "block": "bottleneck", "depths": [3, 4, 6, 3],
                                       "torchvision_weights": "ResNet50_Weights.IMAGENET1K_V2"})
    with torch.device("meta"):  # shapes and counts only: nothing to initialise
        ours = build_model(spec, num_classes=10, image_size=224)
        theirs = torchvision_to_cnnbench_keys(torchvision.models.resnet50(num_classes=10).state_dict())
    assert {k: v.shape for k, v in theirs.items()} == {k: v.shape for k, v in ours.state_dict().items()}
    assert sum(p.numel() for p in ours.parameters()) == _expected_resnet_params(spec, 10)


# ------------------------------------------------------------------ torchvision equivalence


@pytest.mark.parametrize("name,factory", [("resnet18", torchvision.models.resnet18),
                                          ("mobilenet_v2", torchvision.models.mobilenet_v2)])
def test_standard_variants_are_torchvision_models(name, factory):
    torch.manual_seed(0)
    theirs = randomise_bn_stats(factory(num_classes=10)).eval()
    ours = build_model(SPECS[name], num_classes=10, image_size=224).eval()
    mapped = torchvision_to_cnnbench_keys(theirs.state_dict())
    assert {k: v.shape for k, v in mapped.items()} == {k: v.shape for k, v in ours.state_dict().items()}
    ours.load_state_dict(mapped)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)


# ------------------------------------------------------------------ invalid specs


@pytest.mark.parametrize("change,field,message", [
    ({"depths": [], "widths": [], "strides": []}, "models.bad.depths", r"a list of 1\.\.128 integers in 1\.\.128"),
    ({"widths": [64, -128, 256, 512]}, "models.bad.widths", r"a list of 1\.\.128 integers in 1\.\.8192"),
    ({"widths": [64, 0, 256, 512]}, "models.bad.widths", r"integers in 1\.\.8192"),
    ({"family": "vgg"}, "models.bad.family", "must be one of resnet, mobilenet_v2"),
    ({"colour": "blue"}, "models.bad.colour", "unknown key"),
    ({"strides": [1, 2, 2]}, "models.bad.strides", "one entry per stage"),
    ({"widths": [64, 128]}, "models.bad.widths", "one entry per stage"),
    ({"stem": {"kernel": 3, "widths": [32, 64], "strides": [1], "pool": False}}, "models.bad.stem.strides",
     "one entry per stem conv"),
    ({"stem": {"kernel": 4, "widths": [64], "strides": [1], "pool": False}}, "models.bad.stem.kernel", "odd"),
    ({"stem": {"kernel": 3, "widths": [64], "strides": [1], "pool": False, "act": "gelu"}},
     "models.bad.stem.act", "unknown key"),
    ({"block": "dense"}, "models.bad.block", "basic, bottleneck"),
])
def test_invalid_resnet_spec(change, field, message):
    with pytest.raises(ConfigError, match=rf"{field}: .*{message}"):
        parse_model_spec("bad", {**RESNET18, **change})


def test_missing_field_and_invalid_mobilenet_spec():
    with pytest.raises(ConfigError, match=r"models\.bad\.block: is required"):
        parse_model_spec("bad", {k: v for k, v in RESNET18.items() if k != "block"})
    good = {"family": "mobilenet_v2", "width_mult": 1.0, "stem_stride": 2, "dropout": 0.2,
            "setting": [[1, 16, 1, 1], [6, 24, 2, 2]]}
    assert isinstance(parse_model_spec("ok", good), MobileNetV2Spec)
    with pytest.raises(ConfigError, match=r"models\.bad\.setting\[1\]"):
        parse_model_spec("bad", {**good, "setting": [[1, 16, 1, 1], [6, 24, 2, 3]]})
    with pytest.raises(ConfigError, match=r"models\.bad\.width_mult"):
        parse_model_spec("bad", {**good, "width_mult": -1})
