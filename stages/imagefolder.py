"""Image folders in torchvision's ImageFolder layout: `train/<class>/*` and `test/<class>/*`.

Each class is named by its folder; classes are sorted by name (ImageFolder's order), files within a
class by path. Any file Pillow opens is an image; it is converted to RGB and resized to a square of
prepare.image_size pixels. Files outside the class folders (a README, order.csv) are skipped and
counted. Every unreadable file is named in one error, and Pillow's decompression-bomb limit is an
error, not a warning.
"""
from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .common import StageError, progress

log = logging.getLogger("stages")
SPLITS = ("train", "test")
PROGRESS_EVERY_S = 10.0  # a log line this often while decoding, for logs where no progress bar shows
RESAMPLING = {name: getattr(Image.Resampling, name.upper())
              for name in ("nearest", "box", "bilinear", "hamming", "bicubic", "lanczos")}


@dataclass(frozen=True)
class Listing:
    classes: list[str]  # sorted folder names
    files: dict[str, list[tuple[Path, int]]]  # split ("train", "test" if present) -> (file, label), class-major
    skipped: int  # files outside the class folders


def visible(path: Path) -> bool:
    return not path.name.startswith(".")


def list_folder(root: Path) -> Listing:
    """The class folders and image files under root/train and root/test, checked for consistency."""
    if not (root / "train").is_dir():
        raise StageError(f"{root}: no train/ folder; an image folder holds train/<class>/<image files> "
                         "(and test/<class>/...)")
    splits = [s for s in SPLITS if (root / s).is_dir()]
    classes_of = {s: sorted(p.name for p in (root / s).iterdir() if p.is_dir() and visible(p)) for s in splits}
    check_classes(root, classes_of)
    classes = classes_of["train"]
    files: dict[str, list[tuple[Path, int]]] = {}
    empty = []
    for split in splits:
        files[split] = []
        for label, name in enumerate(classes):
            found = sorted(p for p in (root / split / name).rglob("*") if p.is_file() and visible(p)
                           and all(visible(q) for q in p.relative_to(root).parents))
            if not found:
                empty.append(f"{split}/{name}/")
            files[split] += [(p, label) for p in found]
    if empty:
        raise StageError(f"{root}: empty class folder(s) {', '.join(empty)}: every class needs images in every split; "
                         "add images or remove the folder")
    inside = {p for split in files.values() for p, _ in split}
    skipped = sum(1 for p in root.rglob("*") if p.is_file() and p not in inside)
    return Listing(classes, files, skipped)


def check_classes(root: Path, classes_of: dict[str, list[str]]) -> None:
    train = classes_of["train"]
    if len(train) < 2:
        found = f"only {train[0]!r}" if train else "none"
        raise StageError(f"{root}/train: a classifier needs at least 2 class folders (train/<class>/); found {found}")
    if "test" in classes_of and set(classes_of["test"]) != set(train):
        only_train = sorted(set(train) - set(classes_of["test"]))
        only_test = sorted(set(classes_of["test"]) - set(train))
        raise StageError(f"{root}: train/ and test/ have different classes: only in train/: "
                         f"{', '.join(only_train) or 'none'}; only in test/: {', '.join(only_test) or 'none'}; "
                         "both need the same class folders")


def load_image(path: Path, size: int, resample: str) -> np.ndarray:
    """(3, size, size) uint8 pixels of one image file; decompression bombs raise."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path) as img:
            rgb = img.convert("RGB")
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), RESAMPLING[resample])
    return np.asarray(rgb).transpose(2, 0, 1)


def decode(files: list[Path], size: int, resample: str, desc: str) -> tuple[np.ndarray, list[str]]:
    """(N, 3, size, size) uint8 images of the files, in order, and a line per file that cannot be read."""
    images = np.empty((len(files), 3, size, size), dtype=np.uint8)
    errors = []
    start = last = time.perf_counter()
    for i, path in enumerate(progress(files, total=len(files), desc=desc, unit="img")):
        try:
            images[i] = load_image(path, size, resample)
        except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError,
                Image.DecompressionBombWarning) as err:
            errors.append(f"{path}: {describe(err)}")
        now = time.perf_counter()
        if now - last >= PROGRESS_EVERY_S:
            last = now
            log.info("%s: decoded %d of %d images (%.0f/s)", desc, i + 1, len(files), (i + 1) / (now - start))
    return images, errors


def describe(err: Exception) -> str:
    if isinstance(err, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return (f"over Pillow's decompression-bomb limit of {Image.MAX_IMAGE_PIXELS} pixels "
                f"(PIL.Image.MAX_IMAGE_PIXELS) ({err})")
    return f"not a readable image ({type(err).__name__}: {err})"


def hold_out(labels: np.ndarray, classes: list[str], fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified (train, test) index arrays: round(fraction x n), at least 1, of each class's n images, seeded;
    both keep the file order within themselves."""
    rng = np.random.default_rng(seed)
    test = []
    for c, name in enumerate(classes):
        idx = np.flatnonzero(labels == c)
        if len(idx) < 2:
            raise StageError(f"train/{name}/: {len(idx)} image; without a test/ folder each class needs at least 2, "
                             f"one for each split (prepare.test_fraction {fraction})")
        k = min(max(1, round(fraction * len(idx))), len(idx) - 1)
        test.append(idx[rng.permutation(len(idx))[:k]])
    test_idx = np.sort(np.concatenate(test))
    return np.setdiff1d(np.arange(len(labels)), test_idx), test_idx


def read_image_folder(root: Path, size: int, resample: str, test_fraction: float, test_seed: int
                      ) -> tuple[list[str], tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """classes, (train images, labels), (test images, labels) of an image folder; uint8 (N, 3, size, size)."""
    listing = list_folder(root)
    log.info("%s: %d classes, %s; %d file(s) outside the class folders skipped", root, len(listing.classes),
             ", ".join(f"{len(f)} {s} images" for s, f in listing.files.items()), listing.skipped)
    splits, errors = {}, []
    for split, files in listing.files.items():
        images, unreadable = decode([p for p, _ in files], size, resample, desc=split)
        splits[split] = images, np.array([label for _, label in files], dtype=np.int64)
        errors += unreadable
    if errors:
        total = sum(len(files) for files in listing.files.values())
        raise StageError(f"{len(errors)} of {total} image files cannot be read; fix or remove them:\n  "
                         + "\n  ".join(errors))
    if "test" not in splits:
        x, y = splits["train"]
        train_idx, test_idx = hold_out(y, listing.classes, test_fraction, test_seed)
        log.info("no test/ folder: held out %d of %d images as the test split (prepare.test_fraction %g, "
                 "prepare.test_seed %d)", len(test_idx), len(y), test_fraction, test_seed)
        splits = {"train": (x[train_idx], y[train_idx]), "test": (x[test_idx], y[test_idx])}
    return listing.classes, splits["train"], splits["test"]


def resize_all(images: np.ndarray, size: int, resample: str) -> np.ndarray:
    """uint8 (N, 3, H, W) resized to (N, 3, size, size) as image files are; unchanged at their own size."""
    if images.shape[2:] == (size, size):
        return images
    out = np.empty((len(images), 3, size, size), dtype=np.uint8)
    for i, image in enumerate(images):
        out[i] = np.asarray(Image.fromarray(image.transpose(1, 2, 0)).resize((size, size), RESAMPLING[resample]
                                                                             )).transpose(2, 0, 1)
    return out
