"""stages/fused.py: plain SGD inside the backward pass gives SGD's steps, where it applies."""
from __future__ import annotations

import logging

import pytest
import torch

from stages.fused import why_not_fused
from stages.models import build_model
from stages.params import parse_params
from stages.trainer import make_trainer, train_epoch
from tests.conftest import params_dict

# The tutorial recipe with a schedule whose lr changes every step, so a stale lr would show.
SCHEDULED = {"train.optim.schedule": "linear", "train.optim.warmup": 0.3, "train.optim.lr": 0.01}


def tutorial(**dotted):
    return parse_params(params_dict(**{"train.numerics.device": "cpu", **dotted})).train


def trained(p, steps_per_epoch=16, epochs=2):
    torch.manual_seed(0)
    model = build_model(p.model, 10)
    t = make_trainer(p, model, steps_per_epoch)
    g = torch.Generator().manual_seed(1)
    images, labels = torch.randn(64, 3, 32, 32, generator=g), torch.randint(0, 10, (64,), generator=g)
    generator = torch.Generator().manual_seed(0)
    for epoch in range(1, epochs + 1):
        train_epoch(t, images, labels, 4, generator, epoch, (epoch - 1) * steps_per_epoch)
    return model, t


def test_fused_steps_are_sgds_steps_and_keep_no_gradients(caplog):
    caplog.set_level(logging.INFO, logger="stages")
    fused, _ = trained(tutorial(**SCHEDULED))
    assert "SGD runs inside the backward pass of 3 Linear layers" in caplog.text
    plain, _ = trained(tutorial(**SCHEDULED, **{"train.numerics.fused_sgd": False}))
    start = build_model(tutorial().model, 10)
    for (name, a), b, c in zip(fused.named_parameters(), plain.parameters(), start.parameters()):
        assert a.grad is None, name  # nothing stored: the update was made in backward
        assert not torch.equal(b, c)  # both trained...
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)  # ...to SGD's weights but for rounding


def test_bias_groups_keep_their_own_lr():
    """bn_bias_lr scales BatchNorm biases only; an MLP has none, so one group: any other lr would differ."""
    fused, t = trained(tutorial(**{"train.optim.lr": 0.02}), epochs=1)
    plain, _ = trained(tutorial(**{"train.optim.lr": 0.02, "train.numerics.fused_sgd": False}), epochs=1)
    assert len(t.optimizers[0].param_groups) == 1
    assert all(torch.allclose(a, b, rtol=0, atol=1e-6) for a, b in zip(fused.parameters(), plain.parameters()))


def test_evaluation_without_grad_changes_nothing():
    model, _ = trained(tutorial(), epochs=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model(torch.randn(8, 3, 32, 32))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("dotted, world, reason", [
    ({"train.optim.momentum": 0.9}, 1, "momentum or weight decay"),
    ({"train.optim.weight_decay": 0.01}, 1, "momentum or weight decay"),
    ({"train.optim.optimizer": "adamw"}, 1, "not plain SGD"),
    ({"train.model.name": "cnn"}, 1, "non-Linear layers"),
    ({"train.numerics.precision": "bf16"}, 1, "precision is bf16"),
    ({"train.numerics.compile": True}, 1, "compiled"),
    ({}, 2, "several processes"),
    ({}, 1, None),
])
def test_where_it_does_not_apply_it_says_why(dotted, world, reason):
    p = tutorial(**dotted)
    model = build_model(p.model, 10)
    from stages.optimizers import make_optimizers

    why = why_not_fused(p, model, make_optimizers(p.optim, model), world)
    assert why == reason if reason is None else reason in why


def test_not_applied_is_logged_and_sgd_steps_as_before(caplog):
    caplog.set_level(logging.INFO, logger="stages")
    model, _ = trained(tutorial(**{"train.optim.momentum": 0.5}), epochs=1)
    assert "train.numerics.fused_sgd: not applied, SGD has momentum or weight decay" in caplog.text
    assert all(p.grad is not None for p in model.parameters())  # stepped by torch's SGD after backward
