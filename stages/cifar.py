"""The layout of the official `cifar-10-python.tar.gz`, shared by download and prepare."""
from __future__ import annotations

from pathlib import Path

from .common import file_md5

ARCHIVE_NAME = "cifar-10-python.tar.gz"
ARCHIVE_DIR = "cifar-10-batches-py"  # the one top-level folder inside the archive
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
META_FILE = "batches.meta"
REQUIRED_FILES = (META_FILE, *TRAIN_FILES, TEST_FILE)
OPTIONAL_FILES = ("readme.html",)  # in the official archive; nothing else may be
IMAGE_SHAPE = (3, 32, 32)  # each row of a batch's data: R plane, then G, then B, row-major

# The official cifar-100-python.tar.gz: one folder with three Python 2 pickles (and a stray file.txt~).
CIFAR100_ARCHIVE_NAME = "cifar-100-python.tar.gz"
CIFAR100_DIR = "cifar-100-python"
CIFAR100_TRAIN, CIFAR100_TEST, CIFAR100_META = "train", "test", "meta"
CIFAR100_FILES = (CIFAR100_META, CIFAR100_TRAIN, CIFAR100_TEST)
# data.labels -> (the batches' label key, the meta file's class-name key)
CIFAR100_LABELS = {"fine": ("fine_labels", "fine_label_names"), "coarse": ("coarse_labels", "coarse_label_names")}


# The md5 of each official batch file: torchvision's CIFAR10 class checks the same list
# (train_list, test_list, meta; tests/test_download.py compares them), written out here so that the
# data stages need not import torchvision, and with it torch, only to read it.
OFFICIAL_MD5S = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f", "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751", "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb", "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}


def official_md5s() -> dict[str, str]:
    """The md5 of each official batch file (OFFICIAL_MD5S)."""
    return dict(OFFICIAL_MD5S)


def differing_files(folder: Path) -> list[str]:
    """The batch files in `folder` (REQUIRED_FILES order) whose md5 is not the official one's;
    [] for the official CIFAR-10 data. A mirror that re-encodes the images differs in every file."""
    official = official_md5s()
    return [name for name in REQUIRED_FILES if file_md5(folder / name) != official.get(name)]


def describe_data(differing: list[str]) -> str:
    """One line saying whether batch files are the official ones, for the logs."""
    if not differing:
        return "these are the official CIFAR-10 batch files (their md5s match torchvision's CIFAR10 list)"
    return f"a mirror whose {', '.join(differing)} differ{'s' if len(differing) == 1 else ''} from the official files"
