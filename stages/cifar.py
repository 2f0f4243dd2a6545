"""The layout of the official `cifar-10-python.tar.gz`, shared by download and prepare."""

ARCHIVE_NAME = "cifar-10-python.tar.gz"
ARCHIVE_DIR = "cifar-10-batches-py"  # the one top-level folder inside the archive
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
META_FILE = "batches.meta"
REQUIRED_FILES = (META_FILE, *TRAIN_FILES, TEST_FILE)
OPTIONAL_FILES = ("readme.html",)  # in the official archive; nothing else may be
IMAGE_SHAPE = (3, 32, 32)  # each row of a batch's data: R plane, then G, then B, row-major
