"""Which data.source an extracted archive holds, for the download stage: each source's layout, the
folder of it that becomes the raw output, and one error saying what was found and what was expected."""
from __future__ import annotations

from pathlib import Path

from .cifar import ARCHIVE_DIR, ARCHIVE_NAME, CIFAR100_ARCHIVE_NAME, CIFAR100_DIR, CIFAR100_FILES, REQUIRED_FILES
from .common import StageError

EXPECTED = {
    "cifar10": f"{ARCHIVE_DIR}/ holding {', '.join(REQUIRED_FILES)}",
    "cifar100": f"{CIFAR100_DIR}/ holding {', '.join(CIFAR100_FILES)}",
    "imagefolder": "train/<class>/<image files> (and test/<class>/...), at the top or inside one folder",
}
# imagefolder archives: the suffixes the download stage unpacks (a zip, or a gzipped tar)
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".zip")


def image_folder_root(root: Path) -> Path | None:
    """The folder holding train/<class>/: `root` itself, or its only subfolder (an archive's top folder)."""
    subfolders = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")] if root.is_dir() else []
    candidates = [root] + (subfolders if len(subfolders) == 1 else [])
    return next((c for c in candidates if (c / "train").is_dir() and any(p.is_dir() for p in (c / "train").iterdir())),
                None)


def matching_layouts(root: Path) -> dict[str, Path]:
    """source -> the folder that holds its files, for every source whose layout `root` matches."""
    found = {}
    if all((root / ARCHIVE_DIR / name).is_file() for name in REQUIRED_FILES):
        found["cifar10"] = root / ARCHIVE_DIR
    if all((root / CIFAR100_DIR / name).is_file() for name in CIFAR100_FILES):
        found["cifar100"] = root / CIFAR100_DIR
    folder = image_folder_root(root)
    if folder is not None:
        found["imagefolder"] = folder
    return found


def other_layout_hint(root: Path, source: str) -> str:
    """'; it is the layout of X: set data.source to X' when another source matches, else ''."""
    others = [s for s in matching_layouts(root) if s != source]
    return f"; it is the layout of {others[0]}: set data.source to {others[0]}" if others else ""


def layout_root(root: Path, source: str, where: str) -> Path:
    """The folder of `root` that holds `source`'s files; else one error with what was found and expected."""
    found = matching_layouts(root)
    if source in found:
        return found[source]
    listing = sorted(str(p.relative_to(root)) + ("/" if p.is_dir() else "") for p in root.rglob("*"))
    raise StageError(f"{where}: does not hold data.source {source!r}'s layout: expected {EXPECTED[source]}; "
                     f"found {listing[:10] or 'nothing'}{other_layout_hint(root, source)}")


def archive_name(url: str, source: str) -> str:
    """The file name an archive is saved under: its suffix tells the download stage how to unpack it."""
    if source == "cifar10":
        return ARCHIVE_NAME
    if source == "cifar100":
        return CIFAR100_ARCHIVE_NAME
    name = url.rstrip("/").rsplit("/", 1)[-1].split("?")[0]
    if not name.lower().endswith(ARCHIVE_SUFFIXES):
        raise StageError(f"data.url {url!r}: an imagefolder archive must be a {', '.join(ARCHIVE_SUFFIXES)} file, "
                         "or a folder under images/ (with data.md5 \"\")")
    return name
