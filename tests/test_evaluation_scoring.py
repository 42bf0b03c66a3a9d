"""One evaluation path: validation during training and the test evaluation score images identically."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnbench.data.datasets import DeviceSplit, Normalize
from cnnbench.evaluation.predict import predict_probs
from cnnbench.evaluation.scoring import split_logits
from cnnbench.models.build import build_model
from cnnbench.models.specs import parse_model_spec
from cnnbench.training.loop import Dist, evaluate_split
from fixtures import TINY_RESNET, randomise_bn_stats

CPU = torch.device("cpu")
MEAN, STD = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]


@pytest.fixture(scope="module")
def model_and_data():
    """A tiny ResNet with random weights and 61 random 8x8 images of 10 classes (an odd count: a partial batch)."""
    torch.manual_seed(0)
    model = randomise_bn_stats(build_model(parse_model_spec("tiny", TINY_RESNET), num_classes=10, image_size=8))
    rng = np.random.default_rng(0)
    return model.eval(), rng.integers(0, 256, (61, 8, 8, 3), dtype=np.uint8), rng.integers(0, 10, 61)


def test_validation_measures_what_the_test_evaluation_measures(model_and_data):
    model, images, labels = model_and_data
    probs = predict_probs(model, images, MEAN, STD, CPU, batch_size=16)
    val = evaluate_split(model, DeviceSplit.from_numpy(images, labels, CPU), Normalize(MEAN, STD, CPU),
                         Dist(0, 1, CPU), batch_size=7)
    assert val["acc"] == pytest.approx(float((probs.argmax(1) == labels).mean()))
    assert val["loss"] == pytest.approx(float(-np.log(probs[np.arange(len(labels)), labels]).mean()), rel=1e-5)


def test_scoring_runs_in_eval_mode_and_full_fp32_whatever_training_set(model_and_data):
    model, images, _ = model_and_data
    seen = []
    hook = model.register_forward_hook(lambda m, i, o: seen.append(
        (m.training, o.dtype, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)))
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True  # as training sets them
        model.train()
        x = torch.from_numpy(images).permute(0, 3, 1, 2)
        logits = split_logits(model, x, Normalize(MEAN, STD, CPU), batch_size=32)
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (True, True)  # restored
    finally:
        hook.remove()
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    assert seen == [(False, torch.float32, False, False)] * 2 and logits.shape == (61, 10)
