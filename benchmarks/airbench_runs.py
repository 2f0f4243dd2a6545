"""Train airbench94 (or 93) with the airbench package itself, n seeds; write accuracy and time per run as JSON.

Run by benchmarks/gpu_check.py in a subprocess, with the folder holding
cifar10/train.pt and cifar10/test.pt as the working directory (airbench's
CifarLoader reads them from the relative path `cifar10`) and the airbench
package on PYTHONPATH or installed. airbench is CUDA-only (its make_net94 calls .cuda()).

Per run: train94's training, timed on the host around a CUDA synchronize (its
loader is built beforehand, as airbench's own timer also leaves out), then its
level-2 test-time augmentation accuracy, timed apart. airbench's README counts
both together (3.83 s on an A100). The JSON is rewritten after every run, so a
run cut short still leaves the finished ones.

    python benchmarks/airbench_runs.py --seeds 0 1 2 3 4 --json runs.json [--epochs 9.9] [--variant 93]

--variant picks the package's train94 (the default: 94.01% published, 9.9 epochs, widths 64-256-256)
or train93 (93.00% published over 50 runs, 11 epochs, widths 64-128-128), each with its own hyp.

--cpu runs the same code on a machine without a GPU, in fp32, to compare airbench's
own accuracy with fast-gpu's where no GPU is lent (BENCHMARKS.md 3g). It changes
where and in which precision airbench computes, never what: see run_on_cpu().
--archive writes cifar10/train.pt and test.pt from an official-format archive first.
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import platform
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # stages/, when run as a script from airbench's data folder
from stages.cifar import ARCHIVE_DIR, META_FILE, TEST_FILE, TRAIN_FILES  # noqa: E402
from stages.common import StageError  # noqa: E402


class HostEvent:
    """torch.cuda.Event's timing interface on the host clock: what airbench's train() times itself with."""

    def __init__(self, enable_timing: bool = False):
        self.at = 0.0

    def record(self) -> None:
        self.at = time.perf_counter()

    def elapsed_time(self, end: "HostEvent") -> float:
        return 1e3 * (end.at - self.at)


def run_on_cpu() -> None:
    """Let airbench 0.1.8's CUDA-only code run on the CPU in fp32, its method unchanged.

    Patches, in this process only (it runs as its own):
    - nn.Module.half and .cuda: make_net94's `net.half().cuda()` leaves the net in fp32 on the CPU
      (its BatchNorms are fp32 on the GPU too);
    - Tensor.half: CifarLoader's `images.half() / 255` gives fp32 images, matching the net;
    - CifarLoader's `gpu` default (GPU 0, its torch.load map_location) becomes "cpu", for the
      train loader built here and the test loader train() builds itself;
    - torch.cuda.Event and torch.cuda.synchronize, train()'s own timer: host-clock stand-ins.
    fp32 is also what fast-gpu trains in on a CPU without native bf16, so the two compare alike.
    """
    from airbench.utils import CifarLoader

    torch.nn.Module.half = torch.nn.Module.float
    torch.nn.Module.cuda = lambda self, device=None: self
    torch.Tensor.half = lambda self, *args, **kwargs: self.float()
    if list(inspect.signature(CifarLoader.__init__).parameters)[-1] != "gpu":
        raise SystemExit("--cpu patches airbench 0.1.8's CifarLoader(..., gpu=0); this airbench's differs")
    defaults = CifarLoader.__init__.__defaults__
    CifarLoader.__init__.__defaults__ = defaults[:-1] + ("cpu",)
    torch.cuda.Event = HostEvent
    torch.cuda.synchronize = lambda device=None: None


def write_airbench_data(archive: Path, folder: Path) -> dict:
    """Write airbench's cifar10/train.pt and test.pt from an official-format archive; return their sizes.

    airbench's CifarLoader reads {'images': (N, 32, 32, 3) uint8, 'labels': (N,) int64, 'classes':
    [names]} (torchvision's CIFAR10.data and .targets as tensors), and would download CIFAR-10
    through torchvision where they are missing.
    """
    from stages.prepare import read_classes, read_split

    with tempfile.TemporaryDirectory(prefix="airbench-data-") as tmp:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(tmp, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
        raw = Path(tmp) / ARCHIVE_DIR
        classes = read_classes(raw / META_FILE)
        splits = {name: read_split(raw, files, len(classes))  # (N, 3, 32, 32) uint8, (N,) int64
                  for name, files in (("train", TRAIN_FILES), ("test", (TEST_FILE,)))}
    folder.mkdir(parents=True, exist_ok=True)
    for name, (images, labels) in splits.items():  # both read before either is written: no half pair
        tmp = folder / f"{name}.pt.tmp"
        torch.save({"images": torch.from_numpy(np.ascontiguousarray(images.transpose(0, 2, 3, 1))),
                    "labels": torch.from_numpy(labels), "classes": classes}, tmp)
        tmp.replace(folder / f"{name}.pt")
    return {f"{name}_images": len(labels) for name, (_, labels) in splits.items()}


VARIANTS = {"93": "lib_airbench93", "94": "lib_airbench94"}


def variant(airbench, name: str) -> tuple:
    """(train, warmup, hyp) of airbench's train93 or train94, from the package's own modules."""
    module = importlib.import_module(f"airbench.{VARIANTS[name]}")
    return getattr(airbench, f"train{name}"), getattr(airbench, f"warmup{name}"), module.hyp


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--variant", choices=sorted(VARIANTS), default="94", help="airbench's train94 or train93")
    ap.add_argument("--epochs", type=float, help="the variant's epochs (default: its own, 9.9 or 11)")
    ap.add_argument("--batch-size", type=int, help="its training loader's batch (default: its own, 1024); "
                    "it drops the last short batch, so less than the training images")
    ap.add_argument("--whiten-bias-epochs", type=float, help="epochs in which the whitening bias trains "
                    "(default: its own, 3); 0 times an epoch with it frozen, as its later epochs are")
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--cpu", action="store_true", help="run on the CPU in fp32 (see run_on_cpu)")
    ap.add_argument("--archive", type=Path, help="write cifar10/*.pt from this official-format archive first")
    ap.add_argument("--verbose", action="store_true", help="airbench's own per-epoch table (evaluates each epoch)")
    args = ap.parse_args(argv)
    if args.whiten_bias_epochs is not None and args.whiten_bias_epochs < 0:
        ap.error(f"--whiten-bias-epochs {args.whiten_bias_epochs:g}: expected 0 or more epochs "
                 "(0: the whitening bias frozen from the start)")
    if args.archive is not None:
        if not args.archive.is_file():
            ap.error(f"--archive {args.archive}: no such file (expected an official-format cifar-10-python.tar.gz)")
        try:
            sizes = write_airbench_data(args.archive, Path("cifar10"))
        except (tarfile.TarError, StageError) as err:
            raise SystemExit(f"--archive {args.archive}: not an official-format CIFAR-10 archive: {err}") from None
        print(f"airbench data: {sizes} in {Path('cifar10').resolve()}", flush=True)

    import airbench

    train, warmup, hyp = variant(airbench, args.variant)
    if args.cpu:
        run_on_cpu()
    elif not torch.cuda.is_available():
        raise SystemExit("airbench needs CUDA; torch finds no CUDA GPU here (--cpu runs it on the CPU in fp32)")
    epochs = args.epochs if args.epochs is not None else hyp["opt"]["train_epochs"]
    batch_size = args.batch_size or hyp["opt"]["batch_size"]
    bias_epochs = hyp["opt"]["whiten_bias_epochs"] if args.whiten_bias_epochs is None else args.whiten_bias_epochs
    device = f"CPU ({platform.processor() or platform.machine()}), fp32" if args.cpu else torch.cuda.get_device_name()
    report = {"airbench": os.path.dirname(airbench.__file__), "variant": args.variant, "widths": hyp["net"]["widths"],
              "torch": torch.__version__, "device": device,
              "epochs": epochs, "batch_size": batch_size, "whiten_bias_epochs": bias_epochs,
              "tta_level": hyp["net"]["tta_level"], "runs": []}
    start = time.perf_counter()
    warmup_loader = airbench.CifarLoader("cifar10", train=True, batch_size=batch_size, aug=hyp["aug"], altflip=True)
    warmup(warmup_loader, epochs=epochs)  # one step: cuDNN's choice, CUDA's lazy start; not timed
    torch.cuda.synchronize()
    report["warmup_seconds"] = time.perf_counter() - start
    test_loader = airbench.CifarLoader("cifar10", train=False, batch_size=2000)
    for seed in args.seeds:
        torch.manual_seed(seed)  # weights, shuffles, crops and flips all draw from torch's generators
        loader = airbench.CifarLoader("cifar10", train=True, batch_size=batch_size, aug=hyp["aug"], altflip=True)
        torch.cuda.synchronize()
        start = time.perf_counter()
        net = train(loader, epochs=epochs, whiten_bias_epochs=bias_epochs, verbose=args.verbose)
        torch.cuda.synchronize()
        train_seconds = time.perf_counter() - start
        accuracy = airbench.evaluate(net, test_loader, tta_level=hyp["net"]["tta_level"])
        torch.cuda.synchronize()
        eval_seconds = time.perf_counter() - start - train_seconds
        report["runs"].append({"seed": seed, "test_accuracy": accuracy, "train_seconds": train_seconds,
                               "tta_eval_seconds": eval_seconds})
        print(f"airbench seed {seed}: {accuracy:.2%} in {train_seconds:.2f}s training "
              f"+ {eval_seconds:.2f}s evaluation", flush=True)
        tmp = args.json.with_suffix(".tmp")
        tmp.write_text(json.dumps(report, indent=2) + "\n")
        tmp.replace(args.json)


if __name__ == "__main__":
    main()
