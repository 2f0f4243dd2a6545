"""Quality gate for CI (and for you): fail when test accuracy is too low, dropped too far, or
dropped by more than the test set's noise explains.

    python -m stages.gate [--metrics metrics/metrics.json] [--baseline main-metrics.json]
                          [--confusion metrics/confusion.csv] [--baseline-confusion main-confusion.csv]

Thresholds come from params.yaml's `gate` section: `min_accuracy` (fraction) and
`max_drop` (fraction, against the baseline, e.g. metrics.json from the main
branch; skipped without --baseline). With --baseline-confusion, the paired test:
both models scored the same test images in the same order, so McNemar's exact test
on the images that only one of them got right tells whether the change is real,
overall and per class (Holm's correction over the classes); a significant drop at
`gate.alpha` fails. Prints one line per check; exits 1 with the reasons when any
check fails.
"""
from __future__ import annotations

import argparse
import csv
import json
from dataclasses import dataclass
from pathlib import Path

from .common import StageError, default_path, require_file, run_stage
from .params import load_params
from .stats import holm_adjust, mcnemar_exact_p


def read_accuracy(path: Path) -> float:
    try:
        with open(require_file(path, "metrics file"), encoding="utf-8") as f:
            value = json.load(f)["accuracy"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise StageError(f"{path}: expected JSON with a numeric 'accuracy' ({type(err).__name__}: {err})") from None
    if not isinstance(value, (int, float)):
        raise StageError(f"{path}: 'accuracy' is {value!r}, not a number")
    return float(value)


def read_confusion(path: Path) -> tuple[list[str], list[str]]:
    """(actual, predicted) class names, one per test image in file order, from evaluate's confusion CSV."""
    with open(require_file(path, "confusion file"), encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        if not {"actual", "predicted"} <= set(reader.fieldnames or []):
            raise StageError(f"{path}: expected a CSV with columns actual,predicted (as evaluate writes), "
                             f"got columns {reader.fieldnames}")
        rows = [(row["actual"], row["predicted"]) for row in reader]
    if not rows:
        raise StageError(f"{path}: no test images in the confusion file")
    actual, predicted = (list(column) for column in zip(*rows))
    return actual, predicted


def check(accuracy: float, baseline: float | None, min_accuracy: float, max_drop: float) -> list[tuple[bool, str]]:
    """(passed, line) for each check that applies."""
    results = [(accuracy >= min_accuracy,
                f"accuracy {accuracy:.4f} {'>=' if accuracy >= min_accuracy else '<'} "
                f"gate.min_accuracy {min_accuracy:.4f}")]
    if baseline is not None:
        drop = baseline - accuracy
        results.append((drop <= max_drop, f"accuracy change {accuracy - baseline:+.4f} against baseline {baseline:.4f} "
                                          f"({'within' if drop <= max_drop else 'beyond'} gate.max_drop {max_drop:.4f})"))
    return results


def mismatched_test_sets(baseline_actual: list[str], actual: list[str]) -> str | None:
    """Why two confusion files do not list the same test images in the same order; None when they do."""
    if len(baseline_actual) != len(actual):
        return f"the baseline has {len(baseline_actual)} test images, this run {len(actual)}"
    for row, (old, new) in enumerate(zip(baseline_actual, actual), start=2):  # row 1 is the header
        if old != new:
            return f"row {row} is {old!r} in the baseline but {new!r} here"
    return None


@dataclass(frozen=True)
class Paired:
    """One McNemar comparison: `lost` images right before and wrong now, `gained` the reverse."""

    name: str
    images: int
    before: float  # baseline accuracy on these images
    after: float
    lost: int
    gained: int
    p: float  # two-sided exact McNemar p
    p_adjusted: float  # after Holm's correction (= p for the overall test)


def paired_comparisons(actual: list[str], before: list[str], after: list[str]) -> list[Paired]:
    """The overall test, then one per class (sorted by name; CIFAR-10's order) with Holm-adjusted p."""
    right_before = [a == p for a, p in zip(actual, before)]
    right_after = [a == p for a, p in zip(actual, after)]

    def compare(name: str, rows: list[int]) -> Paired:
        lost = sum(right_before[i] and not right_after[i] for i in rows)
        gained = sum(right_after[i] and not right_before[i] for i in rows)
        p = mcnemar_exact_p(lost, gained)
        return Paired(name, len(rows), sum(right_before[i] for i in rows) / len(rows),
                      sum(right_after[i] for i in rows) / len(rows), lost, gained, p, p)

    overall = compare("overall", list(range(len(actual))))
    classes = [compare(c, [i for i, a in enumerate(actual) if a == c]) for c in sorted(set(actual))]
    adjusted = holm_adjust([c.p for c in classes])
    return [overall] + [Paired(**{**vars(c), "p_adjusted": q}) for c, q in zip(classes, adjusted)]


def paired_check(result: Paired, alpha: float) -> tuple[bool, str]:
    """Fail on a drop whose (adjusted) p is at most alpha; a significant gain passes."""
    significant = result.p_adjusted <= alpha
    verdict = ("significant drop" if result.lost > result.gained else "significant gain") if significant \
        else "not significant"
    p_text = f"p={result.p:.4g}" + (f", Holm p={result.p_adjusted:.4g}" if result.name != "overall" else "")
    line = (f"paired test, {result.name} ({result.images} images): accuracy {result.before:.4f} -> {result.after:.4f} "
            f"({result.after - result.before:+.4f}); right only before {result.lost}, right only now "
            f"{result.gained}; McNemar {p_text} ({verdict} at gate.alpha {alpha:g})")
    return not (significant and result.lost > result.gained), line


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--metrics", type=Path, default=default_path("metrics"))
    ap.add_argument("--baseline", type=Path, help="metrics.json to compare with (e.g. from the main branch)")
    ap.add_argument("--confusion", type=Path, default=default_path("confusion"),
                    help="this run's confusion CSV (actual,predicted per test image)")
    ap.add_argument("--baseline-confusion", type=Path,
                    help="the baseline's confusion CSV, for the paired test (same test images, same order)")
    args = ap.parse_args(argv)
    if args.metrics is None:
        raise StageError("no dvc.yaml here to take the metrics path from; pass --metrics")
    g = load_params(args.params).gate

    baseline = read_accuracy(args.baseline) if args.baseline else None
    results = check(read_accuracy(args.metrics), baseline, g.min_accuracy, g.max_drop)
    notes = []
    if args.baseline_confusion is None:
        notes.append("SKIP paired test: no --baseline-confusion given")
    else:
        if args.confusion is None:
            raise StageError("no dvc.yaml here to take the confusion path from; pass --confusion")
        base_actual, base_predicted = read_confusion(args.baseline_confusion)
        actual, predicted = read_confusion(args.confusion)
        mismatch = mismatched_test_sets(base_actual, actual)
        if mismatch:
            notes.append(f"SKIP paired test: {args.baseline_confusion} and {args.confusion} list different test "
                         f"images ({mismatch}; other prepare params or other data?), so no image is paired")
        else:
            results += [paired_check(r, g.alpha) for r in paired_comparisons(actual, base_predicted, predicted)]
    for passed, line in results:
        print(f"{'PASS' if passed else 'FAIL'} {line}")
    for line in notes:
        print(line)
    failed = [line for passed, line in results if not passed]
    if failed:
        raise StageError("; ".join(failed))


if __name__ == "__main__":
    run_stage("gate", main)
