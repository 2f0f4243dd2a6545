"""The layout of the official `cifar-10-python.tar.gz`, shared by download and prepare."""

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
