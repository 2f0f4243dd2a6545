"""Benchmark a training recipe end to end: test accuracy over seeds, training time, stage peaks.

Runs dvc.yaml's stage commands (no DVC needed) in a scratch copy of the project:
download and prepare once, then train and evaluate once per seed. Prints, per
seed, test accuracy and the train stage's own measured training time (the loop
over epochs: no process start, data loading or compile warm-up), then the mean,
and each stage's wall seconds and peak memory.

    python benchmarks/recipe.py --archive /path/cifar-10-python.tar.gz --md5 182e9d6f9f54ceeea150cb85e6c574de \
        --recipe cpu [--seeds 0 1 2 3 4] [--set train.optim.epochs=8 --set evaluate.tta=flip] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.runner import commit, copy_project, machine, parse_set, results, run_stages, scratch  # noqa: E402
from stages.params import set_dotted  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archive", type=Path, required=True)
    ap.add_argument("--md5", required=True)
    ap.add_argument("--recipe", required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--set", action="append", default=[], help="extra params override KEY=VALUE")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    overrides = {"data.url": str(args.archive.resolve()), "data.md5": args.md5, "train.recipe": args.recipe,
                 **parse_set(args.set)}

    runs = []
    with scratch("bench-") as work:
        copy_project(work, overrides)
        stages = run_stages(work, only=("download", "prepare"))
        for seed in args.seeds:
            params = yaml.safe_load((work / "params.yaml").read_text())
            (work / "params.yaml").write_text(yaml.safe_dump(set_dotted(params, {"train.numerics.seed": seed}),
                                                             sort_keys=False))
            seed_stages = run_stages(work, only=("train", "evaluate"))
            runs.append({"seed": seed, **results(work), "stages": seed_stages})
            print(f"=== seed {seed}: test accuracy {runs[-1]['test_accuracy']:.2%}, "
                  f"training {runs[-1]['train_seconds']:.1f}s", flush=True)
    accuracies = [r["test_accuracy"] for r in runs]
    summary = {
        "machine": machine(), "commit": commit(), "recipe": args.recipe, "overrides": parse_set(args.set),
        "seeds": args.seeds, "mean_test_accuracy": statistics.mean(accuracies),
        "stdev_test_accuracy": statistics.stdev(accuracies) if len(runs) > 1 else 0.0,
        "mean_train_seconds": statistics.mean(r["train_seconds"] for r in runs),
        "download_prepare": stages, "runs": runs,
    }
    print(json.dumps(summary, indent=2))
    print(f"\n{args.recipe} {summary['overrides']}: {summary['mean_test_accuracy']:.2%} mean test accuracy "
          f"over {len(runs)} seed(s) (sd {summary['stdev_test_accuracy']:.2%}), "
          f"{summary['mean_train_seconds']:.1f}s training, on {summary['machine']}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
