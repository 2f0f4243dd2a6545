"""Shared fixtures: a tiny official-format archive and params files pointing at it."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from tests.cifar_archive import official_members, write_archive

PROJECT = Path(__file__).resolve().parents[1]
DEFAULT_PARAMS = yaml.safe_load((PROJECT / "params.yaml").read_text())


def params_dict(**dotted) -> dict:
    """The project's params.yaml with dotted overrides: params_dict(**{"train.lr": 0.1})."""
    params = copy.deepcopy(DEFAULT_PARAMS)
    for key, value in dotted.items():
        *parents, leaf = key.split(".")
        node = params
        for part in parents:
            node = node[part]
        node[leaf] = value
    return params


def write_params(path: Path, **dotted) -> Path:
    path.write_text(yaml.safe_dump(params_dict(**dotted), sort_keys=False))
    return path


@pytest.fixture(scope="session")
def archive(tmp_path_factory) -> tuple[Path, str]:
    """(path, md5) of a tiny archive in the official format: 200 train, 50 test images."""
    path = tmp_path_factory.mktemp("mirror") / "cifar-10-python.tar.gz"
    return path, write_archive(path, official_members(train_per_class=20, test_per_class=5))


@pytest.fixture
def archive_params(tmp_path, archive):
    """Write a params.yaml whose data.url/md5 point at the tiny archive; extra dotted overrides allowed."""
    path, md5 = archive

    def make(**dotted) -> Path:
        return write_params(tmp_path / "params.yaml", **{"data.url": str(path), "data.md5": md5, **dotted})

    return make


@pytest.fixture(scope="session")
def prepared(tmp_path_factory, archive) -> Path:
    """Folder with train.pt/val.pt/test.pt prepared from the tiny archive (val_size 40)."""
    from stages import download, prepare

    root = tmp_path_factory.mktemp("prepared")
    params = write_params(root / "params.yaml", **{"data.url": str(archive[0]), "data.md5": archive[1],
                                                   "prepare.val_size": 40})
    download.main(["--params", str(params), "--out", str(root / "raw")])
    prepare.main(["--params", str(params), "--raw", str(root / "raw"), "--out", str(root / "prepared")])
    return root / "prepared"
