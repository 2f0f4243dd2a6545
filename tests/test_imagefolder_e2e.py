"""The real `dvc repro` on a project fed an image folder under images/, tracked with `dvc add`, as
docs/own-images.md tells a user to do: class names with a dot, a space and non-ASCII letters go
through to `dvc metrics diff`, and changing one image re-runs download and prepare."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.e2e_support import make_project, ran, sh
from tests.image_folder import folder_members, write_folder

pytestmark = pytest.mark.e2e
CLASSES = {"St. Bernard": (3, 2), "crème brûlée": (3, 2)}  # the smallest data with two classes


def test_an_image_folder_runs_through_dvc_and_a_changed_image_reruns_prepare(tmp_path):
    root = make_project(tmp_path / "project", (Path("unused.tar.gz"), "0" * 32), **{
        "data.source": "imagefolder", "data.url": "images/food", "data.md5": "", "prepare.image_size": 16,
        "train.optim.epochs": 1})
    write_folder(root / "images/food", folder_members(CLASSES, size=20))
    sh(root, "dvc", "add", "images/food")
    assert ran(sh(root, "dvc", "repro")) == {"download", "prepare", "train", "evaluate"}
    sh(root, "git", "add", "-A")
    sh(root, "git", "commit", "-qm", "first run")

    metrics = json.loads(sh(root, "dvc", "metrics", "diff", "--all", "--json"))["metrics/metrics.json"]
    assert {"per_class_accuracy.St_Bernard", "per_class_accuracy.crème_brûlée"} <= set(metrics)
    assert sum(key.startswith("per_class_f1.") for key in metrics) == 2  # one key per class, no dotted split

    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(root / "images/food/train/St. Bernard/0001.png")
    assert "modified:" in sh(root, "dvc", "status", "download")
    out = sh(root, "dvc", "repro", "prepare")
    assert ran(out) == {"download", "prepare"}
    assert "images/food.dvc" in sh(root, "git", "status", "--short")  # dvc repro recorded the new version
    assert "Data and pipelines are up to date" in sh(root, "dvc", "repro", "prepare")
