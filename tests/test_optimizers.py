"""Optimizers: airbench's units, parameter groups, and Muon against its definition."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from stages.optimizers import Muon, make_optimizers, orthogonalize, param_groups, set_lr, step_values
from stages.params import parse_params
from stages.models import build_model
from tests.conftest import params_dict


def optim(**changes):
    base = parse_params(params_dict(**{"train.recipe": "cpu"})).train.optim
    return dataclasses.replace(base, **changes)


def test_per_1024_units_follow_airbench_formulas():
    o = optim(lr=11.5, weight_decay=0.0153, momentum=0.85, batch_size=1024)
    k = 1024 * (1 + 1 / 0.15)
    lr, wd = step_values(o)
    # airbench94: SGD on a summed loss with lr 11.5 / k and coupled decay (0.0153 * 1024 / k) / lr,
    # i.e. each step shrinks weights by 0.0153 * 1024 / k; the mean loss scales the lr by the batch.
    assert lr == pytest.approx(11.5 * 1024 / k)
    assert lr * wd == pytest.approx(0.0153 * 1024 / k)
    # Halving the batch halves the step and the shrink per step: per image both are unchanged.
    half_lr, half_wd = step_values(dataclasses.replace(o, batch_size=512))
    assert half_lr == pytest.approx(lr / 2) and half_lr * half_wd == pytest.approx(lr * wd / 2)
    # The shrink does not depend on the lr (airbench's decay is decoupled from it).
    other_lr, other_wd = step_values(dataclasses.replace(o, lr=5.0))
    assert other_lr * other_wd == pytest.approx(lr * wd)
    assert step_values(dataclasses.replace(o, units="per-step")) == (11.5, 0.0153)


def test_bn_biases_get_their_own_lr_and_frozen_params_are_left_out():
    spec = parse_params(params_dict(**{"train.recipe": "cpu"})).train.model
    model = build_model(spec, 10)
    groups, filters = param_groups(model, lr=0.1, weight_decay=0.01, bn_bias_lr=64.0, split_filters=False)
    assert filters == []
    rest, biases = groups
    bn_biases = [m.bias for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert {id(p) for p in biases["params"]} == {id(b) for b in bn_biases}
    assert biases["lr"] == pytest.approx(6.4) and biases["weight_decay"] == pytest.approx(0.01 / 64)
    included = {id(p) for g in groups for p in g["params"]}
    assert id(model.whiten.weight) not in included  # frozen whitening filters
    assert not any(id(m.weight) in included for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert id(model.whiten.bias) in included and id(model.head.weight) in included


def test_muon_takes_the_conv_filters_and_schedules_scale_every_group():
    spec = parse_params(params_dict(**{"train.recipe": "cpu"})).train.model
    model = build_model(spec, 10)
    optimizers = make_optimizers(optim(muon=True, muon_lr=0.24), model)
    sgd, muon = optimizers
    assert isinstance(muon, Muon)
    assert all(p.ndim == 4 for g in muon.param_groups for p in g["params"])
    assert not any(p.ndim == 4 for g in sgd.param_groups for p in g["params"])
    set_lr(optimizers, lambda step: 0.5, 7)
    assert muon.param_groups[0]["lr"] == pytest.approx(0.12)
    assert sgd.param_groups[1]["lr"] == pytest.approx(0.5 * sgd.param_groups[1]["peak_lr"])


def test_split_by_scale_gives_scaled_parameters_groups_of_their_own_and_set_lr_runs_them_faster():
    spec = parse_params(params_dict(**{"train.recipe": "cpu"})).train.model
    model = build_model(spec, 10)
    first = [q for q in model.groups[0].parameters() if q.requires_grad]  # conv filters and BN biases
    scales = {id(q): 2.0 for q in first}
    for muon in (False, True):
        optimizers = make_optimizers(optim(muon=muon), model, scales)
        groups = [g for o in optimizers for g in o.param_groups]
        assert all(g.get("schedule_scale", 1.0) == (2.0 if id(g["params"][0]) in scales else 1.0) for g in groups)
        assert all({id(q) in scales for q in g["params"]} in ({True}, {False}) for g in groups)
        assert sum(len(g["params"]) for g in groups if "schedule_scale" in g) == len(first)
        assert "schedule_scale" not in optimizers[0].param_groups[0]  # group 0 follows the run's schedule
        bn = next(g for g in optimizers[0].param_groups if "schedule_scale" in g and g["params"][0].ndim == 1)
        assert bn["lr"] == pytest.approx(optimizers[0].param_groups[0]["lr"] * 64.0)  # keeps its bn_bias_lr
        set_lr(optimizers, lambda step: 1.0 - step / 100, 30)
        assert all(g["lr"] == pytest.approx(g["peak_lr"] * (0.4 if "schedule_scale" in g else 0.7)) for g in groups)
    assert len(make_optimizers(optim(), model, {})[0].param_groups) == 2  # nothing scaled: as before


def test_orthogonalize_keeps_singular_vectors_and_brings_singular_values_near_1():
    g = torch.randn(64, 300, generator=torch.Generator().manual_seed(0)) * 3.0
    out = orthogonalize(g)
    u, s, vh = torch.linalg.svd(g, full_matrices=False)
    s_out = torch.linalg.svdvals(out)
    assert s_out.min() > 0.3 and s_out.max() < 1.5  # Newton-Schulz lands in about 0.5..1.5, not exactly 1
    # same singular directions: out = U S' V^T with S' diagonal
    inner = u.T @ out @ vh.T
    assert torch.allclose(inner, torch.diag(torch.diagonal(inner)), atol=0.05)
    assert torch.allclose(orthogonalize(g.T), out.T, atol=1e-5)  # tall matrices: the same on the transpose


def test_muon_step_matches_its_definition():
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(8, 4, 3, 3))
    grad = torch.randn_like(w)
    expected_w = w.detach().clone()
    opt = Muon([w], lr=0.1, momentum=0.6)
    w.grad = grad.clone()
    opt.step()
    buf = grad  # first step: buffer = grad; Nesterov: g + 0.6 * buf
    g = grad + 0.6 * buf
    expected_w = expected_w * (8 ** 0.5 / expected_w.norm())
    expected_w = expected_w - 0.1 * orthogonalize(g.reshape(8, -1)).view_as(w)
    assert torch.allclose(w.detach(), expected_w, atol=1e-6)
