"""The prepared splits as train and evaluate load them: uint8 pixels on disk, normalized on the device.

prepare caches images as uint8 (N, 3, H, W), a quarter of float32's size for DVC to hash, cache,
push and pull; as airbench does, they become float32 on the device they are used on, with the
same operations (and so the same bits) as torchvision's ToTensor + Normalize.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .common import load_prepared


def normalize(images: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float32 ((x / 255) - mean) / std, on the images' device."""
    x = images.float().div_(255)
    shape = (1, 3, 1, 1)
    return x.sub_(torch.tensor(mean).view(shape).to(x.device)).div_(torch.tensor(std).view(shape).to(x.device))


def load_split(path: Path, device: torch.device) -> dict:
    """A prepared split with its images moved to `device` once and normalized there, and its labels."""
    split = load_prepared(path)  # checked: a damaged or float32 (older) file is one error naming it
    split["images"] = normalize(split["images"].to(device), split["mean"], split["std"])
    split["labels"] = split["labels"].to(device)
    return split
