"""data.source imagefolder and cifar100, through the real download and prepare stages on tiny data made here."""
from __future__ import annotations

import logging
import re

import numpy as np
import pytest
import torch
from PIL import Image

from stages import download, prepare
from stages.common import StageError
from stages.imagefolder import hold_out
from tests.cifar_archive import cifar100_members, write_archive
from tests.conftest import write_params
from tests.image_folder import folder_members, image_bytes, write_folder, write_folder_archive

CLASSES = {"cat": (4, 2), "dog": (3, 2), "émeu": (5, 2)}  # non-ASCII names too


def run(tmp_path, **dotted) -> dict:
    """download + prepare with these params; the prepared splits."""
    params = write_params(tmp_path / "params.yaml", **{"data.source": "imagefolder", "data.md5": "", **dotted})
    raw, out = tmp_path / "raw", tmp_path / "prepared"
    download.main(["--params", str(params), "--out", str(raw), "--images", str(tmp_path / "images")])
    prepare.main(["--params", str(params), "--raw", str(raw), "--out", str(out)])
    return {s: torch.load(out / f"{s}.pt", weights_only=True) for s in ("train", "val", "test")}


def pixels_of(split: dict) -> list[tuple[bytes, str]]:
    """(pixels, class name) per image, uint8 (3, H, W) as bytes."""
    return [(x.numpy().tobytes(), split["classes"][y]) for x, y in zip(split["images"], split["labels"].tolist())]


def expected(members: dict, split: str) -> list[tuple[bytes, str]]:
    return [(pixels.transpose(2, 0, 1).tobytes(), name.split("/")[1]) for name, pixels in sorted(members.items())
            if name.startswith(split + "/")]


def test_a_folder_gives_its_pixels_and_classes_and_skips_other_files(tmp_path, caplog):
    members = folder_members(CLASSES)
    write_folder(tmp_path / "images/pets", members, extra={"README.md": b"# pets\n", "order.csv": b"a,b\n",
                                                           "train/notes.txt": b"x", "test/cat/.DS_Store": b"\0"})
    with caplog.at_level(logging.INFO, logger="stages"):
        splits = run(tmp_path, **{"data.url": str(tmp_path / "images/pets")})
    assert splits["train"]["classes"] == ["cat", "dog", "émeu"]  # sorted folder names
    assert pixels_of(splits["train"]) == expected(members, "train")  # class by class, files by name
    assert pixels_of(splits["test"]) == expected(members, "test")
    assert splits["train"]["images"].dtype == torch.uint8 and splits["train"]["images"].shape == (12, 3, 32, 32)
    assert "4 file(s) outside the class folders skipped" in caplog.text


@pytest.mark.parametrize("name, prefix", [("pets.tar.gz", "pets/"), ("pets.zip", ""), ("pets.tgz", "")])
def test_an_archive_by_path_with_its_md5(tmp_path, name, prefix):
    members = folder_members(CLASSES)
    md5 = write_folder_archive(tmp_path / "mirror" / name, members, prefix)
    splits = run(tmp_path, **{"data.url": str(tmp_path / "mirror" / name), "data.md5": md5})
    assert pixels_of(splits["test"]) == expected(members, "test")


def test_without_test_folder_a_seeded_stratified_share_is_held_out(tmp_path):
    members = folder_members({"a": (10, 0), "b": (5, 0)}, test=False)
    write_folder(tmp_path / "images/ab", members)
    splits = run(tmp_path, **{"data.url": str(tmp_path / "images/ab"), "prepare.test_fraction": 0.2})
    assert splits["test"]["labels"].tolist() == [0, 0, 1]  # round(0.2 x 10) of a, 1 of b
    together = sorted(pixels_of(splits["train"]) + pixels_of(splits["test"]))
    assert together == sorted(expected(members, "train"))  # disjoint, nothing lost


def test_hold_out_depends_on_the_seed_only():
    labels = np.repeat([0, 1], 20)
    a, b = hold_out(labels, ["x", "y"], 0.25, seed=1), hold_out(labels, ["x", "y"], 0.25, seed=1)
    c = hold_out(labels, ["x", "y"], 0.25, seed=2)
    assert np.array_equal(a[1], b[1]) and not np.array_equal(a[1], c[1])
    assert np.bincount(labels[a[1]]).tolist() == [5, 5]


def test_images_are_converted_to_rgb_and_resized_with_the_named_filter(tmp_path):
    members = folder_members({"a": (1, 1), "b": (1, 1)}, size=40)
    write_folder(tmp_path / "images/x", members)
    grey = Image.fromarray(members["train/a/0000.png"]).convert("L")
    (tmp_path / "images/x/train/a/0000.png").unlink()  # replaced by a greyscale JPEG
    grey.save(tmp_path / "images/x/train/a/0000.jpg")
    splits = run(tmp_path, **{"data.url": str(tmp_path / "images/x"), "prepare.image_size": 16,
                              "prepare.resample": "lanczos"})
    with Image.open(tmp_path / "images/x/train/a/0000.jpg") as img:
        want = np.asarray(img.convert("RGB").resize((16, 16), Image.Resampling.LANCZOS)).transpose(2, 0, 1)
    assert splits["train"]["images"].shape == (2, 3, 16, 16)
    assert np.array_equal(splits["train"]["images"][0].numpy(), want)


