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

An airbench-style run trains its whitening bias in its first epochs only (3 of 11 for train93),
and an epoch with it frozen skips a convolution's input gradient (about 10% of the step). Where a
run has both kinds of epoch, each round times one epoch of each kind (`whiten_bias_epochs` 0 for
the frozen one), and the projection adds them in the run's own proportion.

A --recipes entry may carry overrides of its own after `@`, e.g.
`cpu@train.model.activation=gelu@train.optim.epochs=11`:
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


def recipe_epochs(params: dict, spec: str) -> tuple[int, int]:
    """(epochs, epochs in which the whitening bias trains) of a full run of the --recipes entry `spec`;
    the second is the epochs themselves where the recipe has no whitening bias to freeze."""
    train = parse_params(recipe_params(params, spec)).train
    whitened = train.model.name == "airbench" and train.model.whiten
    epochs = train.optim.epochs
    return epochs, min(train.optim.whiten_bias_epochs, epochs) if whitened else epochs


def projected_seconds(trains: float, frozen: float | None, epochs: float, bias_epochs: float) -> float:
    """A full run's training seconds from the seconds of an epoch in which the whitening bias trains and of
    one in which it is frozen (None: not timed, every epoch as the first): bias_epochs of the first kind,
    the rest of the second."""
    bias_epochs = min(bias_epochs, epochs)
    return trains * bias_epochs + (trains if frozen is None else frozen) * (epochs - bias_epochs)


def airbench_command(variant: str, epochs: int, seed: int, out: Path, bias_epochs: float | None = None) -> list[str]:
    """airbench_runs.py's command for one timed run of airbench's own train<variant> on the CPU
    (`bias_epochs`: its whitening bias's epochs, default its own)."""
    return [sys.executable, str(ROOT / "benchmarks/airbench_runs.py"), "--cpu", "--variant", variant,
            "--epochs", str(epochs), "--seeds", str(seed), "--json", str(out),
            *(["--whiten-bias-epochs", str(bias_epochs)] if bias_epochs is not None else [])]


def airbench_seconds_per_epoch(report: dict) -> float:
    """Training seconds per epoch of airbench_runs.py's report of one run (its --epochs)."""
    (run,) = report["runs"]
    return run["train_seconds"] / report["epochs"]


def airbench_epochs(variant: str) -> tuple[float, float]:
    """(epochs, epochs in which the whitening bias trains) of a full run of airbench's train<variant> (its hyp's)."""
    import airbench

    from benchmarks.airbench_runs import variant as airbench_variant

    opt = airbench_variant(airbench, variant)[2]["opt"]
    return opt["train_epochs"], opt["whiten_bias_epochs"]


def time_recipe(work: Path, base: dict, spec: str, epochs: int, frozen: bool) -> float:
    """Seconds per epoch of the train stage's own timing, for `epochs` epochs of the --recipes entry `spec`
    (`frozen`: with the whitening bias frozen throughout)."""
    extra = {"train.optim.epochs": epochs, **({"train.optim.whiten_bias_epochs": 0} if frozen else {})}
    (work / "params.yaml").write_text(yaml.safe_dump(recipe_params(base, spec, extra), sort_keys=False))
    run_stages(work, only=("train",))
    return json.loads((work / "metrics/train.json").read_text())["train_seconds"] / epochs


def time_airbench(work: Path, variant: str, epochs: int, frozen: bool) -> float:
    """Seconds per epoch of airbench's own train<variant>, by its own timer (seed 0, as the recipes' seed)."""
    report = work / "airbench/runs.json"  # airbench's CifarLoader reads ./cifar10
    code = subprocess.run(airbench_command(variant, epochs, 0, report, 0 if frozen else None),
                          cwd=work / "airbench").returncode
    if code:
        raise SystemExit(f"recipe_time: airbench_runs.py --variant {variant} failed with exit code {code} "
                         "(its output is above)")
    return airbench_seconds_per_epoch(json.loads(report.read_text()))


def summary_row(name: str, trains: list[float], frozen: list[float], epochs: float, bias_epochs: float) -> dict:
    """One code's medians and projected full-run seconds (`frozen` empty: every epoch as the first kind)."""
    median = statistics.median(trains)
    frozen_median = statistics.median(frozen) if frozen else None
    return {"recipe": name, "seconds_per_epoch": trains, "median_seconds_per_epoch": median,
            "frozen_bias_seconds_per_epoch": frozen, "median_frozen_bias_seconds_per_epoch": frozen_median,
            "epochs": epochs, "whiten_bias_epochs": bias_epochs,
            "projected_train_seconds": projected_seconds(median, frozen_median, epochs, bias_epochs)}


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
    names = [*args.recipes, *([own] if own else [])]
    trains: dict[str, list[float]] = {r: [] for r in names}
    frozen: dict[str, list[float]] = {r: [] for r in names}
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
            for name in names:
                epochs, bias_epochs = full_epochs[name]
                for frozen_bias in (False, True) if bias_epochs < epochs else (False,):
                    seconds = (time_airbench(work, args.airbench, args.epochs, frozen_bias) if name == own
                               else time_recipe(work, base, name, args.epochs, frozen_bias))
                    (frozen if frozen_bias else trains)[name].append(seconds)
                    kind = ", whitening bias frozen" if frozen_bias else ""
                    print(f"=== round {round_ + 1} {name}{kind}: {seconds:.1f} s/epoch", flush=True)
    rows = [summary_row(name, trains[name], frozen[name], *full_epochs[name]) for name in names]
    for row in rows:
        row["ratio_to_first"] = row["projected_train_seconds"] / rows[0]["projected_train_seconds"]
    summary = {"machine": machine(), "commit": commit(), "epochs_per_run": args.epochs, "rounds": args.rounds,
               "overrides": parse_set(args.set), "recipes": rows}
    print(json.dumps(summary, indent=2))
    for row in rows:
        per_epoch = f"{row['median_seconds_per_epoch']:.1f} s/epoch"
        if row["median_frozen_bias_seconds_per_epoch"] is not None:
            per_epoch += (f" x {row['whiten_bias_epochs']} + {row['median_frozen_bias_seconds_per_epoch']:.1f} "
                          f"s/epoch with the whitening bias frozen x {row['epochs'] - row['whiten_bias_epochs']:g}")
        else:
            per_epoch += f" x {row['epochs']} epochs"
        print(f"{row['recipe']}: {per_epoch} = {row['projected_train_seconds']:.0f} s, "
              f"{row['ratio_to_first']:.2f}x {rows[0]['recipe']}")
    print(f"on {summary['machine']}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
