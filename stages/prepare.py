"""Stage 2: decode the source's images, check them, cache them as uint8 tensors.

Reads data.source's raw files (CIFAR-10 or CIFAR-100 batch pickles, or an image folder:
stages/imagefolder.py), resized to prepare.image_size. Writes `--out/{train,val,test}.pt`, each a
dict that `torch.load(path, weights_only=True)` reads: images (N, 3, S, S) uint8, labels (N,)
int64, classes (names from the source), and the mean/std that train and evaluate normalize with
on their device (stages/prepared.py), and which data they come from: for CIFAR-10,
`data_official` (the batch files' md5s are torchvision's official ones) and `data_differing`
(the batch files that differ, [] for the official data). val.pt holds zero images when prepare.val_size is 0.
"""
from __future__ import annotations

import argparse
import logging
import pickle
from pathlib import Path

import numpy as np
import torch

from .cifar import (CIFAR100_LABELS, CIFAR100_META, CIFAR100_TEST, CIFAR100_TRAIN, IMAGE_SHAPE, META_FILE,
                    TEST_FILE, TRAIN_FILES, describe_data, differing_files)
from .common import StageError, atomic_path, run_stage, torch_save
from .imagefolder import read_image_folder, resize_all
from .params import DataParams, PrepareParams, channel_stats, load_params

log = logging.getLogger("stages")

# Globals a CIFAR-10 batch pickle may name: numpy's array reconstruction (old and
# new module paths) and the bytes codec. Anything else would run foreign code.
SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),  # pickle protocol 5
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in SAFE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module.replace("numpy.core.", "numpy._core."), name)


