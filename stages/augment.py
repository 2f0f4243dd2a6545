"""Training augmentation on the device, for a whole epoch at once: random translation and flips.

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


def translate(images: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Random crops of H x W from a reflect-padded copy of images (N, C, H, W): shifts of up to `pad` pixels."""
    n, _, h, w = images.shape
    shifts = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator)
    out = []
    for start in range(0, n, AUGMENT_CHUNK):
        x = images[start:start + AUGMENT_CHUNK]
        s = shifts[start:start + AUGMENT_CHUNK].to(x.device)
        padded = F.pad(x, (pad,) * 4, mode="reflect")  # (n, C, H+2p, W+2p)
        rows = (s[:, 0, None] + torch.arange(h, device=x.device))[:, None, :, None]
        x = padded.gather(2, rows.expand(-1, x.shape[1], -1, padded.shape[3]))  # (n, C, H, W+2p)
        cols = (s[:, 1, None] + torch.arange(w, device=x.device))[:, None, None, :]
        out.append(x.gather(3, cols.expand(-1, x.shape[1], h, -1)))  # (n, C, H, W)
    return torch.cat(out)


def augment(images: torch.Tensor, crop_pad: int, flips: torch.Tensor | None,
            generator: torch.Generator) -> torch.Tensor:
    """Translate (crop_pad > 0) and then mirror the images where `flips` (N,) is true."""
    if crop_pad:
        images = translate(images, crop_pad, generator)
    if flips is not None:
        images = torch.where(flips.to(images.device)[:, None, None, None], images.flip(3), images)
    return images
