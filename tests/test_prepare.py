"""Stage 2 (prepare): decoding and checking the batch files, normalization, the split."""
from __future__ import annotations

import os
import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from stages import cifar, prepare
from stages.cifar import TEST_FILE, TRAIN_FILES
from stages.common import StageError
from stages.prepared import load_split
from tests.cifar_archive import (CLASSES, ROOT, batch_bytes, fake_official_md5s, make_images, official_members,
                                 py2_pickle)
from tests.conftest import write_params

N_TRAIN, N_TEST = 100, 50  # official_members(10, 5)


@pytest.fixture(scope="module")
def official() -> dict[str, bytes]:
    return official_members(train_per_class=10, test_per_class=5)


@pytest.fixture
def members(official) -> dict[str, bytes]:
    """A fresh copy each test may modify: name (without the archive folder) -> bytes."""
    return {name.removeprefix(ROOT): data for name, data in official.items()}


def raw_batch(members: dict[str, bytes], name: str) -> tuple[np.ndarray, list[int]]:
    """(data, labels) of a batch, read with the plain (trusting) pickle module."""
    batch = pickle.loads(members[name], encoding="latin1")
    return batch["data"], batch["labels"]


def raw_split(members, names) -> tuple[np.ndarray, np.ndarray]:
    parts = [raw_batch(members, name) for name in names]
    return np.concatenate([d for d, _ in parts]), np.concatenate([np.array(y) for _, y in parts])


def run(tmp_path: Path, members: dict[str, bytes], **dotted) -> Path:
    """Write the raw folder and params, run prepare, return --out."""
    raw = tmp_path / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name, data in members.items():
        (raw / name).write_bytes(data)
    out = tmp_path / "data" / "prepared"
    params = write_params(tmp_path / "params.yaml", **dotted)
    prepare.main(["--params", str(params), "--raw", str(raw), "--out", str(out)])
    return out


def load(out: Path, split: str) -> dict:
    """A split as train and evaluate see it: normalized where it is loaded."""
    return load_split(out / f"{split}.pt", torch.device("cpu"))


def float_path_of_before(images: np.ndarray, mean: list[float], std: list[float]) -> torch.Tensor:
    """What prepare cached before it cached uint8: its normalize(), kept here as the reference."""
    x = torch.from_numpy(images).float().div_(255)
    x.sub_(torch.tensor(mean).view(1, 3, 1, 1)).div_(torch.tensor(std).view(1, 3, 1, 1))
    return x


def expected(pixels: np.ndarray, mean=0.5, std=0.5) -> torch.Tensor:
    """((uint8 / 255) - mean) / std of (N, 3072) rows as (N, 3, 32, 32) float32."""
    x = torch.from_numpy(pixels.reshape(-1, 3, 32, 32)).float() / 255
    return (x - torch.tensor(mean).reshape(-1, 1, 1)) / torch.tensor(std).reshape(-1, 1, 1)


def assert_failed(tmp_path: Path) -> None:
    out = tmp_path / "data" / "prepared"
    assert not out.exists()
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


# --- outputs ---------------------------------------------------------------

def test_outputs_have_the_documented_format(tmp_path, members):
    out = run(tmp_path, members)
    assert sorted(p.name for p in out.iterdir()) == ["test.pt", "train.pt", "val.pt"]
    assert [p.name for p in out.parent.iterdir()] == ["prepared"]  # no temporary folder left
    for split, n in [("train", N_TRAIN), ("val", 0), ("test", N_TEST)]:
        record = torch.load(out / f"{split}.pt", weights_only=True)
        assert record["images"].dtype == torch.uint8  # a quarter of float32's bytes; normalized where loaded
        assert record["images"].shape == (n, 3, 32, 32)
        assert load(out, split)["images"].dtype == torch.float32
        assert record["labels"].dtype == torch.int64
        assert record["labels"].shape == (n,)
        assert record["classes"] == CLASSES
        assert record["mean"] == [0.5] * 3 and record["std"] == [0.5] * 3


@pytest.mark.parametrize("mean, std", [(0.5, 0.5), ([0.4914, 0.4822, 0.4465], [0.247, 0.2435, 0.2616]),
                                       ("train", "train")])
