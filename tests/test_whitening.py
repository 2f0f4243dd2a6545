"""Patch-whitening init: its filters whiten 2x2 training patches, and the layer stays frozen."""
from __future__ import annotations

import torch

from stages.whitening import init_whitening, patches, whitening_filters
from tests.conftest import params_dict
from stages.params import parse_params
from stages.models import build_model


def correlated_images(n: int = 200) -> torch.Tensor:
    """Images whose neighbouring pixels and channels are strongly correlated, like photos."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(n, 1, 8, 8, generator=g)
    smooth = torch.nn.functional.interpolate(base, size=32, mode="bilinear", align_corners=False)
    return smooth.repeat(1, 3, 1, 1) + 0.1 * torch.randn(n, 3, 32, 32, generator=g)


def test_patches_are_every_2x2_window_flattened_channel_major():
    x = torch.arange(2 * 3 * 3 * 3, dtype=torch.float32).view(2, 3, 3, 3)
    p = patches(x, 2)
    assert p.shape == (2 * 2 * 2, 12)
    # first image, top-left window: channel 0 rows [0,1] cols [0,1], then channel 1, channel 2
    assert p[0].tolist() == [0, 1, 3, 4, 9, 10, 12, 13, 18, 19, 21, 22]


def test_outputs_on_training_patches_have_identity_covariance():
    images = correlated_images()
    filters = whitening_filters(images, 2, eps=1e-6)
    assert filters.shape == (24, 3, 2, 2)
    flat = patches(images, 2).double()
    raw_cov = flat.T @ flat / len(flat)
    assert raw_cov[0, 1] / raw_cov[0, 0] > 0.9  # the input is far from white
    out = flat @ filters[:12].reshape(12, -1).double().T  # (patches, 12): what the conv computes
    cov = out.T @ out / len(out)
    assert torch.allclose(cov, torch.eye(12, dtype=torch.float64), atol=1e-3)
    assert torch.equal(filters[12:], -filters[:12])  # the negated half


def test_eps_damps_the_weakest_directions():
    images = correlated_images()
    strong = whitening_filters(images, 2, eps=1e-6)
    damped = whitening_filters(images, 2, eps=1.0)
    # largest-eigenvalue filter first: eps barely changes it; the smallest shrinks a lot
    assert damped[0].norm() / strong[0].norm() > 0.5
    assert damped[11].norm() / strong[11].norm() < 0.1


def test_airbench_model_whitening_is_frozen_and_set_from_images():
    spec = parse_params(params_dict(**{"train.recipe": "cpu"})).train.model
    model = build_model(spec, 10)
    assert not model.whiten.weight.requires_grad and model.whiten.bias.requires_grad
    images = correlated_images(50)
    init_whitening(model.whiten, images, spec.whiten_eps)
    assert torch.allclose(model.whiten.weight, whitening_filters(images, 2, spec.whiten_eps))
    assert torch.count_nonzero(model.whiten.bias) == 0
