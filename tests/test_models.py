"""Every model on tiny input: shapes, no NaN, gradients, and the tutorial-compatible layouts."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from stages.models import (MODELS, Airbench, Blocks, ColumnLinear, ResNet9, build_model, linear_by_columns,
                           model_spec, predict_logits)
from stages.params import ModelParams, parse_params
from tests.conftest import params_dict

TUTORIAL_MODEL = parse_params(params_dict()).train.model  # relu, BatchNorm scales trained, no whitening


def spec(name: str, **changes) -> ModelParams:
    """train.model of the tutorial recipe with another network (small by default) and `changes`."""
    return dataclasses.replace(TUTORIAL_MODEL, name=name, **{"width": 8, "widths": [8, 16, 16], **changes})


@pytest.mark.parametrize("name", list(MODELS))
def test_forward_backward_shapes_and_finite(name):
    torch.manual_seed(0)
    model = build_model(spec(name), num_classes=10)
    x = torch.randn(4, 3, 32, 32)
    logits = model(x)
    assert logits.shape == (4, 10) and torch.isfinite(logits).all()
    logits.logsumexp(1).sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_every_model_is_built_by_name():
    assert list(MODELS) == ["mlp", "cnn", "resnet", "airbench"]
    assert [type(build_model(spec(name), 10)).__name__ for name in MODELS] == ["MLP", "CNN", "ResNet9", "Airbench"]


def test_resnet_width_scales_channels():
    small, wide = build_model(spec("resnet", width=8), 10), build_model(spec("resnet", width=16), 10)
    assert small.net[-1].in_features == 64 and wide.net[-1].in_features == 128
    assert sum(p.numel() for p in wide.parameters()) > 3.5 * sum(p.numel() for p in small.parameters())


def test_airbench_widths_set_its_three_groups():
    model = build_model(spec("airbench", widths=[8, 16, 32]), 10)
    assert model.whiten.out_channels == Airbench.WHITEN_WIDTH == 24
    assert [g.conv2.out_channels for g in model.groups] == [8, 16, 32]
    assert model.head.in_features == 32 and model.head.out_features == 10


@pytest.mark.parametrize("batch", [1, 4, 33])
def test_the_mlp_computes_the_tutorial_networks_function(batch):
    """Its Linear layers take the product as (W x^T)^T: nn.Linear's outputs and gradients, to rounding."""
    torch.manual_seed(0)
    ours = build_model(dataclasses.replace(TUTORIAL_MODEL, name="mlp"), 10)
    plain = nn.Sequential(nn.Linear(3072, 1024), nn.ReLU(), nn.Linear(1024, 512), nn.ReLU(), nn.Linear(512, 10))
    plain.load_state_dict(ours.linear_relu_stack.state_dict())  # strict: the tutorial's layers, key for key
    x = torch.randn(batch, 3, 32, 32)
    a, b = ours(x), plain(x.flatten(1))
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    a.square().sum().backward()
    b.square().sum().backward()
    for p, q in zip(ours.parameters(), plain.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5)


def test_column_product_without_bias_and_on_more_dimensions():
    layer = ColumnLinear(6, 3, bias=False)
    x = torch.randn(5, 6)
    torch.testing.assert_close(linear_by_columns(x, layer.weight, None), x @ layer.weight.t())
    torch.testing.assert_close(layer(x), x @ layer.weight.t())
    assert layer(torch.randn(2, 5, 6)).shape == (2, 5, 3)  # (..., in) as nn.Linear takes it


def test_cnn_has_the_tutorial_layout():
    assert {k: tuple(v.shape) for k, v in build_model(spec("cnn"), 10).state_dict().items()} == {
        "conv1.weight": (6, 3, 5, 5), "conv1.bias": (6,), "conv2.weight": (16, 6, 5, 5), "conv2.bias": (16,),
        "fc1.weight": (120, 400), "fc1.bias": (120,), "fc2.weight": (84, 120), "fc2.bias": (84,),
        "fc3.weight": (10, 84), "fc3.bias": (10,)}


