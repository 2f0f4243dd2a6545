"""Lookahead and EMA against their update formulas."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from stages.averaging import Lookahead, make_ema


def test_lookahead_update_follows_its_formula():
    model = nn.Linear(3, 2)
    la = Lookahead(model, peak=0.8, every=5, total_steps=100)
    slow = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)  # the fast weights moved
    fast = model.weight.detach().clone()
    la.step(3)  # not a multiple of `every`: nothing happens
    assert torch.equal(model.weight, fast)
    la.step(50)
    d = 0.8 * 0.5 ** 3
    expected = slow + (1 - d) * (fast - slow)
    assert torch.allclose(model.weight, expected) and torch.allclose(la.slow["weight"], expected)


def test_lookahead_finish_makes_the_slow_weights_the_models():
    model = nn.Linear(3, 2)
    la = Lookahead(model, peak=0.8, every=1, total_steps=10)
    slow = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.mul_(3)
    la.finish()
    assert torch.allclose(model.weight, slow)


def test_lookahead_leaves_integer_buffers_and_round_trips_its_state():
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    la = Lookahead(model, peak=0.5, every=1, total_steps=4)
    assert "1.num_batches_tracked" not in la.slow
    model(torch.randn(8, 3))  # moves running stats and the counter
    la.step(4)
    assert int(model[1].num_batches_tracked) == 1
    other = Lookahead(model, peak=0.5, every=1, total_steps=4)
    other.load_state_dict(la.state_dict())
    assert all(torch.equal(other.slow[k], la.slow[k]) for k in la.slow)


def test_ema_averages_with_the_given_decay():
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = make_ema(model, 0.9)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update_parameters(model)  # first update copies
    with torch.no_grad():
        model.weight.fill_(2.0)
    ema.update_parameters(model)
    assert ema.module.weight.flatten().tolist() == pytest.approx([0.9 * 1.0 + 0.1 * 2.0] * 2)