def errors_of(tmp_path, **dotted) -> str:
    with pytest.raises(StageError) as err:
        run(tmp_path, **dotted)
    assert not (tmp_path / "prepared").exists()  # nothing half-written
    assert not list(tmp_path.glob(".*.tmp"))  # nor left in temporary folders
    return str(err.value)


def test_train_and_test_classes_that_differ_are_named(tmp_path):
    write_folder(tmp_path / "images/p", folder_members({"cat": (2, 2), "dog": (2, 0), "owl": (0, 2)}))
    message = errors_of(tmp_path, **{"data.url": str(tmp_path / "images/p")})
    assert "train/ and test/ have different classes: only in train/: dog; only in test/: owl" in message


def test_an_empty_class_folder_is_named(tmp_path):
    write_folder(tmp_path / "images/p", folder_members({"cat": (2, 1), "dog": (2, 1)}))
    (tmp_path / "images/p/test/dog/0000.png").unlink()
    assert "empty class folder(s) test/dog/" in errors_of(tmp_path, **{"data.url": str(tmp_path / "images/p")})


def test_a_single_class_is_refused(tmp_path):
    write_folder(tmp_path / "images/p", folder_members({"cat": (3, 1)}))
    message = errors_of(tmp_path, **{"data.url": str(tmp_path / "images/p")})
    assert "needs at least 2 class folders (train/<class>/); found only 'cat'" in message


