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
and an epoch with it frozen skips a convolution's input gradient (about 10% of the step); with
`train.optim.freeze_last` its first conv groups stop training in its last epochs, and backward
stops before them; with `train.augment.early_crop` its first epochs see smaller images. Each round
times one run of every kind of epoch a full run has (a run whose every epoch is of that kind:
`whiten_bias_epochs` 0 or all, `freeze_last` all for that many groups, `early_crop_epochs` 0 or
all), and the projection adds them in the run's own proportion.

A --recipes entry may carry overrides of its own after `@`, e.g.
`cpu@train.model.activation=gelu@train.optim.epochs=11`:
that recipe with those values, its full epochs taken from them, so that variants of one recipe time side by side.

    python benchmarks/recipe_time.py --archive /path/cifar-10-python.tar.gz --md5 182e9d6f9f54ceeea150cb85e6c574de \
        --recipes resnet-cpu cpu [--airbench 93] [--epochs 1] [--rounds 2] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import math
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


# An epoch's kind: (the whitening bias trains, conv groups frozen by freeze_last, on early_crop's windows)
Kind = tuple[bool, int, bool]


def epoch_kinds(epochs: float, bias_epochs: float, freeze_last: list[int] | tuple[int, ...] = (),
                crop_epochs: int = 0) -> dict[Kind, float]:
    """How many epochs of a full run are of each kind (a fractional last epoch, as train94's 9.9, counts its
    fraction): the whitening bias trains in the first bias_epochs, group k is frozen in the last
    freeze_last[k], and the first crop_epochs train on early_crop's windows."""
    kinds: dict[Kind, float] = {}
    for epoch in range(1, math.ceil(epochs) + 1):
        kind = (epoch <= bias_epochs, sum(epoch > epochs - last for last in freeze_last), epoch <= crop_epochs)
        kinds[kind] = kinds.get(kind, 0) + min(1.0, epochs - (epoch - 1))
    return kinds


def kind_name(kind: Kind, only: bool = False) -> str:
    """How an epoch of `kind` is logged; `only`: the run has no other kind (e.g. no whitening bias at all)."""
    if only:
        return "every epoch"
    bias, groups, cropped = kind
    parts = ([] if bias else ["whitening bias frozen"]) + ([f"{groups} conv group(s) frozen"] if groups else [])
    if cropped:
        parts = (parts or ["whitening bias trains"]) + ["on early_crop windows"]
    return ", ".join(parts) or "whitening bias trains"


def recipe_epochs(params: dict, spec: str) -> dict[Kind, float]:
    """The epochs of each kind in a full run of the --recipes entry `spec` (one kind, the bias training,
    where the recipe has no whitening bias to freeze and no group to freeze)."""
    train = parse_params(recipe_params(params, spec)).train
    whitened = train.model.name == "airbench" and train.model.whiten
    o = train.optim
    return epoch_kinds(o.epochs, o.whiten_bias_epochs if whitened else o.epochs, o.freeze_last,
                       train.augment.early_crop_epochs)


def projected_seconds(medians: dict[Kind, float], kinds: dict[Kind, float]) -> float:
    """A full run's training seconds: each kind's seconds per epoch times its epochs in the run."""
    return sum(medians[kind] * count for kind, count in kinds.items())


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


def kind_overrides(epochs: int, kind: Kind) -> dict:
    """The train.* values that make every one of `epochs` epochs of `kind`. freeze_anneal is turned off:
    it sets the lr of groups that train and then freeze, not the work of an epoch, and a run frozen
    throughout has no such group. An epoch off early_crop's windows turns early_crop off."""
    bias, groups, cropped = kind
    return {"train.optim.epochs": epochs, "train.optim.whiten_bias_epochs": epochs if bias else 0,
            "train.optim.freeze_last": [epochs] * groups, "train.optim.freeze_anneal": False,
            "train.augment.early_crop_epochs": epochs if cropped else 0,
            **({} if cropped else {"train.augment.early_crop": 0})}


def time_recipe(work: Path, base: dict, spec: str, epochs: int, kind: Kind) -> float:
    """Seconds per epoch of the train stage's own timing, for `epochs` epochs of the --recipes entry `spec`,
    every one of them of `kind`."""
    extra = kind_overrides(epochs, kind)
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


def summary_row(name: str, seconds: dict[Kind, list[float]], kinds: dict[Kind, float]) -> dict:
    """One code's per-kind medians and projected full-run seconds."""
    medians = {kind: statistics.median(seconds[kind]) for kind in kinds}
    return {"recipe": name, "epochs": sum(kinds.values()),
            "kinds": [{"kind": kind_name(kind, len(kinds) == 1), "epochs": count, "seconds_per_epoch": seconds[kind],
                       "median_seconds_per_epoch": medians[kind]} for kind, count in kinds.items()],
            "projected_train_seconds": projected_seconds(medians, kinds)}


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
    with scratch("bench-") as work:
        copy_project(work, {"data.url": str(args.archive.resolve()), "data.md5": args.md5, **parse_set(args.set)})
        run_stages(work, only=("download", "prepare"))
        base = yaml.safe_load((work / "params.yaml").read_text())
        kinds = {r: recipe_epochs(base, r) for r in args.recipes}
        if own:
            from benchmarks.airbench_runs import write_airbench_data

            write_airbench_data(args.archive, work / "airbench/cifar10")
            kinds[own] = epoch_kinds(*airbench_epochs(args.airbench))
        seconds: dict[str, dict[Kind, list[float]]] = {name: {kind: [] for kind in kinds[name]} for name in names}
        for round_ in range(args.rounds):
            for name in names:
                for kind in kinds[name]:
                    took = (time_airbench(work, args.airbench, args.epochs, frozen=not kind[0]) if name == own
                            else time_recipe(work, base, name, args.epochs, kind))
                    seconds[name][kind].append(took)
                    print(f"=== round {round_ + 1} {name}, {kind_name(kind, len(kinds[name]) == 1)}: "
                          f"{took:.1f} s/epoch", flush=True)
    rows = [summary_row(name, seconds[name], kinds[name]) for name in names]
    for row in rows:
        row["ratio_to_first"] = row["projected_train_seconds"] / rows[0]["projected_train_seconds"]
    summary = {"machine": machine(), "commit": commit(), "epochs_per_run": args.epochs, "rounds": args.rounds,
               "overrides": parse_set(args.set), "recipes": rows}
    print(json.dumps(summary, indent=2))
    for row in rows:
        per_epoch = " + ".join(f"{k['median_seconds_per_epoch']:.1f} s/epoch x {k['epochs']:g} ({k['kind']})"
                               for k in row["kinds"])
        print(f"{row['recipe']}: {per_epoch} = {row['projected_train_seconds']:.0f} s, "
              f"{row['ratio_to_first']:.2f}x {rows[0]['recipe']}")
    print(f"on {summary['machine']}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
