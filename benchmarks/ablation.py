"""Ablation: a base recipe, then one change at a time, each over several seeds, as one table.

Every row runs the train and evaluate stage commands (no DVC needed) on the same
prepared data; the base row's seeds give the noise floor (their spread), against
which each change's mean difference is read. A change is NAME=KEY=VALUE[,KEY=VALUE...]
of dotted params overrides. A change of evaluate.* keys only evaluates the base row's
trained models again (same seeds) instead of training them once more.

    python benchmarks/ablation.py --archive /path/cifar-10-python.tar.gz --md5 08a617c30ade2f66888e28d9607c1249 \
        --base resnet-cpu --base-seeds 0 1 2 --seeds 0 1 \
        --change flip-alternate=train.augment.flip=alternate --change tta-airbench=evaluate.tta=airbench \
        [--set train.optim.epochs=5] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.runner import commit, copy_project, machine, parse_set, results, run_stages, scratch  # noqa: E402
from stages.common import default_path  # noqa: E402
from stages.params import set_dotted  # noqa: E402

TRAINED = ("model", "model_meta", "train_metrics")  # dvc.yaml paths a trained run leaves for evaluate


def parse_change(text: str) -> tuple[str, dict]:
    name, _, assignments = text.partition("=")
    if not name or not assignments:
        raise SystemExit(f"--change {text!r}: expected NAME=KEY=VALUE[,KEY=VALUE...]")
    return name, parse_set(assignments.split(","))


def evaluate_only(overrides: dict) -> bool:
    return bool(overrides) and all(key.startswith("evaluate.") for key in overrides)


def keep_trained(work: Path, store: Path, restore: bool = False) -> None:
    """Copy the train stage's outputs from the work folder to `store`, or back with restore=True."""
    for key in TRAINED:
        path = default_path(key, work / "dvc.yaml")
        src, dst = (store / path, work / path) if restore else (work / path, store / path)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)


def spread(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archive", type=Path, required=True)
    ap.add_argument("--md5", required=True)
    ap.add_argument("--base", required=True, help="the recipe every change starts from")
    ap.add_argument("--base-seeds", type=int, nargs="+", default=[0, 1, 2], help="the noise floor's seeds")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="seeds of each change")
    ap.add_argument("--change", action="append", default=[], help="NAME=KEY=VALUE[,KEY=VALUE...]")
    ap.add_argument("--set", action="append", default=[], help="override applied to every row")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rows = [("base", {}, args.base_seeds)] + [(*parse_change(c), args.seeds) for c in args.change]

    table = []
    with scratch("ablation-") as work:
        copy_project(work, {"data.url": str(args.archive.resolve()), "data.md5": args.md5,
                            "train.recipe": args.base, **parse_set(args.set)})
        run_stages(work, only=("download", "prepare"))
        base = yaml.safe_load((work / "params.yaml").read_text())
        for name, overrides, seeds in rows:
            runs, reused = [], []
            for seed in seeds:
                params = set_dotted(json.loads(json.dumps(base)), {**overrides, "train.numerics.seed": seed})
                (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
                trained = work / "trained" / f"seed-{seed}"  # the base row's run of this seed
                reused.append(evaluate_only(overrides) and trained.is_dir())
                if reused[-1]:
                    keep_trained(work, trained, restore=True)
                    run_stages(work, only=("evaluate",))
                else:
                    run_stages(work, only=("train", "evaluate"))
                    if not overrides:
                        keep_trained(work, trained)
                runs.append(results(work))
                print(f"=== {name} seed {seed}: {runs[-1]['test_accuracy']:.2%}, "
                      f"{runs[-1]['train_seconds']:.0f}s", flush=True)
            accuracies = [r["test_accuracy"] for r in runs]
            table.append({"change": name, "overrides": overrides, "seeds": seeds, "accuracies": accuracies,
                          "reused_base_training": reused,
                          "mean": statistics.mean(accuracies), "sd": spread(accuracies),
                          "mean_train_seconds": statistics.mean(r["train_seconds"] for r in runs)})
    for row in table:
        row["delta"] = row["mean"] - table[0]["mean"]
    summary = {"machine": machine(), "commit": commit(), "base": args.base, "overrides": parse_set(args.set),
               "rows": table}
    print(json.dumps(summary, indent=2))
    print(f"\n| change | seeds | mean | sd | vs base | train s |\n|---|---|---|---|---|---|")
    for row in table:
        print(f"| {row['change']} | {len(row['seeds'])} | {row['mean']:.2%} | {row['sd']:.2%} | "
              f"{100 * row['delta']:+.2f} pt | {row['mean_train_seconds']:.0f} |")
    print(f"on {summary['machine']}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