def test_normalized_on_load_bit_for_bit_as_the_float_cache_was(tmp_path, members, mean, std):
    out = run(tmp_path, members, **{"prepare.mean": mean, "prepare.std": std, "prepare.val_size": 20})
    x_train, _ = raw_split(members, TRAIN_FILES)
    train_idx, val_idx = prepare.split_off(N_TRAIN, 20, 0)
    stats = load(out, "train")
    for split, pixels in [("train", x_train[train_idx]), ("val", x_train[val_idx]),
                          ("test", raw_split(members, (TEST_FILE,))[0])]:
        before = float_path_of_before(pixels.reshape(-1, 3, 32, 32), stats["mean"], stats["std"])
        assert torch.equal(load(out, split)["images"], before), split


def test_a_float_cache_of_before_is_refused_with_what_to_do(tmp_path):
    torch.save({"images": torch.zeros(2, 3, 32, 32), "labels": torch.zeros(2, dtype=torch.int64)},
               tmp_path / "train.pt")
    with pytest.raises(StageError, match=r"train\.pt: holds torch\.float32 images, written before prepare cached "
                                         r"uint8 pixels; run the prepare stage again \(dvc repro\)"):
        load_split(tmp_path / "train.pt", torch.device("cpu"))


def test_values_and_labels_follow_the_batch_files_in_order(tmp_path, members):
    out = run(tmp_path, members)
    train, test = load(out, "train"), load(out, "test")
    x_train, y_train = raw_split(members, TRAIN_FILES)
    x_test, y_test = raw_split(members, (TEST_FILE,))
    torch.testing.assert_close(train["images"], expected(x_train), rtol=0, atol=1e-6)
    torch.testing.assert_close(test["images"], expected(x_test), rtol=0, atol=1e-6)
    assert train["labels"].tolist() == y_train.tolist()
    assert test["labels"].tolist() == y_test.tolist()


def test_one_image_against_raw_bytes_r_then_g_then_b(tmp_path, members):
    """Row layout: 1024 R values, then G, then B, each plane row-major (y, x)."""
    data, labels = raw_batch(members, "data_batch_2")
    data = data.copy()
    data[3] = np.concatenate([np.full(1024, 10), np.full(1024, 20), np.arange(1024) % 256]).astype(np.uint8)
    members["data_batch_2"] = batch_bytes(data, labels, "training batch 2 of 5")
    out = run(tmp_path, members)
    first_of_batch_2 = len(raw_batch(members, "data_batch_1")[1])
    image = load(out, "train")["images"][first_of_batch_2 + 3]
    assert torch.all(image[0] == (10 / 255 - 0.5) / 0.5)
    assert torch.all(image[1] == (20 / 255 - 0.5) / 0.5)
    blue = (torch.arange(1024, dtype=torch.float32).remainder(256).view(32, 32) / 255 - 0.5) / 0.5
    torch.testing.assert_close(image[2], blue, rtol=0, atol=1e-6)
    assert image[2, 1, 5].item() == pytest.approx(((32 + 5) / 255 - 0.5) / 0.5)  # y=1, x=5


def test_three_number_mean_and_std(tmp_path, members):
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
    out = run(tmp_path, members, **{"prepare.mean": mean, "prepare.std": std})
    test = load(out, "test")
    assert test["mean"] == mean and test["std"] == std
    x_test, _ = raw_split(members, (TEST_FILE,))
    torch.testing.assert_close(test["images"], expected(x_test, mean, std), rtol=0, atol=1e-5)


