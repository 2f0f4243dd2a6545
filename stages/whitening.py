"""Patch-whitening init of airbench's first layer: a frozen 2x2 conv that decorrelates pixels.

Its filters are the eigenvectors of the (uncentered) covariance of 2x2x3 patches
of training images, each divided by the square root of its eigenvalue (plus
eps), and the same filters negated: on training patches, the first half of its
outputs has about identity covariance. airbench94 builds it from 5,000 training
images with eps 5e-4; the layer's weights then stay frozen.
"""
from __future__ import annotations

import torch
from torch import nn

WHITEN_IMAGES = 5000  # airbench94's sample of training images


def patches(images: torch.Tensor, size: int) -> torch.Tensor:
    """Every size x size patch of images (N, C, H, W), flattened: (N * (H-size+1) * (W-size+1), C*size*size)."""
    c = images.shape[1]
    x = images.float().unfold(2, size, 1).unfold(3, size, 1)  # (N, C, H', W', size, size)
    return x.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * size * size)


def whitening_filters(images: torch.Tensor, size: int, eps: float) -> torch.Tensor:
    """(2 * C*size*size, C, size, size) filters: the scaled eigen-patches, largest eigenvalue first,
    then the same negated."""
    c = images.shape[1]
    flat = patches(images, size).double()
    covariance = flat.T @ flat / len(flat)  # uncentered, as airbench
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)  # ascending
    eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.flip(1)
    scaled = (eigenvectors / torch.sqrt(eigenvalues.clamp(min=0) + eps)).T  # one row per filter
    filters = scaled.reshape(-1, c, size, size)
    return torch.cat([filters, -filters]).float()


def init_whitening(conv: nn.Conv2d, images: torch.Tensor, eps: float) -> None:
    """Set `conv`'s weights to whitening filters of `images` (N, C, H, W) and its bias to 0; the weights
    stay as they are (frozen) after this."""
    filters = whitening_filters(images[:WHITEN_IMAGES].to(conv.weight.device), conv.kernel_size[0], eps)
    if filters.shape != conv.weight.shape:
        raise ValueError(f"whitening filters of shape {tuple(filters.shape)} do not fit conv weights "
                         f"{tuple(conv.weight.shape)}")
    with torch.no_grad():
        conv.weight.copy_(filters)
        if conv.bias is not None:
            conv.bias.zero_()
