"""Check data.source imagefolder against real data: CIFAR-10 as image folders gives the cifar10 tensors.

    python benchmarks/image_folders.py --work cache/image-folders

../shared/data/cifar10-jpeg.tar.gz and cifar10-png.tar.gz hold all 60,000 CIFAR-10 images as
train/<class>/NNNN.jpg|png and test/<class>/..., the PNG copy with text files (order.csv,
SOURCE.md, ...) beside them. Each goes through the real download and prepare stages as
data.source imagefolder, and the matching mirror (the JPEG-built one, the official one) as
data.source cifar10; the prepared uint8 tensors must hold the same (image, label) pairs, split by
split. The folders list images class by class and the batch files in the official order, so
the order differs: the pairs are compared as sorted multisets, and the script says whether the
order matches too. Prints, per folder: images, files skipped, prepare's wall time, images/s
and peak memory (its process's max RSS). Not part of the test suite: it needs ../shared.
Exits 1 when any set differs.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml
from torchvision.datasets.utils import calculate_md5

ROOT = Path(__file__).resolve().parents[1]
# ../shared beside the main checkout; a worktree under /work/wt/<name> finds it one level further up
SHARED = next((p / "shared" / "data" for p in ROOT.parents if (p / "shared" / "data").is_dir()), ROOT.parent / "shared")
MAIN_CACHE = Path("/work/main/cache")
PAIRS = [  # (image folder archive, cifar10 mirror it was made from, that mirror's md5)
    ("cifar10-jpeg.tar.gz", "mirror-jpeg/cifar-10-python.tar.gz", "182e9d6f9f54ceeea150cb85e6c574de"),
    ("cifar10-png.tar.gz", "mirror-official/cifar-10-python.tar.gz", "a0ff850f0d0b1ab0ab85786a28a578ca"),
]


def stage(name: str, params: Path, *args: str) -> tuple[float, float, str]:
    """Run `python -m stages.<name>` in its own process: (wall seconds, peak RSS in MiB, its log)."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", f"stages.{name}", "--params", str(params), *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    if proc.returncode:
        sys.exit(f"stages.{name} failed:\n{output}")
    return seconds, usage.ru_maxrss / 1024, output


def prepare_source(work: Path, name: str, **data) -> tuple[Path, float, float, str]:
    """download + prepare of one source into work/name: (prepared folder, prepare seconds, its peak MiB, its log)."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"].update(data)
    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    if not (folder / "prepared").is_dir():
        stage("download", folder / "params.yaml", "--out", str(folder / "raw"), "--images", str(folder))
        seconds, mb, log = stage("prepare", folder / "params.yaml", "--raw", str(folder / "raw"), "--out",
                                 str(folder / "prepared"))
        (folder / "prepare.log").write_text(f"{seconds} {mb}\n{log}")
    first, log = (folder / "prepare.log").read_text().split("\n", 1)
    seconds, mb = map(float, first.split())
    return folder / "prepared", seconds, mb, log


def pairs(prepared: Path, split: str) -> list[tuple[bytes, str]]:
    """(uint8 pixels, class name) of every image of a prepared split, in file order."""
    record = torch.load(prepared / f"{split}.pt", weights_only=True)
    names = record["classes"]
    return [(x.numpy().tobytes(), names[y]) for x, y in zip(record["images"], record["labels"].tolist())]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=SHARED, help="folder with cifar10-jpeg/png.tar.gz")
    ap.add_argument("--mirrors", type=Path, default=MAIN_CACHE, help="folder with mirror-jpeg/ and mirror-official/")
    ap.add_argument("--work", type=Path, required=True, help="scratch folder (outside git), about 2 GB")
    args = ap.parse_args(argv)

    failed = False
    for folder_archive, mirror, mirror_md5 in PAIRS:
        archive = args.shared / folder_archive
        images, seconds, mb, log = prepare_source(args.work, folder_archive.split(".")[0], source="imagefolder",
                                                  url=str(archive), md5=calculate_md5(str(archive)))
        reference, ref_seconds, ref_mb, _ = prepare_source(args.work, mirror.split("/")[0], source="cifar10",
                                                           url=str(args.mirrors / mirror), md5=mirror_md5)
        skipped = re.search(r"(\d+) file\(s\) outside the class folders skipped", log)
        count = 0
        for split in ("train", "test"):
            ours, theirs = pairs(images, split), pairs(reference, split)
            same_set = sorted(ours) == sorted(theirs)
            failed |= not same_set
            count += len(ours)
            print(f"{folder_archive} {split}: {len(ours)} images vs {len(theirs)} in {mirror}: "
                  f"(image, label) sets {'identical' if same_set else 'DIFFER'}; "
                  f"same order: {ours == theirs}")
        print(f"{folder_archive}: {skipped.group(1) if skipped else '?'} file(s) outside the class folders skipped; "
              f"prepare {seconds:.1f} s for {count} images = {count / seconds:.0f} images/s, peak {mb:.0f} MiB "
              f"(cifar10 source on the mirror: {ref_seconds:.1f} s, peak {ref_mb:.0f} MiB)")
    if failed:
        sys.exit("some prepared sets differ")


if __name__ == "__main__":
    main()
