"""Stage 1: fetch cifar-10-python.tar.gz, verify its md5, extract the batch files.

Or, by data.source, cifar-100-python.tar.gz, or an image folder: an archive (.tar.gz, .tgz,
.zip) or a folder under images/, which dvc.yaml makes a dependency of this stage, so that
changing an image there re-runs it (stages/sources.py says which layout each source has).
After extracting CIFAR-10 it logs whether the batch files are the official ones (their md5s
against torchvision's CIFAR10 list) or which of them a mirror changed.

`data.url` may be an http(s) URL, a file:// URL or a local path (for mirrors and
offline machines). torchvision's `download_url` fetches http(s) URLs, but it fails
on file:// URLs and streams straight to the final name, so local sources are copied
here and everything lands in a temporary folder that only becomes `--out` once every
check has passed. The md5 check and the extraction use the standard library, and
torchvision is imported only for an http(s) download: the stage starts without
importing torch (5 of its 6 seconds of start-up on a 2-core machine).
"""
from __future__ import annotations

import argparse
import gzip
import logging
import os
import shutil
import socket
import sys
import tarfile
import time
import urllib.error
import zipfile
import zlib
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

from .cifar import ARCHIVE_DIR, ARCHIVE_NAME, OPTIONAL_FILES, REQUIRED_FILES, describe_data, differing_files
from .common import StageError, atomic_path, file_md5, run_stage
from .params import DataParams, load_params
from .sources import archive_name, layout_root, other_layout_hint

log = logging.getLogger("stages")
# Said with every failed download; the docs page must keep this section name (a test checks both).
OFFLINE_HINT = ("Offline? Get cifar-10-python.tar.gz by other means, then set data.url to its path and data.md5 "
                "to its md5: docs/data.md, section \"Offline, or from a mirror\"")
OFFICIAL_ARCHIVE_BYTES = 170_498_071  # cifar-10-python.tar.gz, for the room a remote download needs
SOCKET_TIMEOUT_S = 60  # a silent server fails the stage instead of hanging it


def local_source(url: str) -> Path | None:
    """The local file a URL names (path or file:// URL), or None for a remote URL."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return Path(url2pathname(parsed.path))
    if len(parsed.scheme) <= 1:  # no scheme, or a Windows drive letter (C:\\...)
        return Path(url).expanduser()
    return None


def fetch(url: str, dest_dir: Path, name: str = ARCHIVE_NAME) -> Path:
    """Copy or download the archive at `url` into dest_dir (as `name`) and return its path."""
    dest = dest_dir / name
    source = local_source(url)
    if source is not None:
        if not source.is_file():
            raise StageError(f"data.url {url!r}: no such file {str(source)!r}")
        log.info("copying %s (%.1f MB)", source, source.stat().st_size / 1e6)
        shutil.copyfile(source, dest)
        return dest
    if urlparse(url).scheme not in ("http", "https"):
        raise StageError(f"data.url {url!r}: unsupported scheme; use http(s)://, file:// or a local path")
    log.info("downloading %s", url)
    if not sys.stderr.isatty():
        os.environ["TQDM_DISABLE"] = "1"  # torchvision's byte progress bar: plain log lines instead in CI
    start = time.perf_counter()
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(SOCKET_TIMEOUT_S)  # download_url takes no timeout of its own
    try:
        from torchvision.datasets.utils import download_url  # here only: it imports torch

        download_url(url, str(dest_dir), name)
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise StageError(f"data.url {url!r}: download failed: {err}. {OFFLINE_HINT}") from None
    finally:
        socket.setdefaulttimeout(previous)
    if not dest.is_file():
        raise StageError(f"data.url {url!r}: download produced no file")
    seconds = time.perf_counter() - start
    log.info("downloaded %.1f MB in %.1fs", dest.stat().st_size / 1e6, seconds)
    return dest


def verify_md5(archive: Path, md5: str, url: str) -> None:
    found = file_md5(archive)
    if found == md5:
        return
    raise StageError(
        f"{url}: md5 mismatch: expected {md5} (data.md5), found {found} "
        f"({archive.stat().st_size} bytes). A truncated or different file; "
        "for a mirror, set data.md5 to its checksum")


def extract(archive: Path, dest_dir: Path, url: str, source: str = "cifar10") -> Path:
    """Extract the archive; return the folder that holds the batch files (or `source`'s), checked complete."""
    # .zip or a gzipped tar (.tar.gz, .tgz: sources.ARCHIVE_SUFFIXES). Python's "data" filter refuses
    # tar members that would land outside dest_dir (../, absolute paths, links out); zipfile's
    # extractall drops such parts of a member's name itself.
    try:
        if archive.name.endswith(".zip"):
            with zipfile.ZipFile(archive) as zipped:
                zipped.extractall(dest_dir)
        else:
            with tarfile.open(archive, "r:gz") as tar:
                tar.extractall(dest_dir, filter="data")
    except tarfile.FilterError as err:
        raise StageError(f"{url}: cannot extract: unsafe archive member refused ({err})") from None
    except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error, zipfile.BadZipFile, OSError) as err:
        raise StageError(f"{url}: cannot extract as a {'zip' if archive.suffix == '.zip' else 'gzip-compressed tar'} "
                         f"archive ({type(err).__name__}: {err}); is the file truncated or not "
                         f"{'CIFAR-10' if source == 'cifar10' else source}?") from None
    if source != "cifar10":
        return layout_root(dest_dir, source, url)
    batches = dest_dir / ARCHIVE_DIR
    found = sorted(str(p.relative_to(dest_dir)) for p in dest_dir.rglob("*") if not p.is_dir())
    missing = [name for name in REQUIRED_FILES if not (batches / name).is_file()]
    if missing:
        raise StageError(f"{url}: archive lacks {', '.join(f'{ARCHIVE_DIR}/{m}' for m in missing)}; "
                         f"it holds {found[:10] or 'no files'}; expected {', '.join(REQUIRED_FILES)} "
                         f"under {ARCHIVE_DIR}/{other_layout_hint(dest_dir, 'cifar10')}")
    allowed = {f"{ARCHIVE_DIR}/{name}" for name in (*REQUIRED_FILES, *OPTIONAL_FILES)}
    extra = [name for name in found if name not in allowed]
    if extra:
        raise StageError(f"{url}: archive holds unexpected member(s) {extra[:10]}; the official archive has "
                         f"only {', '.join(REQUIRED_FILES + OPTIONAL_FILES)} under {ARCHIVE_DIR}/")
    return batches


