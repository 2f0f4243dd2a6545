"""Training augmentation on the device, for a whole epoch at once: random translation, flips, and
the smaller random crops of train.augment.early_crop.

Random numbers come from the CPU generator, so runs are seeded the same on any device.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

AUGMENT_CHUNK = 8192  # images augmented at once: bounds the padded copy's memory


def flip_mask(n: int, mode: str, epoch: int, base: torch.Tensor | None, generator: torch.Generator) -> torch.Tensor | None:
    """Which of n images to mirror in `epoch` (1-based), or None for no flips.

    random: a fresh coin per image and epoch. alternate (airbench): `base`, one coin per image
    drawn once per run, on odd epochs and its complement on even ones, so every image is seen
    mirrored on every other epoch: more variety than independent coins.
    """
    if mode == "none":
        return None
    if mode == "random":
        return torch.rand(n, generator=generator) < 0.5
    if mode == "alternate":
        if base is None or len(base) != n:
            raise ValueError("alternate flips need the run's base mask of one coin per image")
        return base if epoch % 2 == 1 else ~base
    raise ValueError(f"Invalid flip mode {mode!r}. Only none, random, alternate are supported.")


def windows(images: torch.Tensor, starts: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Each image's h x w window whose top-left pixel is starts[i] = (row, column): (N, C, H, W) -> (N, C, h, w)."""
    rows = (starts[:, 0, None] + torch.arange(h, device=images.device))[:, None, :, None]
    x = images.gather(2, rows.expand(-1, images.shape[1], -1, images.shape[3]))  # (N, C, h, W)
    cols = (starts[:, 1, None] + torch.arange(w, device=images.device))[:, None, None, :]
    return x.gather(3, cols.expand(-1, images.shape[1], h, -1))


def translate(images: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Random crops of H x W from a reflect-padded copy of images (N, C, H, W): shifts of up to `pad` pixels."""
    n, _, h, w = images.shape
    shifts = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator)
    out = []
    for start in range(0, n, AUGMENT_CHUNK):
        x = images[start:start + AUGMENT_CHUNK]
        padded = F.pad(x, (pad,) * 4, mode="reflect")  # (n, C, H+2p, W+2p)
        out.append(windows(padded, shifts[start:start + AUGMENT_CHUNK].to(x.device), h, w))
    return torch.cat(out)


def crop(images: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """A size x size window of each image (N, C, H, W) at a random place inside it (train.augment.early_crop)."""
    n, _, h, w = images.shape
    if not 0 < size <= min(h, w):
        raise ValueError(f"crop size {size} does not fit images of {h}x{w} pixels")
    starts = torch.stack([torch.randint(0, h - size + 1, (n,), generator=generator),
                          torch.randint(0, w - size + 1, (n,), generator=generator)], 1)
    return torch.cat([windows(images[i:i + AUGMENT_CHUNK], starts[i:i + AUGMENT_CHUNK].to(images.device), size, size)
                      for i in range(0, n, AUGMENT_CHUNK)])


def augment(images: torch.Tensor, crop_pad: int, flips: torch.Tensor | None,
            generator: torch.Generator) -> torch.Tensor:
    """Translate (crop_pad > 0) and then mirror the images where `flips` (N,) is true."""
    if crop_pad:
        images = translate(images, crop_pad, generator)
    if flips is not None:
        images = torch.where(flips.to(images.device)[:, None, None, None], images.flip(3), images)
    return images
