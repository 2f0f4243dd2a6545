"""What a user sees when the disk fills up: the stages run on a real, small, loop-mounted ext4 filesystem.

Needs root (mount) and a kernel with loop devices; not part of the test suite (tests/test_faults.py injects
the same faults with a file-size limit and a patched write). Run from the checkout's root:

    sudo .venv/bin/python benchmarks/full_disk.py [--size-mb 20]

Steps, each a stage process as dvc.yaml runs it, with its outputs on the small filesystem:
  download  a synthetic official-format archive of 2,000 training images (it fits)
  prepare   their float32 tensors, about 30 MB (they do not fit)
  train     the tutorial MLP's checkpoint, about 29 MB, on a filesystem filled to within 1 MB
For each it prints the exit code, the stage's last line, what is left on the filesystem and the room free.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.runner import ROOT, machine  # noqa: E402
from tests.cifar_archive import official_members, write_archive  # noqa: E402
from tests.conftest import write_params  # noqa: E402


@contextlib.contextmanager
def small_filesystem(size_mb: int, work: Path) -> Iterator[Path]:
    image, mount = work / "small.img", work / "small"
    mount.mkdir()
    with open(image, "wb") as f:
        f.truncate(size_mb * 2**20)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def stage(module: str, *args: str) -> tuple[int, str]:
    env = {"OMP_NUM_THREADS": "1", **os.environ, "DVC_STUDIO_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", f"stages.{module}", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    return proc.returncode, lines[-1] if lines else ""


def report(name: str, result: tuple[int, str], mount: Path) -> None:
    code, last = result
    left = sorted(str(p.relative_to(mount)) for p in mount.rglob("*") if "lost+found" not in p.parts)
    free = shutil.disk_usage(mount).free / 1e6
    print(f"\n[{name}] exit {code}\n  says: {last}\n  on the filesystem: {left or 'nothing'}\n  free: {free:.1f} MB")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=20)
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("needs root: it mounts a loop device")
    print(f"{machine()}; a {args.size_mb} MB ext4 filesystem on a loop device")
    with tempfile.TemporaryDirectory(prefix="full-disk-") as tmp:
        work = Path(tmp)
        archive = work / "cifar-10-python.tar.gz"
        md5 = write_archive(archive, official_members(train_per_class=200, test_per_class=20))
        params = write_params(work / "params.yaml", **{"data.url": str(archive), "data.md5": md5,
                                                       "train.optim.epochs": 1, "train.numerics.device": "cpu",
                                                       "train.optim.batch_size": 64})
        print(f"archive {archive.stat().st_size / 1e6:.1f} MB")
        with small_filesystem(args.size_mb, work) as mount:
            report("download", stage("download", "--params", str(params), "--out", str(mount / "raw")), mount)
            report("prepare", stage("prepare", "--params", str(params), "--raw", str(mount / "raw"),
                                    "--out", str(mount / "prepared")), mount)
            # train reads a roomy prepared copy and writes its checkpoint onto the full filesystem
            roomy = work / "prepared"
            code, last = stage("prepare", "--params", str(params), "--raw", str(mount / "raw"), "--out", str(roomy))
            assert code == 0, last
            filler = mount / "filler"
            with open(filler, "wb") as f:
                f.write(b"\0" * max(0, shutil.disk_usage(mount).free - 2**20))
            out = mount / "out"
            report("train", stage("train", "--params", str(params), "--prepared", str(roomy),
                                  "--model", str(out / "model.pth"), "--model-meta", str(out / "model.json"),
                                  "--metrics", str(out / "train.json"), "--history", str(out / "train_log.csv"),
                                  "--checkpoint", str(out / "checkpoints/train.pt")), mount)


if __name__ == "__main__":
    main()
