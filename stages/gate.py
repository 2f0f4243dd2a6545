"""Quality gate for CI (and for you): fail when test accuracy is too low or dropped too far.

    python -m stages.gate [--metrics metrics/metrics.json] [--baseline main-metrics.json]

Thresholds come from params.yaml's `gate` section: `min_accuracy` (fraction) and
`max_drop` (fraction, against the baseline, e.g. metrics.json from the main
branch; skipped without --baseline). Prints one line per check; exits 1 with
the reasons when any check fails.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from .common import StageError, default_path, require_file, run_stage
from .params import load_params


def read_accuracy(path: Path) -> float:
    try:
        with open(require_file(path, "metrics file"), encoding="utf-8") as f:
            value = json.load(f)["accuracy"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise StageError(f"{path}: expected JSON with a numeric 'accuracy' ({type(err).__name__}: {err})") from None
    if not isinstance(value, (int, float)):
        raise StageError(f"{path}: 'accuracy' is {value!r}, not a number")
    return float(value)


def check(accuracy: float, baseline: float | None, min_accuracy: float, max_drop: float) -> list[tuple[bool, str]]:
    """(passed, line) for each check that applies."""
    results = [(accuracy >= min_accuracy,
                f"accuracy {accuracy:.4f} {'>=' if accuracy >= min_accuracy else '<'} "
                f"gate.min_accuracy {min_accuracy:.4f}")]
    if baseline is not None:
        drop = baseline - accuracy
        results.append((drop <= max_drop, f"accuracy change {-drop:+.4f} against baseline {baseline:.4f} "
                                          f"({'within' if drop <= max_drop else 'beyond'} gate.max_drop {max_drop:.4f})"))
    return results


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--metrics", type=Path, default=default_path("metrics"))
    ap.add_argument("--baseline", type=Path, help="metrics.json to compare with (e.g. from the main branch)")
    args = ap.parse_args(argv)
    if args.metrics is None:
        raise StageError("no dvc.yaml here to take the metrics path from; pass --metrics")
    g = load_params(args.params).gate

    baseline = read_accuracy(args.baseline) if args.baseline else None
    results = check(read_accuracy(args.metrics), baseline, g.min_accuracy, g.max_drop)
    for passed, line in results:
        print(f"{'PASS' if passed else 'FAIL'} {line}")
    failed = [line for passed, line in results if not passed]
    if failed:
        raise StageError("; ".join(failed))


if __name__ == "__main__":
    run_stage("gate", main)
