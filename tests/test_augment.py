"""Augmentation: translation stays within the pad, flip modes follow their definitions, early crops are windows."""
from __future__ import annotations

import pytest
import torch

from stages.augment import augment, crop, flip_mask, translate


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


def random_augment(images, crop_pad, seed):
    """Random flips and crops as an epoch draws them: the flip coins, then the shifts, from one generator."""
    generator = torch.Generator().manual_seed(seed)
    return augment(images, crop_pad, flip_mask(len(images), "random", 1, None, generator), generator)


def test_augment_is_seeded_and_keeps_image_content():
    images = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).view(2, 3, 32, 32)
    a = random_augment(images, 4, seed=0)
    b = random_augment(images, 4, seed=0)
    c = random_augment(images, 4, seed=1)
    assert a.shape == images.shape and torch.equal(a, b) and not torch.equal(a, c)
    # Crops come from the reflect-padded image: the centre 24x24 of every crop lies inside the original.
    for i in range(2):
        centre = a[i, :, 4:28, 4:28]
        hits = [torch.equal(centre, img[:, dy:dy + 24, dx:dx + 24])
                for img in (images[i], images[i].flip(2)) for dy in range(9) for dx in range(9)]
        assert any(hits)


def test_augment_off_is_identity_and_flip_only_mirrors():
    images = torch.randn(64, 3, 32, 32)
    assert torch.equal(augment(images, 0, None, torch.Generator()), images)
    assert flip_mask(64, "none", 1, None, torch.Generator()) is None
    flipped = random_augment(images, 0, seed=0)
    same = (flipped == images).flatten(1).all(1)
    mirrored = (flipped == images.flip(3)).flatten(1).all(1)
    assert (same | mirrored).all() and 10 < mirrored.sum() < 54


def test_crop_takes_a_window_of_each_image_at_a_seeded_random_place():
    images = torch.randn(200, 3, 32, 32)
    out = crop(images, 24, torch.Generator().manual_seed(0))
    assert out.shape == (200, 3, 24, 24)
    assert torch.equal(out, crop(images, 24, torch.Generator().manual_seed(0)))
    places = []
    for image, window in zip(images, out):
        hits = [(dy, dx) for dy in range(9) for dx in range(9) if torch.equal(window, image[:, dy:dy + 24, dx:dx + 24])]
        assert len(hits) == 1
        places += hits
    assert len(set(places)) > 60  # each image its own place, not one per batch
    assert {dy for dy, _ in places} == {dx for _, dx in places} == set(range(9))  # every place a window fits


@pytest.mark.parametrize("size", [0, 33])
def test_a_crop_that_does_not_fit_is_refused(size):
    with pytest.raises(ValueError, match=f"crop size {size} does not fit images of 32x32 pixels"):
        crop(torch.zeros(2, 3, 32, 32), size, torch.Generator())
