"""FLOP counts against hand-counted convolutions and linears."""
from __future__ import annotations

import torch
from torch import nn

from stages.flops import inference_flops, training_flops


def test_inference_flops_of_a_conv_and_a_linear():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(8 * 4 * 4, 10, bias=False))
    per_image = 2 * (4 * 4 * 8 * 3 * 9) + 2 * (128 * 10)  # 2 FLOPs per multiply-add
    assert inference_flops(model, torch.randn(2, 3, 4, 4), 1000) == 1000 * per_image


def test_training_counts_forward_and_backward_and_leaves_the_model_alone():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.Flatten(),
                          nn.Linear(8 * 4 * 4, 10, bias=False))
    forward = inference_flops(model, torch.randn(2, 3, 4, 4), 1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train = training_flops(model, torch.randn(2, 3, 4, 4), 1)
    # backward: weight grads of both layers, input grad of the linear only (the input needs no grad)
    assert train == forward + forward + 2 * (128 * 10)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_fast_gpu_run_stays_within_0_40_pflop_with_its_tta():
    """Issue 10's budget for airbench94's method: training on 50,000 images plus 6-view TTA on 10,000."""
    from stages.models import build_model
    from stages.params import parse_params
    from tests.conftest import params_dict

    p = parse_params(params_dict(**{"train.recipe": "fast-gpu"})).train
    model = build_model(p.model, 10)
    sample = torch.randn(2, 3, 32, 32)
    total = training_flops(model, sample, p.optim.epochs * 50_000) + inference_flops(model, sample, 6 * 10_000)
    assert 0.30e15 < total <= 0.40e15  # 0.368e15 (BENCHMARKS.md 3d); the lower bound catches a counter that misses layers
