"""Tiny archives in the exact layout of the official cifar-10-python.tar.gz, for tests.

The official batch files are Python 2 pickles: dicts with str keys, a uint8 numpy
array under 'data' (N x 3072, R plane then G then B) rebuilt through
numpy.core.multiarray._reconstruct, lists under 'labels' and 'filenames'. Python 3
writes bytes as _codecs calls and numpy 2 names numpy._core, so the pickler below
writes bytes as Python 2 str opcodes and the old module path, as the originals do.
Images follow a learnable pattern: a fixed colour and gradient per class, plus noise.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
ROOT = "cifar-10-batches-py/"


class _Py2Pickler(pickle._Pickler):
    dispatch = dict(pickle._Pickler.dispatch)

    def _save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + len(obj).to_bytes(4, "little") + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str


def py2_pickle(obj: object) -> bytes:
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def make_images(per_class: int, seed: int, noise: float = 40.0) -> tuple[np.ndarray, list[int]]:
    """(N, 3072) uint8 images, class-major shuffled, and their labels; templates fixed across seeds."""
    # A colour and a vertical gradient per class: survives crops and horizontal flips.
    fixed = np.random.default_rng(1234)
    colours = fixed.integers(40, 216, size=(len(CLASSES), 3, 1, 1))
    slopes = fixed.uniform(-2.5, 2.5, size=(len(CLASSES), 1, 1, 1)) * (np.arange(32) - 15.5).reshape(1, 1, 32, 1)
    templates = np.broadcast_to(colours + slopes, (len(CLASSES), 3, 32, 32)).reshape(len(CLASSES), 3072)
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(CLASSES)), per_class)
    rng.shuffle(labels)
    images = templates[labels] + rng.normal(0, noise, size=(len(labels), 3072))
    return np.clip(images, 0, 255).astype(np.uint8), labels.tolist()


def batch_bytes(data: np.ndarray, labels: list[int], label: str) -> bytes:
    names = [f"img_{i:05d}.png".encode() for i in range(len(labels))]
    return py2_pickle({b"batch_label": label.encode(), b"labels": labels, b"data": data, b"filenames": names})


def official_members(train_per_class: int = 10, test_per_class: int = 5) -> dict[str, bytes]:
    """name -> bytes of every file in the archive, as the official one holds them."""
    x_train, y_train = make_images(train_per_class, seed=1)
    x_test, y_test = make_images(test_per_class, seed=2)
    meta = {b"num_cases_per_batch": -(-len(y_train) // 5), b"num_vis": 3072,
            b"label_names": [c.encode() for c in CLASSES]}
    members = {ROOT + "batches.meta": py2_pickle(meta)}
    for i, idx in enumerate(np.array_split(np.arange(len(y_train)), 5), start=1):
        members[ROOT + f"data_batch_{i}"] = batch_bytes(x_train[idx], [y_train[j] for j in idx],
                                                        f"training batch {i} of 5")
    members[ROOT + "test_batch"] = batch_bytes(x_test, y_test, "testing batch 1 of 1")
    members[ROOT + "readme.html"] = b"<p>synthetic test archive</p>\n"
    return members


def write_archive(path: Path, members: dict[str, bytes]) -> str:
    """Write members as a gzip-compressed tar at path; return its md5."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(payload), 0, 0o644
            tar.addfile(info, io.BytesIO(payload))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f, gzip.GzipFile(fileobj=f, mode="wb", mtime=0) as gz:
        gz.write(raw.getvalue())
    return hashlib.md5(path.read_bytes()).hexdigest()


def fake_official_md5s(members: dict[str, bytes], changed: tuple[str, ...] = ()) -> dict[str, str]:
    """An "official" md5 list for tests: name (without the archive folder) -> md5 of each member,
    but another md5 for the names in `changed`, so those count as differing from the official files."""
    return {name.removeprefix(ROOT): "0" * 32 if name.removeprefix(ROOT) in changed else hashlib.md5(data).hexdigest()
            for name, data in members.items()}


CIFAR100_ROOT = "cifar-100-python/"


def cifar100_members(train_per_class: int = 4, test_per_class: int = 2, fine: int = 6, coarse: int = 3
                     ) -> dict[str, bytes]:
    """name -> bytes of a tiny archive in the official cifar-100-python.tar.gz layout: `fine` fine classes,
    fine class i in coarse class i % coarse; one pickle per split with fine_labels and coarse_labels."""
    fine_names = [f"fine_{i}" for i in range(fine)]
    coarse_names = [f"coarse_{i}" for i in range(coarse)]
    rng = np.random.default_rng(7)
    members = {CIFAR100_ROOT + "meta": py2_pickle({b"fine_label_names": [n.encode() for n in fine_names],
                                                   b"coarse_label_names": [n.encode() for n in coarse_names]})}
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        labels = rng.permutation(np.repeat(np.arange(fine), per_class)).tolist()
        data = rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
        members[CIFAR100_ROOT + split] = py2_pickle({
            b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))], b"batch_label": split.encode(),
            b"fine_labels": labels, b"coarse_labels": [label % coarse for label in labels], b"data": data})
    members[CIFAR100_ROOT + "file.txt~"] = b""
    return members
