"""Summarize a seed sweep: how far accuracy moves when only the seed changes.

    dvc exp run --queue -S 'train.numerics.seed=range(0,5)' [-S train.optim.lr=0.01 ...]; dvc exp run --run-all
    python -m stages.seeds                               # runs `dvc exp show --json` itself
    dvc exp show --json -A | python -m stages.seeds -    # or reads its output (a file, or - for stdin)

Groups the finished experiments that set the seed by their params other than the seed
and prints, as Markdown, per group: the runs, the seeds, and the mean, sample standard
deviation and 95% t-interval of the mean of test accuracy, overall and per class.
Experiments that leave the seed null are left out and named: they ran with their
recipe's seed, most likely one that the sweep repeats.
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .common import StageError, default_path, run_stage
from .stats import mean_interval


@dataclass(frozen=True)
class Run:
    name: str  # the experiment's name, e.g. "mural-says"
    params: dict[str, Any]  # flat dotted keys: {"train.optim.lr": 0.01, ...}
    metrics: dict[str, float]  # flat dotted keys: {"accuracy": 0.34, "per_class_accuracy.cat": 0.2, ...}


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}, as `dvc metrics diff` and `dvc exp show` name nested keys."""
    if not isinstance(tree, dict):
        return {prefix: tuple(tree) if isinstance(tree, list) else tree}
    return {k: v for key, value in tree.items()
            for k, v in flatten(value, f"{prefix}.{key}" if prefix else key).items()}


def finished_runs(shown: Any, metrics_file: str, derived: tuple[str, ...] = ()) -> list[Run]:
    """The experiments in `dvc exp show --json` output (DVC 3: a list of baseline revisions, each with
    "experiments": [{"revs": [state], "executor": {"state": ...}}]) that finished with `metrics_file`.
    Baseline commits and the workspace are left out: they repeat one of the experiments. Params files
    in `derived` are left out too: the train stage's effective values repeat params.yaml's, seed and all."""
    if not isinstance(shown, list):
        raise StageError(f"expected the JSON list that `dvc exp show --json` prints, got {type(shown).__name__}")
    runs = []
    for baseline in shown:
        for exp_range in (baseline.get("experiments") or []) if isinstance(baseline, dict) else []:
            state = (exp_range.get("executor") or {}).get("state")
            if state in ("queued", "running", "failed"):
                continue
            for rev in exp_range.get("revs") or []:
                data = rev.get("data") or {}
                metrics = ((data.get("metrics") or {}).get(metrics_file) or {}).get("data")
                if rev.get("error") or not isinstance(metrics, dict):
                    continue
                params = {(k if file == "params.yaml" else f"{file}:{k}"): v
                          for file, result in (data.get("params") or {}).items() if file not in derived
                          for k, v in flatten((result or {}).get("data") or {}).items()}
                runs.append(Run(rev.get("name") or exp_range.get("name") or rev.get("rev", "?")[:7], params,
                                flatten(metrics)))
    return runs


def group_by_params(runs: list[Run], seed_key: str) -> dict[str, list[Run]]:
    """Runs grouped by every param except the seed, labelled by the params that tell the groups apart."""
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        groups.setdefault(tuple(sorted((k, v) for k, v in run.params.items() if k != seed_key)), []).append(run)
    keys = sorted({k for key in groups for k, _ in key})
    differing = [k for k in keys if len({dict(key).get(k, "(absent)") for key in groups}) > 1]
    return {", ".join(f"{k}={show(dict(key).get(k))}" for k in differing) or "all runs": members
            for key, members in groups.items()}


def show(value: Any) -> str:
    return "null" if value is None else json.dumps(list(value)) if isinstance(value, tuple) else str(value)


def values_of(runs: list[Run], key: str) -> list[float]:
    return [r.metrics[key] for r in runs if isinstance(r.metrics.get(key), (int, float))]


def summary_cell(values: list[float]) -> tuple[str, str, str]:
    """(mean, sd, "low - high") with 4 decimals; "-" where one run cannot give a spread."""
    mean, sd, low, high = mean_interval(values)
    if math.isnan(sd):
        return f"{mean:.4f}", "-", "-"
    return f"{mean:.4f}", f"{sd:.4f}", f"{low:.4f} - {high:.4f}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join("| " + " | ".join(cells) + " |" for cells in [header, ["---"] * len(header), *rows])


