"""FLOPs of training and inference, counted by torch's FLOP counter (matrix multiplies and convolutions;
BatchNorm, activations and the optimizer are not counted, as in published figures such as airbench's)."""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def _count(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def training_flops(model: nn.Module, sample: torch.Tensor, images: int) -> int:
    """FLOPs of training on `images` images (epochs x training images): one forward and backward pass
    of `sample` (a few training images) on a copy of the model, scaled per image."""
    twin = copy.deepcopy(model).train()  # its BatchNorm statistics move, not the model's
    labels = torch.zeros(len(sample), dtype=torch.long, device=sample.device)
    per_batch = _count(lambda: F.cross_entropy(twin(sample), labels).backward())
    return per_batch * images // len(sample)


def inference_flops(model: nn.Module, sample: torch.Tensor, images: int) -> int:
    """FLOPs of one forward pass over `images` images in eval mode, from a pass over `sample`."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        per_batch = _count(lambda: model(sample))
    model.train(was_training)
    return per_batch * images // len(sample)