def room_needed(url: str) -> int:
    """Bytes the download needs at its peak: the archive and its extracted files (about 1.1 times the
    gzipped archive), side by side until the archive is removed; a local image folder's own size."""
    source = local_source(url)
    if source is not None and source.is_dir():  # an image folder, copied as it is
        return sum(p.stat().st_size for p in source.rglob("*") if p.is_file())
    size = source.stat().st_size if source is not None and source.is_file() else OFFICIAL_ARCHIVE_BYTES
    return int(size * 2.1)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", type=Path, required=True, help="folder for the extracted batch files")
    ap.add_argument("--images", type=Path, default=Path("images"),
                    help="the tracked folder that a local image folder (data.url) must be in")
    args = ap.parse_args(argv)
    data = load_params(args.params).data

    folder = local_folder(data, args.images)
    what = "the copied image folder" if folder is not None else "the archive and its extracted files"
    with atomic_path(args.out, what, room_needed(data.url)) as staged:
        if folder is not None:
            log.info("copying the image folder %s", folder)
            shutil.copytree(layout_root(folder, "imagefolder", f"data.url {data.url!r}"), staged)
        else:
            archive = fetch(data.url, staged.parent, archive_name(data.url, data.source))
            if not data.md5:
                raise StageError(f"data.url {data.url!r} is an archive: set data.md5 to its md5 "
                                 f"({file_md5(archive)}, if it is the file you meant)")
            verify_md5(archive, data.md5, data.url)
            log.info("md5 %s verified; extracting", data.md5)
            extract(archive, staged.parent / "extract", data.url, data.source).rename(staged)
            if data.source == "cifar10":
                log.info("%s", describe_data(differing_files(staged)))  # prepare records the same answer
    log.info("wrote %s (data.source %s)", args.out, data.source)


def local_folder(data: DataParams, tracked: Path) -> Path | None:
    """The image folder data.url names, checked to be inside the tracked `tracked` folder; None for an archive."""
    source = local_source(data.url)
    if source is None or not source.is_dir():
        return None
    if data.source != "imagefolder":
        raise StageError(f"data.url {data.url!r} is a folder; data.source {data.source!r} takes its archive "
                         "(a folder is for data.source imagefolder)")
    if not source.resolve().is_relative_to(tracked.resolve()):
        raise StageError(f"data.url {data.url!r}: an image folder must be inside {tracked}/, the folder dvc.yaml "
                         f"makes a dependency of this stage (so that DVC sees a changed image); move it there")
    if data.md5:
        raise StageError(f"data.url {data.url!r} is a folder: set data.md5 to \"\" (DVC hashes the folder itself)")
    return source


if __name__ == "__main__":
    run_stage("download", main)