def test_every_unreadable_or_truncated_file_is_named_in_one_error(tmp_path):
    write_folder(tmp_path / "images/p", folder_members({"cat": (3, 1), "dog": (3, 1)}))
    good = (tmp_path / "images/p/train/cat/0000.png").read_bytes()
    (tmp_path / "images/p/train/cat/0001.png").write_bytes(good[: len(good) // 2])  # truncated
    (tmp_path / "images/p/test/dog/0000.png").write_bytes(b"not an image")
    (tmp_path / "images/p/train/dog/Thumbs.db").write_bytes(b"\0" * 10)
    message = errors_of(tmp_path, **{"data.url": str(tmp_path / "images/p")})
    assert message.startswith("3 of 9 image files cannot be read; fix or remove them:\n")
    assert re.search(r"train/cat/0001\.png: not a readable image \((OSError|SyntaxError)", message)
    assert "train/dog/Thumbs.db: not a readable image (UnidentifiedImageError" in message
    assert "test/dog/0000.png: not a readable image (UnidentifiedImageError" in message


def test_a_decompression_bomb_is_an_error(tmp_path, monkeypatch):
    write_folder(tmp_path / "images/p", folder_members({"cat": (1, 1), "dog": (1, 1)}))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # a 32x32 image is 1,024 pixels: over the limit
    message = errors_of(tmp_path, **{"data.url": str(tmp_path / "images/p")})
    assert "train/cat/0000.png: over Pillow's decompression-bomb limit of 500 pixels" in message


def test_an_archive_of_no_known_layout_says_what_it_found_and_expected(tmp_path):
    md5 = write_archive(tmp_path / "m/odd.tar.gz", {"photos/a.png": image_bytes(np.zeros((4, 4, 3), np.uint8))})
    message = errors_of(tmp_path, **{"data.url": str(tmp_path / "m/odd.tar.gz"), "data.md5": md5})
    assert ("does not hold data.source 'imagefolder''s layout: expected train/<class>/<image files>" in message
            and "found ['photos/', 'photos/a.png']" in message)


def test_a_cifar100_archive_given_as_cifar10_names_the_right_source(tmp_path):
    md5 = write_archive(tmp_path / "m/cifar-100-python.tar.gz", cifar100_members())
    message = errors_of(tmp_path, **{"data.source": "cifar10", "data.url": str(tmp_path / "m/cifar-100-python.tar.gz"),
                                     "data.md5": md5})
    assert "archive lacks cifar-10-batches-py/batches.meta" in message
    assert "it is the layout of cifar100: set data.source to cifar100" in message


def test_a_folder_outside_the_tracked_images_folder_is_refused(tmp_path):
    write_folder(tmp_path / "photos", folder_members({"cat": (1, 1), "dog": (1, 1)}))
    message = errors_of(tmp_path, **{"data.url": str(tmp_path / "photos")})
    assert "an image folder must be inside" in message and "move it there" in message


def test_an_archive_needs_its_md5(tmp_path):
    write_folder_archive(tmp_path / "m/p.zip", folder_members({"cat": (1, 1), "dog": (1, 1)}))
    assert "is an archive: set data.md5 to its md5 (" in errors_of(tmp_path, **{"data.url": str(tmp_path / "m/p.zip")})


@pytest.mark.parametrize("labels, names", [("fine", [f"fine_{i}" for i in range(6)]),
                                           ("coarse", ["coarse_0", "coarse_1", "coarse_2"])])
def test_cifar100_fine_or_coarse_labels(tmp_path, labels, names):
    members = cifar100_members(train_per_class=4, test_per_class=2)
    md5 = write_archive(tmp_path / "m/cifar-100-python.tar.gz", members)
    splits = run(tmp_path, **{"data.source": "cifar100", "data.url": str(tmp_path / "m/cifar-100-python.tar.gz"),
                              "data.md5": md5, "data.labels": labels})
    assert splits["train"]["classes"] == names
    batch = prepare.unpickle(tmp_path / "raw/train")  # the extracted official layout
    assert splits["train"]["labels"].tolist() == batch[f"{labels}_labels"]
    assert np.array_equal(splits["train"]["images"].numpy().reshape(-1, 3072), batch["data"])


ODD_NAMES = {"St. Bernard": (12, 4), "crème brûlée": (12, 4), "猫": (12, 4)}


def stage_args(root) -> dict[str, list[str]]:
    out = {k: str(root / v) for k, v in {"params": "params.yaml", "prepared": "prepared", "model": "model.pth",
                                         "meta": "model.json", "metrics": "metrics.json"}.items()}
    return {"train": ["--params", out["params"], "--prepared", out["prepared"], "--model", out["model"],
                      "--model-meta", out["meta"], "--metrics", str(root / "train.json"),
                      "--history", str(root / "log.csv")],
            "evaluate": ["--params", out["params"], "--prepared", out["prepared"], "--model", out["model"],
                         "--model-meta", out["meta"], "--metrics", out["metrics"],
                         "--confusion", str(root / "confusion.csv"), "--per-class", str(root / "per_class.csv"),
                         "--grid", str(root / "grid.png")]}


def test_odd_class_names_at_24_pixels_train_evaluate_and_predict_by_name(tmp_path, capsys):
    import json

    import pandas as pd

    from stages import evaluate, predict, train

    members = folder_members(ODD_NAMES, size=40)
    write_folder(tmp_path / "images/odd", members)
    run(tmp_path, **{"data.url": str(tmp_path / "images/odd"), "prepare.image_size": 24,
                     "train.model.name": "cnn", "train.optim.epochs": 1, "train.optim.lr": 0.01,
                     "train.numerics.device": "cpu", "evaluate.device": "cpu"})
    train.main(stage_args(tmp_path)["train"])
    evaluate.main(stage_args(tmp_path)["evaluate"])
    meta = json.loads((tmp_path / "model.json").read_text())
    assert (meta["classes"], meta["image_size"], meta["num_classes"], meta["resample"]) == (
        sorted(ODD_NAMES), 24, 3, "bicubic")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert list(metrics["per_class_f1"]) == ["St_Bernard", "crème_brûlée", "猫"]
    assert set(pd.read_csv(tmp_path / "confusion.csv")["actual"]) == set(ODD_NAMES)  # the names themselves
    assert pd.read_csv(tmp_path / "per_class.csv")["class"].tolist() == sorted(ODD_NAMES)
    with Image.open(tmp_path / "grid.png") as grid:
        assert grid.size == (8 * (96 + 8), 2 * (96 + 30))  # 12 test images, 8 a row
    Image.fromarray(members["test/猫/0000.png"]).save(tmp_path / "cat.png")
    capsys.readouterr()
    predict.main([str(tmp_path / "cat.png"), "--model", str(tmp_path / "model.pth"), "--model-meta",
                  str(tmp_path / "model.json"), "--top", "3", "--device", "cpu"])
    line = capsys.readouterr().out
    assert all(name in line for name in ODD_NAMES)


def test_a_model_that_cannot_take_the_size_stops_train_before_training(tmp_path):
    from stages import train

    write_folder(tmp_path / "images/p", folder_members({"a": (2, 1), "b": (2, 1)}, size=36))
    run(tmp_path, **{"data.url": str(tmp_path / "images/p"), "prepare.image_size": 36,
                     "train.recipe": "resnet-cpu", "train.numerics.device": "cpu"})
    with pytest.raises(StageError, match=r"^train\.model\.name 'resnet' cannot take 36x36 images \(prepare\.image_size "
                                         r"36\): it needs a multiple of 8 pixels$"):
        train.main(stage_args(tmp_path)["train"])
    assert not (tmp_path / "model.pth").exists() and not (tmp_path / "log.csv").exists()


def test_decoding_logs_its_progress_for_logs_without_a_progress_bar(tmp_path, monkeypatch, caplog):
    import stages.imagefolder

    write_folder(tmp_path / "images/p", folder_members({"a": (2, 1), "b": (1, 1)}))
    monkeypatch.setattr(stages.imagefolder, "PROGRESS_EVERY_S", 0.0)  # a line after every image
    with caplog.at_level(logging.INFO, logger="stages"):
        run(tmp_path, **{"data.url": str(tmp_path / "images/p")})
    assert re.search(r"train: decoded 3 of 3 images \(\d+/s\)", caplog.text)
    assert "test: decoded 2 of 2 images" in caplog.text
