"""Every model on tiny input: shapes, no NaN, gradients, and the tutorial-compatible layouts."""
from __future__ import annotations

import pytest
import torch

from stages.models import MODELS, build_model, predict_logits


@pytest.mark.parametrize("name", list(MODELS))
def test_forward_backward_shapes_and_finite(name):
    torch.manual_seed(0)
    model = build_model(name, num_classes=10, width=8)
    x = torch.randn(4, 3, 32, 32)
    logits = model(x)
    assert logits.shape == (4, 10) and torch.isfinite(logits).all()
    logits.logsumexp(1).sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_resnet_width_scales_channels():
    small, wide = build_model("resnet", 10, width=8), build_model("resnet", 10, width=16)
    assert small.net[-1].in_features == 64 and wide.net[-1].in_features == 128
    assert sum(p.numel() for p in wide.parameters()) > 3.5 * sum(p.numel() for p in small.parameters())


def test_cnn_has_the_tutorial_layout():
    assert {k: tuple(v.shape) for k, v in build_model("cnn", 10).state_dict().items()} == {
        "conv1.weight": (6, 3, 5, 5), "conv1.bias": (6,), "conv2.weight": (16, 6, 5, 5), "conv2.bias": (16,),
        "fc1.weight": (120, 400), "fc1.bias": (120,), "fc2.weight": (84, 120), "fc2.bias": (84,),
        "fc3.weight": (10, 84), "fc3.bias": (10,)}


def test_unknown_model_is_named():
    with pytest.raises(ValueError, match=r"Invalid model 'vgg'\. Only mlp, cnn, resnet are supported\."):
        build_model("vgg", 10)


def test_predict_logits_batches_and_restores_train_mode():
    model = build_model("resnet", 10, width=4)
    x = torch.randn(10, 3, 32, 32)
    model.eval()
    expected = model(x)
    model.train()
    logits = predict_logits(model, x, batch_size=3)
    assert model.training
    torch.testing.assert_close(logits, expected)
