"""Training time of several recipes on the same machine and data, in one invocation, with their ratio.

Runs the train stage's command (no DVC needed) for each recipe in turn, `--rounds`
times interleaved (A B A B ...) so that a change in machine load hits every recipe
alike, each for `--epochs` epochs, and takes the median seconds per epoch of the
train stage's own timing (train.json's train_seconds: the epochs only, no process
start or data loading). A full run's time is that times the recipe's epochs: every
epoch does the same work, so a shortened run measures the same per-epoch time.
Prints each recipe's projected training time and its ratio to the first one.

    python benchmarks/recipe_time.py --archive /path/cifar-10-python.tar.gz --md5 182e9d6f9f54ceeea150cb85e6c574de \
        --recipes resnet-cpu cpu [--epochs 1] [--rounds 2] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.runner import commit, copy_project, machine, parse_set, run_stages, scratch  # noqa: E402
from stages.params import parse_params, set_dotted  # noqa: E402


def recipe_epochs(params: dict, recipe: str) -> int:
    """The epochs a full run of `recipe` trains."""
    return parse_params(set_dotted(json.loads(json.dumps(params)), {"train.recipe": recipe})).train.optim.epochs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archive", type=Path, required=True)
    ap.add_argument("--md5", required=True)
    ap.add_argument("--recipes", nargs="+", required=True, help="the first is the baseline of the ratios")
    ap.add_argument("--epochs", type=int, default=1, help="epochs per timed run")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], help="extra params override KEY=VALUE for every recipe")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    per_epoch: dict[str, list[float]] = {r: [] for r in args.recipes}
    with scratch("bench-") as work:
        copy_project(work, {"data.url": str(args.archive.resolve()), "data.md5": args.md5, **parse_set(args.set)})
        run_stages(work, only=("download", "prepare"))
        base = yaml.safe_load((work / "params.yaml").read_text())
        full_epochs = {r: recipe_epochs(base, r) for r in args.recipes}
        for round_ in range(args.rounds):
            for recipe in args.recipes:
                params = set_dotted(json.loads(json.dumps(base)), {"train.recipe": recipe,
                                                                    "train.optim.epochs": args.epochs})
                (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
                run_stages(work, only=("train",))
                seconds = json.loads((work / "metrics/train.json").read_text())["train_seconds"]
                per_epoch[recipe].append(seconds / args.epochs)
                print(f"=== round {round_ + 1} {recipe}: {seconds / args.epochs:.1f} s/epoch", flush=True)
    rows = []
    for recipe in args.recipes:
        median = statistics.median(per_epoch[recipe])
        rows.append({"recipe": recipe, "seconds_per_epoch": per_epoch[recipe], "median_seconds_per_epoch": median,
                     "epochs": full_epochs[recipe], "projected_train_seconds": median * full_epochs[recipe]})
    for row in rows:
        row["ratio_to_first"] = row["projected_train_seconds"] / rows[0]["projected_train_seconds"]
    summary = {"machine": machine(), "commit": commit(), "epochs_per_run": args.epochs, "rounds": args.rounds,
               "overrides": parse_set(args.set), "recipes": rows}
    print(json.dumps(summary, indent=2))
    for row in rows:
        print(f"{row['recipe']}: {row['median_seconds_per_epoch']:.1f} s/epoch x {row['epochs']} epochs = "
              f"{row['projected_train_seconds']:.0f} s, {row['ratio_to_first']:.2f}x {rows[0]['recipe']}")
    print(f"on {summary['machine']}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
