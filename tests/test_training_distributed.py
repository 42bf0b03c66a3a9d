"""distributed: SyncBatchNorm by parameter; the collectives themselves run in test_train's and
test_launch's 2-rank gloo tests (torch's SyncBatchNorm has no CPU kernel, so only its wiring is tested here)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from cnnbench.core.errors import ConfigError
from cnnbench.models.build import build_model
from cnnbench.params.config import TrainConfig, parse_model_spec
from cnnbench.training.distributed import Dist, use_sync_batchnorm
from fixtures import TINY_RESNET


def tiny_model() -> nn.Module:
    return build_model(parse_model_spec("tiny", TINY_RESNET), num_classes=10, image_size=8)


def batchnorms(model: nn.Module, kind: type) -> int:
    return sum(type(m) is kind for m in model.modules())


def test_sync_batchnorm_converts_every_batchnorm_under_ddp_on_cuda_keeping_parameters_and_keys():
    model = tiny_model()
    before, count = model.state_dict(), batchnorms(model, nn.BatchNorm2d)
    params = {name: p for name, p in model.named_parameters()}
    synced = use_sync_batchnorm(model, TrainConfig(sync_batchnorm=True), Dist(0, 2, torch.device("cuda", 0)))
    assert batchnorms(synced, nn.SyncBatchNorm) == count > 0
    assert batchnorms(synced, nn.BatchNorm2d) == 0
    # The optimiser and checkpoints see the same tensors under the same names: best.pt loads into a plain model.
    assert all(p is params[name] for name, p in synced.named_parameters())
    assert synced.state_dict().keys() == before.keys()
    tiny_model().load_state_dict(synced.state_dict())


@pytest.mark.parametrize("cfg, env", [
    (TrainConfig(sync_batchnorm=False), Dist(0, 2, torch.device("cuda", 0))),   # not asked for
    (TrainConfig(sync_batchnorm=True), Dist(0, 1, torch.device("cuda", 0))),    # one process sees the whole batch
    (TrainConfig(sync_batchnorm=True), Dist(0, 1, torch.device("cpu"))),
], ids=["off", "one-gpu", "one-cpu"])
def test_sync_batchnorm_leaves_the_model_alone_unless_asked_under_ddp(cfg, env):
    model = tiny_model()
    assert use_sync_batchnorm(model, cfg, env) is model


def test_sync_batchnorm_under_ddp_on_the_cpu_is_refused_with_the_parameter_named():
    with pytest.raises(ConfigError, match=r"train\.sync_batchnorm: torch's SyncBatchNorm runs on GPUs only"):
        use_sync_batchnorm(tiny_model(), TrainConfig(sync_batchnorm=True), Dist(0, 2, torch.device("cpu")))