def test_train_statistics_are_recorded_and_applied(tmp_path, members):
    out = run(tmp_path, members, **{"prepare.mean": "train", "prepare.std": "train"})
    train, test = load(out, "train"), load(out, "test")
    pixels = raw_split(members, TRAIN_FILES)[0].reshape(-1, 3, 1024).transpose(1, 0, 2).reshape(3, -1) / 255
    np.testing.assert_allclose(train["mean"], pixels.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(train["std"], pixels.std(axis=1), rtol=1e-12)
    assert test["mean"] == train["mean"] and test["std"] == train["std"]  # test uses the train stats
    per_channel = train["images"].transpose(0, 1).reshape(3, -1).double()
    torch.testing.assert_close(per_channel.mean(dim=1), torch.zeros(3, dtype=torch.float64), rtol=0, atol=1e-5)
    torch.testing.assert_close(per_channel.std(dim=1, unbiased=False), torch.ones(3, dtype=torch.float64),
                               rtol=0, atol=1e-5)


def test_train_statistics_leave_the_validation_images_out(tmp_path, members):
    out = run(tmp_path, members, **{"prepare.mean": "train", "prepare.std": "train",
                                    "prepare.val_size": 30, "prepare.split_seed": 3})
    def stats(images):
        pixels = images.reshape(-1, 3, 1024).transpose(1, 0, 2).reshape(3, -1) / 255
        return pixels.mean(axis=1), pixels.std(axis=1)

    x_train = raw_split(members, TRAIN_FILES)[0]
    train_idx, _ = prepare.split_off(N_TRAIN, 30, 3)
    mean, std = stats(x_train[train_idx])
    np.testing.assert_allclose(load(out, "train")["mean"], mean, rtol=1e-12)
    np.testing.assert_allclose(load(out, "val")["std"], std, rtol=1e-12)  # val is normalized alike
    assert not np.allclose(stats(x_train)[0], mean, rtol=1e-6)  # the 30 val images would change it


# --- validation split ------------------------------------------------------

def rows(record: dict) -> list[bytes]:
    """Each image back as its uint8 bytes plus its label (mean = std = 0.5)."""
    pixels = np.rint((record["images"].numpy() * 0.5 + 0.5) * 255).astype(np.uint8).reshape(-1, 3072)
    return [p.tobytes() + bytes([y]) for p, y in zip(pixels, record["labels"].tolist())]


def test_val_split_is_disjoint_and_covers_the_training_set(tmp_path, members):
    out = run(tmp_path, members, **{"prepare.val_size": 25, "prepare.split_seed": 7})
    train, val = rows(load(out, "train")), rows(load(out, "val"))
    assert len(train) == N_TRAIN - 25 and len(val) == 25
    assert not set(train) & set(val)
    x, y = raw_split(members, TRAIN_FILES)
    whole = [p.tobytes() + bytes([label]) for p, label in zip(x, y.tolist())]
    assert len(set(whole)) == N_TRAIN
    assert sorted(train + val) == sorted(whole)
    assert train == [r for r in whole if r in set(train)]  # file order kept within the split


def test_split_depends_only_on_the_seed():
    train, val = prepare.split_off(N_TRAIN, 20, seed=0)
    again_train, again_val = prepare.split_off(N_TRAIN, 20, seed=0)
    other_train, other_val = prepare.split_off(N_TRAIN, 20, seed=1)
    assert train.tolist() == again_train.tolist() and val.tolist() == again_val.tolist()
    assert val.tolist() != other_val.tolist()
    assert sorted(train.tolist() + val.tolist()) == list(range(N_TRAIN))
    assert train.tolist() == sorted(train.tolist()) and val.tolist() == sorted(val.tolist())


def test_other_split_seed_gives_another_val_set(tmp_path, members):
    a = rows(load(run(tmp_path / "a", members, **{"prepare.val_size": 10, "prepare.split_seed": 0}), "val"))
    b = rows(load(run(tmp_path / "b", members, **{"prepare.val_size": 10, "prepare.split_seed": 1}), "val"))
    assert set(a) != set(b)


@pytest.mark.parametrize("val_size", [N_TRAIN, N_TRAIN + 1])
def test_val_size_not_below_training_images(tmp_path, members, val_size):
    with pytest.raises(StageError, match=rf"prepare\.val_size: got {val_size}; must be < {N_TRAIN}"):
        run(tmp_path, members, **{"prepare.val_size": val_size})
    assert_failed(tmp_path)


# --- bad batch files -------------------------------------------------------

class _RunsCommand:
    """Unpickling this calls os.system(command): the safe unpickler must refuse it."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_corrupt_pickle_bytes(tmp_path, members):
    members["data_batch_3"] = b"\x00garbage, not a pickle"
    with pytest.raises(StageError, match=r"data_batch_3: not a readable CIFAR-10 pickle \(UnpicklingError"):
        run(tmp_path, members)
    assert_failed(tmp_path)


def test_truncated_pickle(tmp_path, members):
    members["test_batch"] = members["test_batch"][:5000]
    with pytest.raises(StageError, match=r"test_batch: not a readable CIFAR-10 pickle "
                                         r"\((UnpicklingError|EOFError)"):
        run(tmp_path, members)
    assert_failed(tmp_path)


@pytest.mark.parametrize("protocol", [2, 4])
def test_pickle_running_a_command_is_refused_and_nothing_runs(tmp_path, members, protocol):
    marker = tmp_path / "pwned"
    members["data_batch_1"] = pickle.dumps({"data": _RunsCommand(f"touch {marker}"), "labels": []},
                                           protocol=protocol)
    with pytest.raises(StageError, match=rf"data_batch_1: not a readable CIFAR-10 pickle "
                                         rf"\(UnpicklingError: refusing to load {os.system.__module__}\.system\)"):
        run(tmp_path, members)
    assert not marker.exists()
    assert_failed(tmp_path)


def test_pickle_naming_a_class_outside_numpy_is_refused(tmp_path, members):
    members["batches.meta"] = pickle.dumps(OrderedDict(label_names=CLASSES), protocol=2)
    with pytest.raises(StageError, match=r"batches\.meta: .*refusing to load collections\.OrderedDict"):
        run(tmp_path, members)
    assert_failed(tmp_path)


def test_pickle_of_a_non_dict(tmp_path, members):
    members["data_batch_4"] = py2_pickle([1, 2, 3])
    with pytest.raises(StageError, match=r"data_batch_4: expected a pickled dict, found list"):
        run(tmp_path, members)
    assert_failed(tmp_path)


def test_data_of_wrong_shape(tmp_path, members):
    members["data_batch_2"] = batch_bytes(np.zeros((4, 3000), np.uint8), [0, 1, 2, 3], "bad")
    with pytest.raises(StageError, match=r"data_batch_2: 'data' must be a uint8 array of shape \(N, 3072\); "
                                         r"found uint8 \(4, 3000\)"):
        run(tmp_path, members)
    assert_failed(tmp_path)


def test_data_of_wrong_dtype(tmp_path, members):
    members["data_batch_5"] = batch_bytes(np.zeros((4, 3072), np.float32), [0, 1, 2, 3], "bad")
    with pytest.raises(StageError, match=r"data_batch_5: 'data' must be a uint8 array of shape \(N, 3072\); "
                                         r"found float32 \(4, 3072\)"):
        run(tmp_path, members)
    assert_failed(tmp_path)


def test_missing_data_key(tmp_path, members):
    members["data_batch_5"] = py2_pickle({b"labels": [0]})
    with pytest.raises(StageError, match=r"data_batch_5: 'data' must be .*; found NoneType"):
        run(tmp_path, members)
    assert_failed(tmp_path)


def test_label_count_differs_from_image_count(tmp_path, members):
    data, labels = make_images(1, seed=5)
    members["test_batch"] = batch_bytes(data, labels[:-1], "bad")
    with pytest.raises(StageError, match=rf"test_batch: {len(labels)} images but {len(labels) - 1} labels"):
        run(tmp_path, members)
    assert_failed(tmp_path)


@pytest.mark.parametrize("bad_label", [10, -1])
def test_label_outside_the_classes(tmp_path, members, bad_label):
    data, labels = make_images(1, seed=5)
    labels[4] = bad_label
    members["data_batch_1"] = batch_bytes(data, labels, "bad")
    with pytest.raises(StageError, match=rf"data_batch_1: label {bad_label} outside 0\.\.9 "
                                         r"\(10 classes in batches\.meta\)"):
        run(tmp_path, members)
    assert_failed(tmp_path)


def test_meta_without_label_names(tmp_path, members):
    members["batches.meta"] = py2_pickle({b"num_cases_per_batch": 20, b"num_vis": 3072})
    with pytest.raises(StageError, match=r"batches\.meta: expected a non-empty list under 'label_names', "
                                         r"found None"):
        run(tmp_path, members)
    assert_failed(tmp_path)


def test_missing_batch_file(tmp_path, members):
    del members["data_batch_3"]
    with pytest.raises(StageError, match="data_batch_3"):
        run(tmp_path, members)
    assert_failed(tmp_path)


# --- unpickle --------------------------------------------------------------

def test_unpickle_python2_batch_gives_str_keys(tmp_path, members):
    path = tmp_path / "data_batch_1"
    path.write_bytes(members["data_batch_1"])
    batch = prepare.unpickle(path)
    assert sorted(batch) == ["batch_label", "data", "filenames", "labels"]
    assert all(isinstance(k, str) for k in batch)
    data, labels = raw_batch(members, "data_batch_1")
    assert batch["data"].dtype == np.uint8 and np.array_equal(batch["data"], data)
    assert batch["labels"] == labels


@pytest.mark.parametrize("protocol", [2, 3, 4])
def test_unpickle_reads_a_python3_pickle(tmp_path, protocol):
    data, labels = make_images(1, seed=9)
    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps({"data": data, "labels": labels, "batch_label": b"py3"}, protocol=protocol))
    batch = prepare.unpickle(path)
    assert np.array_equal(batch["data"], data) and batch["data"].dtype == np.uint8
    assert batch["labels"] == labels
    assert batch["batch_label"] == b"py3"  # Python 3 bytes values stay bytes


def test_read_classes_decodes_python2_names(tmp_path, members):
    path = tmp_path / "batches.meta"
    path.write_bytes(members["batches.meta"])
    assert prepare.read_classes(path) == CLASSES


# --- class-balanced subsets ------------------------------------------------

def test_first_per_class_keeps_file_order_and_balance():
    from stages.prepare import first_per_class

    labels = np.array([2, 0, 1, 0, 2, 1, 0, 1, 2, 2])
    keep = first_per_class(labels, 2, ["a", "b", "c"], "prepare.train_per_class")
    assert keep.tolist() == [0, 1, 2, 3, 4, 5]
    assert np.bincount(labels[keep]).tolist() == [2, 2, 2]


def test_subset_too_large_names_the_key_and_class():
    from stages.prepare import first_per_class

    with pytest.raises(StageError, match=r"prepare\.test_per_class: got 3; class 'b' has only 1 images"):
        first_per_class(np.array([0, 0, 0, 1, 2, 2, 2]), 3, ["a", "b", "c"], "prepare.test_per_class")


def test_subset_params_give_balanced_splits_before_the_val_split(tmp_path, members):
    out = run(tmp_path, members, **{"prepare.train_per_class": 4, "prepare.test_per_class": 2,
                                    "prepare.val_size": 10})
    train, val, test = load(out, "train"), load(out, "val"), load(out, "test")
    assert (len(train["labels"]), len(val["labels"]), len(test["labels"])) == (30, 10, 20)
    assert torch.bincount(torch.cat([train["labels"], val["labels"]])).tolist() == [4] * 10
    assert torch.bincount(test["labels"]).tolist() == [2] * 10
    first_test = raw_split(members, (TEST_FILE,))
    keep = [i for i, y in enumerate(first_test[1]) if list(first_test[1][:i]).count(y) < 2]
    assert torch.equal(test["images"], expected(first_test[0][keep]))


# --- which data ---------------------------------------------------------------

def test_every_split_records_that_the_tiny_archive_is_not_the_official_data(tmp_path, members):
    out = run(tmp_path, members)
    for split in ("train", "val", "test"):
        record = load(out, split)
        assert record["data_official"] is False
        assert record["data_differing"] == ["batches.meta", *TRAIN_FILES, TEST_FILE]


@pytest.mark.parametrize("changed", [(), ("data_batch_3", "test_batch")])
def test_splits_record_the_official_data_or_the_files_that_differ(tmp_path, members, monkeypatch, changed):
    # the tiny archive's own md5s play the official list, but for `changed`
    monkeypatch.setattr(cifar, "official_md5s", lambda: fake_official_md5s(members, changed))
    test = load(run(tmp_path, members), "test")
    assert test["data_official"] is (not changed)
    assert test["data_differing"] == list(changed)
