"""Training time of several recipes on the same machine and data, in one invocation, with their ratio.

Runs the train stage's command (no DVC needed) for each recipe in turn, `--rounds`
times interleaved (A B A B ...) so that a change in machine load hits every recipe
alike, each for `--epochs` epochs, and takes the median seconds per epoch of the
train stage's own timing (train.json's train_seconds: the epochs only, no process
start or data loading). A full run's time is that times the recipe's epochs: every
epoch does the same work, so a shortened run measures the same per-epoch time.
Prints each recipe's projected training time and its ratio to the first one.

--airbench 93 (or 94) adds airbench's own code to each round: the installed package's train93
through benchmarks/airbench_runs.py --cpu (fp32 on the CPU, its own timer around training), for
the same --epochs, projected to its own epochs (11 for train93). For the same precision on a CPU
with native bf16, add `--set train.numerics.precision=fp32` (the recipes would take bf16 there).

A --recipes entry may carry overrides of its own after `@`, e.g. `cpu@train.model.activation=gelu@train.optim.epochs=11`:
that recipe with those values, its full epochs taken from them, so that variants of one recipe time side by side.

    python benchmarks/recipe_time.py --archive /path/cifar-10-python.tar.gz --md5 182e9d6f9f54ceeea150cb85e6c574de \
        --recipes resnet-cpu cpu [--airbench 93] [--epochs 1] [--rounds 2] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.runner import ROOT, commit, copy_project, machine, parse_set, run_stages, scratch  # noqa: E402
from stages.params import parse_params, set_dotted  # noqa: E402


def recipe_spec(spec: str) -> dict:
    """The params overrides of a --recipes entry: NAME, or NAME@KEY=VALUE@KEY=VALUE... (values read as YAML)."""
    name, *sets = spec.split("@")
    if not name:
        raise SystemExit(f"recipe_time: --recipes {spec!r}: expected NAME or NAME@KEY=VALUE..., "
                         "e.g. cpu@train.optim.epochs=11")
    try:
        return {"train.recipe": name, **parse_set(sets)}
    except SystemExit:
        raise SystemExit(f"recipe_time: --recipes {spec!r}: each part after '@' must be KEY=VALUE, "
                         "e.g. cpu@train.optim.epochs=11") from None


def recipe_params(params: dict, spec: str, extra: dict | None = None) -> dict:
    """`params` with the --recipes entry `spec`, then the dotted overrides `extra`, applied, as a new dict."""
    return set_dotted(json.loads(json.dumps(params)), {**recipe_spec(spec), **(extra or {})})


def recipe_epochs(params: dict, spec: str) -> int:
    """The epochs a full run of the --recipes entry `spec` trains."""
    return parse_params(recipe_params(params, spec)).train.optim.epochs


def airbench_command(variant: str, epochs: int, seed: int, out: Path) -> list[str]:
    """airbench_runs.py's command for one timed run of airbench's own train<variant> on the CPU."""
    return [sys.executable, str(ROOT / "benchmarks/airbench_runs.py"), "--cpu", "--variant", variant,
            "--epochs", str(epochs), "--seeds", str(seed), "--json", str(out)]


def airbench_seconds_per_epoch(report: dict) -> float:
    """Training seconds per epoch of airbench_runs.py's report of one run (its --epochs)."""
    (run,) = report["runs"]
    return run["train_seconds"] / report["epochs"]


def airbench_epochs(variant: str) -> float:
    """The epochs of a full run of airbench's train<variant> (its hyp's train_epochs)."""
    import airbench

    from benchmarks.airbench_runs import variant as airbench_variant

    return airbench_variant(airbench, variant)[2]["opt"]["train_epochs"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archive", type=Path, required=True)
    ap.add_argument("--md5", required=True)
    ap.add_argument("--recipes", nargs="+", required=True, help="the first is the baseline of the ratios; "
                    "NAME@KEY=VALUE@... sets values for that entry only")
    ap.add_argument("--epochs", type=int, default=1, help="epochs per timed run")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], help="extra params override KEY=VALUE for every recipe")
    ap.add_argument("--airbench", choices=("93", "94"), help="also time airbench's own train93 or train94 "
                    "(the installed package, on the CPU in fp32)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    own = f"airbench{args.airbench} (its own code, fp32)" if args.airbench else None
    per_epoch: dict[str, list[float]] = {r: [] for r in [*args.recipes, *([own] if own else [])]}
    with scratch("bench-") as work:
        copy_project(work, {"data.url": str(args.archive.resolve()), "data.md5": args.md5, **parse_set(args.set)})
        run_stages(work, only=("download", "prepare"))
        base = yaml.safe_load((work / "params.yaml").read_text())
        full_epochs = {r: recipe_epochs(base, r) for r in args.recipes}
        if own:
            from benchmarks.airbench_runs import write_airbench_data

            write_airbench_data(args.archive, work / "airbench/cifar10")
            full_epochs[own] = airbench_epochs(args.airbench)
        for round_ in range(args.rounds):
            for recipe in args.recipes:
                params = recipe_params(base, recipe, {"train.optim.epochs": args.epochs})
                (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
                run_stages(work, only=("train",))
                seconds = json.loads((work / "metrics/train.json").read_text())["train_seconds"]
                per_epoch[recipe].append(seconds / args.epochs)
                print(f"=== round {round_ + 1} {recipe}: {seconds / args.epochs:.1f} s/epoch", flush=True)
            if own:  # airbench's CifarLoader reads ./cifar10; seed 0 for every round, as the recipes' seed
                report = work / "airbench/runs.json"
                code = subprocess.run(airbench_command(args.airbench, args.epochs, 0, report),
                                      cwd=work / "airbench").returncode
                if code:
                    raise SystemExit(f"recipe_time: airbench_runs.py --variant {args.airbench} failed with exit "
                                     f"code {code} (its output is above)")
                per_epoch[own].append(airbench_seconds_per_epoch(json.loads(report.read_text())))
                print(f"=== round {round_ + 1} {own}: {per_epoch[own][-1]:.1f} s/epoch", flush=True)
    rows = []
    for recipe in per_epoch:
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
