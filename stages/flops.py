"""FLOPs of training and inference, counted by torch's FLOP counter (matrix multiplies and convolutions;
BatchNorm, activations and the optimizer are not counted, as in published figures such as airbench's)."""
from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def _count(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def training_flops(model: nn.Module, sample: torch.Tensor, images: int, frozen: Sequence[nn.Parameter] = ()) -> int:
    """FLOPs of training on `images` images (epochs x training images): one forward and backward pass
    of `sample` (a few training images) on a copy of the model, scaled per image. The copy's `frozen`
    parameters (the model's) take no gradient, so backward skips what it skips in training."""
    twin = copy.deepcopy(model).train()  # its BatchNorm statistics move, not the model's
    skip = {id(q) for q in frozen}
    for original, copied in zip(model.parameters(), twin.parameters()):
        if id(original) in skip:
            copied.requires_grad_(False)
    labels = torch.zeros(len(sample), dtype=torch.long, device=sample.device)
    per_batch = _count(lambda: F.cross_entropy(twin(sample), labels).backward())
    return per_batch * images // len(sample)


def run_flops(model: nn.Module, sample: torch.Tensor, images: int, epochs: int,
              frozen_in: Callable[[int], Sequence[nn.Parameter]], crop: int = 0, crop_epochs: int = 0) -> int:
    """FLOPs of a whole run of `epochs` epochs over `images` training images, each epoch counted as it
    trains: on `crop` x `crop` windows of `sample` in the first `crop_epochs` (train.augment.early_crop),
    and without the gradients of the parameters `frozen_in(epoch)` freezes (1-based epochs)."""
    epochs_of: Counter[tuple[bool, tuple[int, ...]]] = Counter()
    frozen_of: dict[tuple[bool, tuple[int, ...]], Sequence[nn.Parameter]] = {}
    for epoch in range(1, epochs + 1):
        frozen = frozen_in(epoch)
        kind = (epoch <= crop_epochs, tuple(sorted(id(q) for q in frozen)))
        epochs_of[kind] += 1
        frozen_of[kind] = frozen
    return sum(training_flops(model, sample[..., :crop, :crop] if cropped else sample, count * images,
                              frozen_of[(cropped, ids)])
               for (cropped, ids), count in epochs_of.items())


def inference_flops(model: nn.Module, sample: torch.Tensor, images: int) -> int:
    """FLOPs of one forward pass over `images` images in eval mode, from a pass over `sample`."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        per_batch = _count(lambda: model(sample))
    model.train(was_training)
    return per_batch * images // len(sample)