def test_unknown_model_is_named():
    with pytest.raises(ValueError, match=r"Invalid model 'vgg'\. Only mlp, cnn, resnet, airbench are supported\."):
        build_model(spec("vgg"), 10)


def test_whitened_airbench_with_frozen_scales_trains_neither():
    model = build_model(spec("airbench", whiten=True, bn_weight="frozen"), 10)
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    norms = {f"{name}.weight" for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    assert frozen == {"whiten.weight"} | norms and len(norms) == 6
    assert all(model.get_parameter(name).requires_grad for name in ("whiten.bias", "head.weight"))
    assert not {name for name, p in build_model(spec("airbench"), 10).named_parameters() if not p.requires_grad}


@pytest.mark.parametrize("name", ["resnet", "airbench"])
def test_block_params_reach_every_layer(name):
    model = build_model(spec(name, activation="gelu", bn_momentum=0.4, bn_eps=1e-12, output_scale=0.5), 10)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all((m.momentum, m.eps) == (0.4, 1e-12) for m in norms)
    assert any(isinstance(m, nn.GELU) for m in model.modules())
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())
    assert model.output_scale == 0.5


def test_output_scale_multiplies_the_logits():
    torch.manual_seed(0)
    one = build_model(spec("airbench", output_scale=1.0), 10).eval()
    ninth = build_model(spec("airbench", output_scale=1 / 9), 10).eval()
    ninth.load_state_dict(one.state_dict())
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(ninth(x), one(x) / 9)


def test_dirac_init_passes_the_first_channels_through():
    x = torch.randn(2, 4, 5, 5)
    conv = Blocks(dirac_init=True).conv(4, 6)
    with torch.no_grad():
        torch.testing.assert_close(conv(x)[:, :4], x)
        assert not torch.allclose(Blocks().conv(4, 6)(x)[:, :4], x)


def test_model_spec_reads_the_nested_model_params_back():
    recorded = spec("airbench", widths=[8, 16, 16], whiten=True, activation="gelu")
    meta = {"model": "airbench", "width": 8, "train_params": {"model": dataclasses.asdict(recorded)}}
    assert model_spec(meta) == recorded


def test_model_json_from_before_the_groups_loads_as_the_network_it_was():
    # data/model.json as the flat-params train stage wrote it
    old = {"model": "resnet", "width": 8, "num_classes": 10,
           "train_params": {"recipe": "cpu", "model": "resnet", "width": 8, "lr": 0.2, "flip": True}}
    model = build_model(model_spec(old), 10)
    assert isinstance(model, ResNet9) and model.output_scale == 0.125 and model.net[-1].in_features == 64
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all((m.momentum, m.eps, m.weight.requires_grad) == (0.1, 1e-5, True) for m in norms)
    assert all(isinstance(m, nn.ReLU) for m in model.modules() if isinstance(m, (nn.ReLU, nn.GELU, nn.CELU)))
    mlp = build_model(model_spec({"model": "mlp", "width": 64, "train_params": {"model": "mlp"}}), 10)
    assert type(mlp).__name__ == "MLP"


def test_predict_logits_batches_and_restores_train_mode():
    model = build_model(spec("resnet", width=4), 10)
    x = torch.randn(10, 3, 32, 32)
    model.eval()
    expected = model(x)
    model.train()
    logits = predict_logits(model, x, batch_size=3)
    assert model.training
    torch.testing.assert_close(logits, expected)


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("size", [16, 24, 64])
def test_every_model_takes_the_image_size_it_accepts(name, size):
    model = build_model(spec(name), num_classes=7, image_size=size).eval()
    assert model(torch.randn(2, 3, size, size)).shape == (2, 7)


@pytest.mark.parametrize("name, size, rule", [("resnet", 36, "a multiple of 8 pixels"),
                                              ("cnn", 12, "at least 16 pixels"), ("airbench", 8, "at least 9 pixels")])
def test_a_size_a_model_cannot_take_is_one_error_with_the_rule(name, size, rule):
    with pytest.raises(ValueError, match=rf"^train\.model\.name '{name}' cannot take {size}x{size} images "
                                         rf"\(prepare\.image_size {size}\): it needs {rule}$"):
        build_model(spec(name), num_classes=10, image_size=size)