def summarize(groups: dict[str, list[Run]], metric: str, seed_key: str) -> str:
    """Markdown: one row per group for `metric`, then one row per class of `per_class_<metric>`."""
    overall = []
    for label, runs in groups.items():
        values = values_of(runs, metric)
        if not values:
            raise StageError(f"no run in group {label!r} has a numeric {metric!r} metric")
        seeds = ", ".join(sorted((show(r.params.get(seed_key)) for r in runs), key=lambda s: (len(s), s)))
        overall.append([label, str(len(values)), seeds, *summary_cell(values)])
    text = markdown_table(["runs with", "n", seed_key, f"{metric} mean", "sd", "95% interval of the mean"], overall)
    prefix = f"per_class_{metric}."
    classes = list(dict.fromkeys(k[len(prefix):] for runs in groups.values() for r in runs for k in r.metrics
                                 if k.startswith(prefix)))
    if classes:
        rows = []
        for name in classes:
            cells = []
            for runs in groups.values():
                values = values_of(runs, prefix + name)
                mean, sd, interval = summary_cell(values) if values else ("-", "-", "-")
                cells.append(f"{mean} ± {sd} ({interval})" if sd != "-" else mean)
            rows.append([name, *cells])
        text += (f"\n\nPer class, {metric}: mean ± sd (95% interval of the mean)\n\n"
                 + markdown_table(["class", *groups], rows))
    return text


def read_shown(source: str | None) -> Any:
    """`dvc exp show --json` output from a file, stdin ("-"), or by running it here (None)."""
    try:
        if source == "-":
            return json.load(sys.stdin)
        if source is not None:
            with open(source, encoding="utf-8") as f:
                return json.load(f)
    except OSError as err:
        raise StageError(f"{source}: cannot read ({err.strerror})") from None
    except json.JSONDecodeError as err:
        raise StageError(f"{source if source != '-' else 'stdin'}: not the JSON of `dvc exp show --json` ({err})") \
            from None
    result = subprocess.run(["dvc", "exp", "show", "--json"], capture_output=True, text=True)
    if result.returncode != 0:
        raise StageError(f"`dvc exp show --json` failed: {result.stderr.strip()}")
    return json.loads(result.stdout)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("shown", nargs="?", help="a file with `dvc exp show --json` output, or - for stdin; "
                                             "default: run `dvc exp show --json` here")
    ap.add_argument("--metrics", type=Path, default=default_path("metrics"), help="the metrics file to read")
    ap.add_argument("--metric", default="accuracy", help="the metric; per class: per_class_<metric>")
    ap.add_argument("--seed-key", default="train.numerics.seed", help="the param that varies within a group")
    args = ap.parse_args(argv)
    if args.metrics is None:
        raise StageError("no dvc.yaml here to take the metrics path from; pass --metrics")
    derived = tuple(p.as_posix() for p in [default_path("train_params")] if p is not None)
    runs = finished_runs(read_shown(args.shown), args.metrics.as_posix(), derived)
    if not runs:
        raise StageError(f"no finished experiment with {args.metrics} in the input; run a sweep first, e.g. "
                         "dvc exp run --queue -S 'train.numerics.seed=range(0,5)' && dvc exp run --run-all")
    # An experiment that leaves the seed null ran with its recipe's seed, most likely one the sweep repeats.
    unseeded = [r.name for r in runs if r.params.get(args.seed_key) is None]
    runs = [r for r in runs if r.params.get(args.seed_key) is not None]
    if not runs:
        raise StageError(f"no experiment sets {args.seed_key!r}; pass the param the sweep varies as --seed-key")
    groups = group_by_params(runs, args.seed_key)
    print(f"{len(runs)} runs in {len(groups)} group(s); {args.metrics}, grouped by every param but {args.seed_key}")
    if unseeded:
        print(f"left out {len(unseeded)} experiment(s) that do not set {args.seed_key}: {', '.join(unseeded)}")
    print()
    print(summarize(groups, args.metric, args.seed_key))


if __name__ == "__main__":
    run_stage("seeds", main)
