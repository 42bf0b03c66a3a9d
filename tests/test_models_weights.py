"""Pretrained weights: torchvision's key names, files in either naming, and the errors a user can fix.

Every file is written by the test itself; nothing here touches the network.
"""

from __future__ import annotations

import dataclasses
import urllib.error

import pytest
import torch
import torchvision

from cnnbench.core.errors import CnnbenchError
from cnnbench.models.build import build_model
from cnnbench.models.weights import check_weights_name, load_pretrained, torchvision_to_cnnbench_keys
from cnnbench.params.config import ConfigError
from fixtures import randomise_bn_stats, registry

SPECS = registry()


def test_torchvision_keys_renamed_only_in_the_stem():
    tensor = torch.zeros(1)
    keys = ["conv1.weight", "bn1.running_mean", "layer1.0.conv1.weight", "layer1.0.bn1.bias", "fc.bias",
            "stem.1.conv.weight"]
    assert list(torchvision_to_cnnbench_keys(dict.fromkeys(keys, tensor))) == [
        "stem.0.conv.weight", "stem.0.bn.running_mean", "layer1.0.conv1.weight", "layer1.0.bn1.bias", "fc.bias",
        "stem.1.conv.weight"]


def test_check_weights_name():
    check_weights_name(None, "x")
    check_weights_name("ResNet18_Weights.IMAGENET1K_V1", "x")
    for bad in ("ResNet18_Weights.NOPE", "NoSuch_Weights.V1", "resnet18"):
        with pytest.raises(ConfigError, match=rf"^models\.m\.torchvision_weights: unknown torchvision weights '{bad}'"):
            check_weights_name(bad, "models.m.torchvision_weights")


def test_load_pretrained_checks_the_weights_name(tmp_path):
    # params.yaml is parsed without torch, so a misspelt name first fails where weights are loaded.
    spec = dataclasses.replace(SPECS["resnet18"], name="typo", torchvision_weights="ResNet18_Weights.NOPE")
    model = build_model(spec, num_classes=10, image_size=32)
    with pytest.raises(ConfigError, match=r"params: models\.typo\.torchvision_weights: unknown"):
        load_pretrained(model, spec, "imagenet")


@pytest.mark.parametrize("name,factory,head", [
    ("resnet18", torchvision.models.resnet18, "fc"),
    ("mobilenet_v2", torchvision.models.mobilenet_v2, "classifier.1"),
])
@pytest.mark.parametrize("num_classes", [1000, 100])
def test_load_pretrained_from_torchvision_file(tmp_path, name, factory, head, num_classes):
    torch.manual_seed(0)
    imagenet = randomise_bn_stats(factory(num_classes=1000))
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
    source = randomise_bn_stats(build_model(SPECS["resnet18_stem3"], num_classes=10, image_size=32))
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