def unpickle(path: Path) -> dict:
    """Load a CIFAR-10 Python 2 pickle (str keys via latin1; bytes keys accepted too)."""
    try:
        with open(path, "rb") as f:
            obj = _BatchUnpickler(f, encoding="latin1").load()
    except FileNotFoundError:
        raise StageError(f"{path}: file not found; the download stage's output is incomplete") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError) as err:
        raise StageError(f"{path}: not a readable CIFAR-10 pickle ({type(err).__name__}: {err})") from None
    if not isinstance(obj, dict):
        raise StageError(f"{path}: expected a pickled dict, found {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def read_classes(path: Path, key: str = "label_names") -> list[str]:
    names = unpickle(path).get(key)
    if not isinstance(names, list) or not names:
        raise StageError(f"{path}: expected a non-empty list under {key!r}, found {names!r:.80}")
    return [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names]


def read_batch(path: Path, num_classes: int, label_key: str = "labels", meta: str = META_FILE
               ) -> tuple[np.ndarray, np.ndarray]:
    """Return images (N, 3, 32, 32) uint8 and labels (N,) int64 from one batch file."""
    batch = unpickle(path)
    data, labels = batch.get("data"), batch.get(label_key)
    row = int(np.prod(IMAGE_SHAPE))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != row:
        found = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise StageError(f"{path}: 'data' must be a uint8 array of shape (N, {row}); found {found}")
    labels = np.asarray(labels if labels is not None else [], dtype=np.int64)
    if labels.shape != (len(data),):
        raise StageError(f"{path}: {len(data)} images but {labels.size} labels")
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if bad.size:
        raise StageError(f"{path}: label {bad[0]} outside 0..{num_classes - 1} "
                         f"({num_classes} classes in {meta})")
    return data.reshape(-1, *IMAGE_SHAPE), labels


def read_split(folder: Path, names: tuple[str, ...], num_classes: int, label_key: str = "labels",
               meta: str = META_FILE) -> tuple[np.ndarray, np.ndarray]:
    parts = [read_batch(folder / name, num_classes, label_key, meta) for name in names]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def read_source(raw: Path, data: DataParams, p: PrepareParams
                ) -> tuple[list[str], tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """classes, (train images, labels), (test images, labels) of data.source's raw files, at prepare.image_size."""
    if data.source == "imagefolder":
        return read_image_folder(raw, p.image_size, p.resample, p.test_fraction, p.test_seed)
    if data.source == "cifar100":
        label_key, names_key = CIFAR100_LABELS[data.labels]
        classes = read_classes(raw / CIFAR100_META, names_key)
        train = read_split(raw, (CIFAR100_TRAIN,), len(classes), label_key, CIFAR100_META)
        test = read_split(raw, (CIFAR100_TEST,), len(classes), label_key, CIFAR100_META)
    else:
        classes = read_classes(raw / META_FILE)
        train, test = read_split(raw, TRAIN_FILES, len(classes)), read_split(raw, (TEST_FILE,), len(classes))
    return classes, *((resize_all(x, p.image_size, p.resample), y) for x, y in (train, test))


def first_per_class(labels: np.ndarray, per_class: int, classes: list[str], key: str) -> np.ndarray:
    """Indices of the first `per_class` images of each class, in file order."""
    counts = np.bincount(labels, minlength=len(classes))
    if counts.min() < per_class:
        raise StageError(f"{key}: got {per_class}; class {classes[counts.argmin()]!r} has only "
                         f"{counts.min()} images")
    rank = np.zeros(len(labels), dtype=np.int64)  # position of each image among those of its class
    for c in range(len(classes)):
        rank[labels == c] = np.arange(counts[c])
    return np.flatnonzero(rank < per_class)


def split_off(n: int, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, val) index arrays; both keep the file order within themselves."""
    if val_size >= n:
        raise StageError(f"prepare.val_size: got {val_size}; must be < {n}, the number of training images")
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[val_size:]), np.sort(order[:val_size])


def channel_mean_std(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images, in the 0..1 scale that normalization uses."""
    flat = images.transpose(1, 0, 2, 3).reshape(3, -1)
    mean = flat.mean(axis=1, dtype=np.float64) / 255
    std = flat.std(axis=1, dtype=np.float64) / 255
    return mean.tolist(), std.tolist()


def split_record(images: np.ndarray, labels: np.ndarray, classes: list[str], mean: list[float], std: list[float],
                 resample: str = "bicubic", differing: list[str] | None = None) -> dict:
    """What a split file holds: uint8 pixels, normalized with mean/std where they are used (stages/prepared.py),
    the resize filter, which predict applies to new images as prepare did, and for CIFAR-10 which data it is."""
    record = {"images": torch.from_numpy(np.ascontiguousarray(images)), "labels": torch.from_numpy(labels),
              "classes": classes, "mean": mean, "std": std, "resample": resample}
    if differing is not None:
        record |= {"data_official": not differing, "data_differing": differing}
    return record


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--raw", type=Path, required=True, help="folder with the extracted batch files")
    ap.add_argument("--out", type=Path, required=True, help="folder for train.pt, val.pt, test.pt")
    args = ap.parse_args(argv)
    params = load_params(args.params)
    p = params.prepare

    classes, (train_x, train_y), (test_x, test_y) = read_source(args.raw, params.data, p)
    differing = differing_files(args.raw) if params.data.source == "cifar10" else None
    if differing is not None:
        log.info("data: %s", describe_data(differing))
    if p.train_per_class:
        keep = first_per_class(train_y, p.train_per_class, classes, "prepare.train_per_class")
        train_x, train_y = train_x[keep], train_y[keep]
    if p.test_per_class:
        keep = first_per_class(test_y, p.test_per_class, classes, "prepare.test_per_class")
        test_x, test_y = test_x[keep], test_y[keep]
    train_idx, val_idx = split_off(len(train_y), p.val_size, p.split_seed)
    if p.mean == "train":
        mean, std = channel_mean_std(train_x[train_idx])
    else:
        mean, std = channel_stats(p.mean), channel_stats(p.std)
    log.info("%d classes %s; mean %s std %s", len(classes), classes[:20] + ["..."] * (len(classes) > 20),
             [round(m, 4) for m in mean], [round(s, 4) for s in std])

    splits = {"train": (train_x[train_idx], train_y[train_idx]), "val": (train_x[val_idx], train_y[val_idx]),
              "test": (test_x, test_y)}
    needs = sum(x.size + y.size * 8 for x, y in splits.values())  # uint8 images, int64 labels
    with atomic_path(args.out, "the prepared tensors", needs) as staged:
        staged.mkdir()
        for name, (x, y) in splits.items():
            torch_save(split_record(x, y, classes, mean, std, p.resample, differing), staged / f"{name}.pt")
            log.info("%s: %d images", name, len(y))
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    run_stage("prepare", main)
