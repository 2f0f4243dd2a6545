"""Train airbench94 with the airbench package itself, n seeds; write accuracy and time per run as JSON.

Run by benchmarks/gpu_check.py in a subprocess, with the folder holding
cifar10/train.pt and cifar10/test.pt as the working directory (airbench's
CifarLoader reads them from the relative path `cifar10`) and the airbench
package on PYTHONPATH. airbench is CUDA-only (its make_net94 calls .cuda()).

Per run: train94's training, timed on the host around a CUDA synchronize (its
loader is built beforehand, as airbench's own timer also leaves out), then its
level-2 test-time augmentation accuracy, timed apart. airbench's README counts
both together (3.83 s on an A100). The JSON is rewritten after every run, so a
run cut short still leaves the finished ones.

    python benchmarks/airbench_runs.py --seeds 0 1 2 3 4 --json runs.json [--epochs 9.9]
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--epochs", type=float, help="train94's epochs (default: its own, 9.9)")
    ap.add_argument("--json", type=Path, required=True)
    args = ap.parse_args(argv)

    import torch

    import airbench
    from airbench.lib_airbench94 import hyp

    if not torch.cuda.is_available():
        raise SystemExit("airbench needs CUDA; torch finds no CUDA GPU here")
    epochs = args.epochs if args.epochs is not None else hyp["opt"]["train_epochs"]
    report = {"airbench": os.path.dirname(airbench.__file__), "torch": torch.__version__,
              "gpu": torch.cuda.get_device_name(), "epochs": epochs, "tta_level": hyp["net"]["tta_level"],
              "runs": []}
    start = time.perf_counter()
    airbench.warmup94(epochs=epochs)  # one step: cuDNN's kernel choice and CUDA's lazy start, outside the timings
    torch.cuda.synchronize()
    report["warmup_seconds"] = time.perf_counter() - start
    test_loader = airbench.CifarLoader("cifar10", train=False, batch_size=2000)
    for seed in args.seeds:
        torch.manual_seed(seed)  # weights, shuffles, crops and flips all draw from torch's generators
        loader = airbench.CifarLoader("cifar10", train=True, batch_size=hyp["opt"]["batch_size"], aug=hyp["aug"],
                                      altflip=True)
        torch.cuda.synchronize()
        start = time.perf_counter()
        net = airbench.train94(loader, epochs=epochs, verbose=False)
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
