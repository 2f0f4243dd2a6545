"""Shared fixtures: a tiny official-format archive and params files pointing at it."""
from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import torch
import yaml

from stages.params import set_dotted
from tests.cifar_archive import official_members, write_archive

PROJECT = Path(__file__).resolve().parents[1]

if os.environ.get("PYTEST_XDIST_WORKER"):  # pytest -n: one torch thread per worker, in it and in what it starts
    # Workers with a thread per core each, on a 2-core machine, spin-wait on each other: a learning
    # test took 44 s instead of 2.7. One thread each keeps every core busy without that.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
DEFAULT_PARAMS = yaml.safe_load((PROJECT / "params.yaml").read_text())


def params_dict(**dotted) -> dict:
    """The project's params.yaml with dotted overrides: params_dict(**{"train.optim.lr": 0.1})."""
    return set_dotted(copy.deepcopy(DEFAULT_PARAMS), dotted)


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


def prepare_archive(root: Path, archive_path: Path, md5: str, val_size: int) -> Path:
    """Run the real download and prepare stages on an archive; return the prepared folder."""
    from stages import download, prepare

    params = write_params(root / "params.yaml", **{"data.url": str(archive_path), "data.md5": md5,
                                                   "prepare.val_size": val_size})
    download.main(["--params", str(params), "--out", str(root / "raw")])
    prepare.main(["--params", str(params), "--raw", str(root / "raw"), "--out", str(root / "prepared")])
    return root / "prepared"


@pytest.fixture(scope="session")
def prepared(tmp_path_factory, archive) -> Path:
    """Folder with train.pt/val.pt/test.pt prepared from the tiny archive (val_size 40)."""
    return prepare_archive(tmp_path_factory.mktemp("prepared"), *archive, val_size=40)


@pytest.fixture(scope="session")
def prepared_larger(tmp_path_factory) -> Path:
    """Like `prepared`, from 1,000 training images (900 train, 100 validation): enough steps in one epoch."""
    root = tmp_path_factory.mktemp("prepared_larger")
    path = root / "cifar-10-python.tar.gz"
    md5 = write_archive(path, official_members(train_per_class=100, test_per_class=5))
    return prepare_archive(root, path, md5, val_size=100)
