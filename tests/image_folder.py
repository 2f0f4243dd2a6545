"""Tiny image folders in torchvision's ImageFolder layout, for tests: train/<class>/*, test/<class>/*."""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from tests.cifar_archive import write_archive


def image_bytes(pixels: np.ndarray, fmt: str = "PNG") -> bytes:
    """An encoded image of (H, W, 3) uint8 pixels."""
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


def folder_members(classes: dict[str, tuple[int, int]], size: int = 32, seed: int = 0, test: bool = True,
                   fmt: str = "PNG") -> dict[str, np.ndarray]:
    """relative path -> (H, W, 3) uint8 pixels; classes: name -> (train images, test images).
    Each class a colour plus noise, so that a model can learn it."""
    rng = np.random.default_rng(seed)
    members = {}
    for c, (name, counts) in enumerate(classes.items()):
        colour = np.array([(60 * c) % 256, (255 - 70 * c) % 256, (30 + 110 * c) % 256])
        for split, count in zip(("train", "test"), counts):
            if split == "test" and not test:
                continue
            for i in range(count):
                noise = rng.normal(0, 25, size=(size, size, 3))
                members[f"{split}/{name}/{i:04d}.{fmt.lower()}"] = np.clip(colour + noise, 0, 255).astype(np.uint8)
    return members


def write_folder(root: Path, members: dict[str, np.ndarray], extra: dict[str, bytes] | None = None) -> Path:
    """Write the images (and extra files, raw bytes) under root; return root."""
    for name, pixels in members.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(image_bytes(pixels, "JPEG" if name.endswith(".jpeg") else "PNG"))
    for name, payload in (extra or {}).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(payload)
    return root


def encoded(members: dict[str, np.ndarray], prefix: str = "") -> dict[str, bytes]:
    return {prefix + name: image_bytes(pixels) for name, pixels in members.items()}


def write_folder_archive(path: Path, members: dict[str, np.ndarray], prefix: str = "") -> str:
    """The images as a .tar.gz or .zip (by path's suffix), under `prefix`; return the archive's md5."""
    files = encoded(members, prefix)
    if path.suffix != ".zip":
        return write_archive(path, files)
    import hashlib

    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for name, payload in files.items():
            zf.writestr(name, payload)
    return hashlib.md5(path.read_bytes()).hexdigest()
