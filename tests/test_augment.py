"""Augmentation: translation stays within the pad, flip modes follow their definitions."""
from __future__ import annotations

import pytest
import torch

from stages.augment import augment, flip_mask, translate


def test_alternate_flip_flips_each_image_on_every_other_epoch():
    g = torch.Generator().manual_seed(0)
    base = torch.rand(100, generator=g) < 0.5
    masks = [flip_mask(100, "alternate", epoch, base, g) for epoch in range(1, 6)]
    for earlier, later in zip(masks, masks[1:]):
        assert torch.equal(later, ~earlier)  # every image changes orientation each epoch
    assert torch.equal(masks[0], masks[2]) and torch.equal(masks[0], base)
    assert 30 < int(base.sum()) < 70  # the first epoch's coins are fair


def test_random_flip_draws_fresh_coins_and_none_draws_nothing():
    g = torch.Generator().manual_seed(0)
    a, b = flip_mask(1000, "random", 1, None, g), flip_mask(1000, "random", 2, None, g)
    assert not torch.equal(a, b) and 400 < int(a.sum()) < 600
    state = g.get_state()
    assert flip_mask(1000, "none", 1, None, g) is None
    assert torch.equal(state, g.get_state())


def test_alternate_without_base_and_unknown_mode_are_refused():
    g = torch.Generator()
    with pytest.raises(ValueError, match="base mask"):
        flip_mask(10, "alternate", 1, None, g)
    with pytest.raises(ValueError, match="Invalid flip mode 'sometimes'"):
        flip_mask(10, "sometimes", 1, None, g)


def test_translate_shifts_by_at_most_pad_pixels_with_reflect_padding():
    x = torch.arange(32.0).view(1, 1, 1, 32).expand(64, 1, 32, 32).contiguous()  # value = column index
    out = translate(x, 2, torch.Generator().manual_seed(0))
    shifts = out[:, 0, 0, 2] - 2  # column 2 shows column 2 + shift (no reflection there)
    assert set(shifts.tolist()) <= {-2.0, -1.0, 0.0, 1.0, 2.0} and len(set(shifts.tolist())) > 2
    assert torch.equal(out[:, 0, 0, 2:30], x[:, 0, 0, 2:30] + shifts[:, None])


def test_augment_flips_exactly_the_masked_images():
    x = torch.randn(6, 3, 8, 8)
    mask = torch.tensor([True, False, True, False, False, True])
    out = augment(x, 0, mask, torch.Generator())
    assert torch.equal(out[mask], x[mask].flip(3)) and torch.equal(out[~mask], x[~mask])
