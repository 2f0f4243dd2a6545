"""The layout of the official `cifar-10-python.tar.gz`, shared by download and prepare."""
from __future__ import annotations

from pathlib import Path

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


def official_md5s() -> dict[str, str]:
    """The md5 of each official batch file, as torchvision's CIFAR10 class checks them."""
    from torchvision.datasets import CIFAR10

    listed = [*CIFAR10.train_list, *CIFAR10.test_list, (CIFAR10.meta["filename"], CIFAR10.meta["md5"])]
    return {name: md5 for name, md5 in listed}


def differing_files(folder: Path) -> list[str]:
    """The batch files in `folder` (REQUIRED_FILES order) whose md5 is not the official one's;
    [] for the official CIFAR-10 data. A mirror that re-encodes the images differs in every file."""
    from torchvision.datasets.utils import calculate_md5

    official = official_md5s()
    return [name for name in REQUIRED_FILES if calculate_md5(folder / name) != official.get(name)]


def describe_data(differing: list[str]) -> str:
    """One line saying whether batch files are the official ones, for the logs."""
    if not differing:
        return "these are the official CIFAR-10 batch files (their md5s match torchvision's CIFAR10 list)"
    return f"a mirror whose {', '.join(differing)} differ{'s' if len(differing) == 1 else ''} from the official files"
