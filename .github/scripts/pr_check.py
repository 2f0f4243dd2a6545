"""The CI check of a change: lock check, subset runs of the change and of its base, gate, summary.

    python .github/scripts/pr_check.py --base origin/main --out /tmp/pr-check [-S key=value ...]

Run from the repository root of the checked-out change, with the project installed.
In order:

1. dvc.lock: when the repository commits it, `dvc status` on the committed state,
   before anything runs, must find no stage whose code, params or command changed
   (data that is simply not on this machine does not count). A stale lock fails.
2. The change: the subset overrides (SUBSET, or -S) are written into params.yaml
   and `dvc repro` runs the pipeline.
3. The baseline: the base commit is checked out as a git worktree of the same
   repository, pointed at the same DVC cache (so the archive is not fetched twice and
   the run cache restores any stage whose code and params match), given the same
   overrides and run the same way. No dvc.yaml at the base, a base params.yaml that
   lacks an overridden key, or a failing base run mean "no baseline": reported, the
   drop check skipped, not a failure.
4. The gate (`python -m stages.gate`) on the change's metrics against the baseline's.
5. OUT/summary.md (Markdown for $GITHUB_STEP_SUMMARY): verdict, per-metric and per-class
   values of both runs and which data they ran on (metrics.json's data_official), the
   runs that base and change commit in git (metrics.json, where either holds one), the
   params diff of the two commits (without the overrides), and Mermaid charts; OUT/charts/*.png (matplotlib, the `ci` extra) and OUT/plots/
   (`dvc plots diff` against the baseline run) for the workflow's artifact.

Overrides are set by editing params.yaml rather than `dvc exp run -S`: an older base
that lacks a key must be recognized before it runs, and the two runs then need no
experiment refs. Exit status: 0 passed, 1 failed (stale lock, failed run, gate).
"""
from __future__ import annotations

import argparse
import collections
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# The subset both runs use: 200 training and 100 test images per class, 2 epochs, and an
# accuracy floor that such a short run clears.
SUBSET = ("prepare.train_per_class=200", "prepare.test_per_class=100", "train.optim.epochs=2",
          "gate.min_accuracy=0.25")
# What the summary compares, beside per-class accuracy.
HEADLINE = ("accuracy", "loss", "macro_f1")
# Files kept from each run, side by side in OUT/pr and OUT/baseline (dvc.yaml vars keys).
KEPT = {"metrics": "metrics.json", "confusion": "confusion.csv", "train_log": "train_log.csv"}
# `dvc status` entries that mean the committed dvc.lock does not match the committed stage.
STALE_FLAGS = ("changed command", "changed checksum")
ENV = {**os.environ, "DVC_NO_ANALYTICS": "1"}


class CheckError(RuntimeError):
    """The check cannot go on; the message says why."""


@dataclass
class Report:
    """What the summary shows, filled in as the check goes."""

    lines: list[str] = field(default_factory=list)  # verdict lines, in order
    failures: list[str] = field(default_factory=list)
    sections: list[str] = field(default_factory=list)  # Markdown blocks after the verdict

    def note(self, line: str) -> None:
        print(line, flush=True)
        self.lines.append(line)

    def fail(self, line: str) -> None:
        self.note(f"FAIL {line}")
        self.failures.append(line)

    def markdown(self) -> str:
        verdict = "failed" if self.failures else "passed"
        head = [f"## Pipeline check: {verdict}", ""] + [f"- {line}" for line in self.lines]
        return "\n".join(head + [""] + self.sections) + "\n"


def git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=repo, env=ENV, capture_output=True, text=True, check=check)


def dvc(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, env=ENV, capture_output=True,
                          text=True, check=check)


def stream(cmd: list[str], cwd: Path, tail: int = 25) -> tuple[int, str]:
    """Run cmd with its output going to the log as it comes; return (exit status, last lines)."""
    last: collections.deque[str] = collections.deque(maxlen=tail)
    with subprocess.Popen(cmd, cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True) as proc:
        for line in proc.stdout:
            print(line, end="", flush=True)
            last.append(line.rstrip())
    return proc.returncode, "\n".join(last)


# ---- 1. the committed dvc.lock ---------------------------------------------------------------

def stale_stages(status: dict, tracked: set[str]) -> dict[str, list[str]]:
    """From `dvc status --json`: per stage, what changed in code, params or definition.

    Deps reported "deleted" are data not on this machine (no DVC remote in CI), and
    outputs are never there before a run, so neither counts."""
    stale: dict[str, list[str]] = {}
    for stage, entries in status.items():
        reasons = []
        for entry in entries:
            if isinstance(entry, str):
                if entry in STALE_FLAGS:
                    reasons.append(entry)
                continue
            for path, change in entry.get("changed deps", {}).items():
                if isinstance(change, dict):  # a params file: {section or key: "modified"}
                    reasons += [f"{path}: {key} {what}" for key, what in change.items()]
                elif change != "deleted" and path in tracked:
                    reasons.append(f"{path} {change}")
        if reasons:
            stale[stage] = reasons
    return stale


def check_lock(repo: Path, report: Report) -> None:
    if not git(repo, "ls-files", "--error-unmatch", "dvc.lock", check=False).returncode == 0:
        report.note("dvc.lock is not committed here: no lock check")
        return
    status = json.loads(dvc(repo, "status", "--json").stdout or "{}")
    tracked = set(git(repo, "ls-files").stdout.splitlines())
    stale = stale_stages(status, tracked)
    if stale:
        detail = "; ".join(f"{stage}: {', '.join(reasons)}" for stage, reasons in stale.items())
        report.fail(f"dvc.lock is stale (code or params changed without `dvc repro` and a commit of "
                    f"dvc.lock): {detail}")
    else:
        report.note("PASS dvc.lock matches the committed code and params")


# ---- 2./3. the two runs ----------------------------------------------------------------------

def parse_overrides(items: list[str]) -> dict[str, Any]:
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CheckError(f"override {item!r}: expected dotted.key=value")
        overrides[key] = yaml.safe_load(value)
    return overrides


def missing_keys(params: dict, keys: list[str]) -> list[str]:
    """The dotted keys that params lacks (an override may change a value, never add a key)."""
    missing = []
    for key in keys:
        node: Any = params
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                missing.append(key)
                break
            node = node[part]
    return missing


def apply_overrides(params_file: Path, overrides: dict[str, Any]) -> None:
    params = yaml.safe_load(params_file.read_text()) or {}
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = params
        for part in parents:
            node = node[part]
        node[leaf] = value
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))


def spec_paths(dvc_yaml: str) -> dict[str, str]:
    """The `paths` of a dvc.yaml's vars, where every path is written once."""
    spec = yaml.safe_load(dvc_yaml) or {}
    return next((v["paths"] for v in spec.get("vars", []) if isinstance(v, dict) and "paths" in v), {})


def run_paths(repo: Path) -> dict[str, Path]:
    """The kept outputs' paths, from that checkout's own dvc.yaml vars (a base may differ)."""
    paths = spec_paths((repo / "dvc.yaml").read_text())
    return {key: repo / paths[key] for key in KEPT if key in paths}


def run_pipeline(repo: Path, overrides: dict[str, Any], keep: Path) -> tuple[bool, str]:
    """Apply the overrides, `dvc repro`, copy the kept outputs into keep/; (succeeded, last lines)."""
    apply_overrides(repo / "params.yaml", overrides)
    code, tail = stream([sys.executable, "-m", "dvc", "repro"], repo)
    if code != 0:
        return False, tail
    keep.mkdir(parents=True, exist_ok=True)
    for key, path in run_paths(repo).items():
        if path.is_file():
            shutil.copy(path, keep / KEPT[key])
    if not (keep / KEPT["metrics"]).is_file():
        return False, "the run wrote no metrics file at dvc.yaml's paths.metrics"
    return True, tail


def resolve(repo: Path, rev: str | None) -> str | None:
    if not rev or set(rev) == {"0"}:  # a push that created the branch has before = 000...0
        return None
    result = git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", check=False)
    return result.stdout.strip() or None


def committed_file(repo: Path, rev: str, path: str) -> str | None:
    shown = git(repo, "show", f"{rev}:{path}", check=False)
    return shown.stdout if shown.returncode == 0 else None


def committed_params(repo: Path, rev: str) -> dict | None:
    text = committed_file(repo, rev, "params.yaml")
    return (yaml.safe_load(text) or {}) if text is not None else None


def committed_metrics(repo: Path, rev: str) -> dict | None:
    """The test metrics of the run committed at rev: the evaluate stage keeps metrics.json in git
    (dvc.yaml's paths.metrics there), so they need no DVC remote; None where rev holds none."""
    path = spec_paths(committed_file(repo, rev, "dvc.yaml") or "").get("metrics")
    text = committed_file(repo, rev, path) if path else None
    try:
        return json.loads(text) if text is not None else None
    except json.JSONDecodeError:
        return None


def run_baseline(repo: Path, base: str, overrides: dict[str, Any], work: Path, keep: Path,
                 report: Report) -> str | None:
    """Run the base commit on the same subset; the commit holding that run, or None (no baseline)."""
    short = base[:12]
    if git(repo, "cat-file", "-e", f"{base}:dvc.yaml", check=False).returncode != 0:
        report.note(f"no baseline: the base {short} has no dvc.yaml (a first pipeline); drop check skipped")
        return None
    lacking = missing_keys(committed_params(repo, base) or {}, list(overrides))
    if lacking:
        report.note(f"no baseline: the base {short}'s params.yaml lacks {', '.join(lacking)} (set by the "
                    "subset overrides); drop check skipped")
        return None
    tree = work / "baseline"
    try:
        git(repo, "worktree", "add", "--detach", "--force", str(tree), base)
        # Same cache, so the run cache serves stages whose code and params did not change.
        cache = dvc(repo, "cache", "dir").stdout.strip()
        dvc(tree, "cache", "dir", "--local", cache)
    except subprocess.CalledProcessError as err:
        report.note(f"no baseline: could not set the base {short} up ({' '.join(err.cmd[-4:])}: "
                    f"{err.stderr.strip()}); drop check skipped")
        return None
    print(f"--- baseline: {short} in {tree}, DVC cache {cache}", flush=True)
    ok, tail = run_pipeline(tree, overrides, keep)
    if not ok:
        report.note(f"no baseline: the base {short} failed on the subset; drop check skipped")
        report.sections.append(f"<details><summary>Last lines of the base run</summary>\n\n```\n{tail}\n```\n"
                               "</details>\n")
        return None
    # A commit of the run, so `dvc plots diff` can overlay it (same object store, same cache).
    git(tree, "add", "-A")
    git(tree, "-c", "user.name=pr-check", "-c", "user.email=pr-check@localhost", "commit", "-q",
        "--no-verify", "--allow-empty", "-m", "pr-check baseline run")
    report.note(f"baseline: the base {short} on the same subset")
    return git(tree, "rev-parse", "HEAD").stdout.strip()


# ---- 4. the gate -----------------------------------------------------------------------------

def gate_command(pr: Path, baseline: Path | None) -> list[str]:
    """THE GATE, in one place. pr/ and baseline/ each hold metrics.json and confusion.csv side by side."""
    cmd = [sys.executable, "-m", "stages.gate", "--params", "params.yaml", "--metrics", str(pr / "metrics.json")]
    cmd += ["--confusion", str(pr / "confusion.csv")]
    if baseline is not None:
        cmd += ["--baseline", str(baseline / "metrics.json"), "--baseline-confusion", str(baseline / "confusion.csv")]
    return cmd


def run_gate(repo: Path, pr: Path, baseline: Path | None, report: Report) -> None:
    result = subprocess.run(gate_command(pr, baseline), cwd=repo, env=ENV, capture_output=True, text=True)
    for line in result.stdout.splitlines():
        (report.fail(line[5:]) if line.startswith("FAIL ") else report.note(line))
    if result.returncode != 0 and not any(line.startswith("FAIL ") for line in result.stdout.splitlines()):
        report.fail(f"gate: {result.stderr.strip() or 'exit status ' + str(result.returncode)}")
    elif result.returncode != 0:
        print(result.stderr, end="", file=sys.stderr)


# ---- 5. the summary --------------------------------------------------------------------------

def load_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def metric_rows(base: dict | None, pr: dict) -> list[tuple[str, float | None, float]]:
    rows = [(name, (base or {}).get(name), pr[name]) for name in HEADLINE if name in pr]
    for cls, value in pr.get("per_class_accuracy", {}).items():
        rows.append((f"accuracy: {cls}", (base or {}).get("per_class_accuracy", {}).get(cls), value))
    return rows


def data_note(runs: dict[str, dict | None]) -> str:
    """Which data each run's test figures come from (metrics.json's data_official, from prepare)."""
    def said(metrics: dict) -> str:
        if "data_official" not in metrics:
            return "not recorded (a run from before metrics.json said it)"
        if metrics["data_official"]:
            return "the official CIFAR-10 batch files"
        return f"a mirror, {metrics.get('data_files_differing', 'some')} batch file(s) differ from the official ones"
    return "Data: " + "; ".join(f"{name}, {said(m)}" for name, m in runs.items() if m is not None) + ".\n"


def committed_section(repo: Path, base: str | None) -> list[str]:
    """The runs committed at the base and in this change, side by side, where either commits one."""
    old, new = (committed_metrics(repo, rev) if rev else None for rev in (base, "HEAD"))
    if old is None and new is None:
        return []
    head = [f"### Committed runs: base {base[:12] if base else '(none)'} against this change\n",
            "The metrics.json each commit holds in git, from its own full run (not the subset runs above).\n"]
    if new is None:
        accuracy = fmt(old.get("accuracy"))
        return head + [f"This change commits no run of its own; the base's has accuracy {accuracy}.\n",
                       data_note({"base": old})]
    return head + [metrics_table(metric_rows(old, new)), data_note({"base": old, "this change": new})]


def fmt(value: Any) -> str:
    return "—" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def metrics_table(rows: list[tuple[str, float | None, float]]) -> str:
    out = ["| metric | baseline | PR | change |", "| --- | ---: | ---: | ---: |"]
    for name, base, pr in rows:
        change = f"{pr - base:+.4f}" if isinstance(base, (int, float)) else "—"
        out.append(f"| {name} | {fmt(base)} | {fmt(pr)} | {change} |")
    return "\n".join(out) + "\n"


def flatten(params: dict, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        flat.update(flatten(value, f"{name}.") if isinstance(value, dict) and value else {name: value})
    return flat


def params_diff(base: dict | None, pr: dict | None) -> str:
    """Committed params of base and change (never the subset overrides), as a Markdown table."""
    old, new = flatten(base or {}), flatten(pr or {})
    changed = [k for k in sorted(old.keys() | new.keys()) if old.get(k, ...) != new.get(k, ...)]
    if not changed:
        return "No param differs between the two commits.\n"
    def show(flat: dict, key: str) -> str:
        value = flat.get(key, "(absent)")
        return value if isinstance(value, str) else json.dumps(value)

    out = ["| param | base | PR |", "| --- | --- | --- |"]
    out += [f"| {k} | {show(old, k)} | {show(new, k)} |" for k in changed]
    return "\n".join(out) + "\n"


def read_log(path: Path) -> list[dict[str, float]]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def mermaid_chart(title: str, x: list[str], series: list[tuple[str, str, list[float]]], y_label: str) -> str:
    """A Mermaid xychart (GitHub draws it in the summary); series are (kind bar|line, label, values)."""
    labels = ", ".join(f'"{v}"' for v in x)
    legend = "; ".join(f"{kind}: {label}" for kind, label, _ in series)
    lines = ["```mermaid", "xychart-beta", f'  title "{title} ({legend})"', f"  x-axis [{labels}]",
             f'  y-axis "{y_label}"']
    lines += [f"  {kind} [{', '.join(f'{v:.4f}' for v in values)}]" for kind, _, values in series]
    return "\n".join(lines + ["```", ""])


def charts_markdown(base: dict | None, pr: dict, base_log: list[dict], pr_log: list[dict]) -> str:
    classes = list(pr.get("per_class_accuracy", {}))
    blocks = []
    series = [("line", "PR", [pr["per_class_accuracy"][c] for c in classes])]
    if base and all(c in base.get("per_class_accuracy", {}) for c in classes):
        series.insert(0, ("bar", "baseline", [base["per_class_accuracy"][c] for c in classes]))
    if classes:
        blocks.append(mermaid_chart("Test accuracy per class", classes, series, "accuracy"))
    for column, what in (("train_loss", "Training loss"), ("train_accuracy", "Training accuracy")):
        runs = [("baseline", base_log), ("PR", pr_log)]
        curves = [("line", name, [row[column] for row in log]) for name, log in runs
                  if log and all(column in row for row in log)]
        if curves:
            epochs = max(len(values) for _, _, values in curves)
            blocks.append(mermaid_chart(f"{what} per epoch", [str(e + 1) for e in range(epochs)], curves, what))
    return "\n".join(blocks)


def write_pngs(out: Path, base: dict | None, pr: dict, base_log: list[dict], pr_log: list[dict]) -> list[Path]:
    """Per-class accuracy (base against PR) and loss/accuracy curves as PNGs, with matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    classes = list(pr.get("per_class_accuracy", {}))
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.4
    xs = range(len(classes))
    if base:
        ax.bar([x - width / 2 for x in xs], [base.get("per_class_accuracy", {}).get(c, 0) for c in classes],
               width, label="baseline")
    ax.bar([x + width / 2 for x in xs], [pr["per_class_accuracy"][c] for c in classes], width, label="PR")
    ax.set_xticks(list(xs), classes, rotation=30)
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.set_title("Test accuracy per class")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "per_class.png", dpi=100)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, column in zip(axes, ("loss", "accuracy")):
        for name, log in (("baseline", base_log), ("PR", pr_log)):
            for split in ("train", "val"):
                points = [(row["epoch"], row[f"{split}_{column}"]) for row in log if f"{split}_{column}" in row]
                if points:
                    ax.plot(*zip(*points), marker="o", label=f"{name} {split}")
        ax.set_xlabel("epoch")
        ax.set_title(column)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=100)
    plt.close(fig)
    return [out / "per_class.png", out / "curves.png"]


def plots_page(repo: Path, baseline_rev: str | None, out: Path) -> tuple[bool, str]:
    """`dvc plots diff` of the baseline run against this run (or `dvc plots show`) as HTML in out/."""
    cmd = ["plots", "diff", baseline_rev] if baseline_rev else ["plots", "show"]
    result = dvc(repo, *cmd, "--out", str(out), check=False)
    return result.returncode == 0 and (out / "index.html").is_file(), (result.stdout + result.stderr).strip()


def summarize(repo: Path, base: str | None, baseline_rev: str | None, overrides: dict[str, Any], out: Path,
              report: Report) -> None:
    pr, old = load_json(out / "pr" / KEPT["metrics"]), load_json(out / "baseline" / KEPT["metrics"])
    sections = report.sections
    if pr is not None:
        sections.append("### Test metrics of the two runs\n")
        sections.append(metrics_table(metric_rows(old, pr)))
        sections.append(data_note({"baseline run": old, "PR run": pr}))
    sections.extend(committed_section(repo, base))
    sections.append(f"### Params: base {base[:12] if base else '(none)'} against this change\n")
    sections.append(params_diff(committed_params(repo, base) if base else None, committed_params(repo, "HEAD")))
    sections.append("Both runs used the subset overrides "
                    + ", ".join(f"`{k}={v}`" for k, v in overrides.items()) + " on top of that.\n")
    if pr is None:
        return
    base_log, pr_log = read_log(out / "baseline" / KEPT["train_log"]), read_log(out / "pr" / KEPT["train_log"])
    sections.append("### Charts\n")
    sections.append(charts_markdown(old, pr, base_log, pr_log))
    try:
        pngs = write_pngs(out / "charts", old, pr, base_log, pr_log)
        names = ", ".join(p.name for p in pngs)
        sections.append(f"The same charts as PNG ({names}, matplotlib) are in the workflow's artifact: GitHub "
                        "strips `data:` images from job summaries.\n")
    except ImportError:
        sections.append("No PNG charts: matplotlib is not installed (`pip install -e '.[ci]'`).\n")
    ok, said = plots_page(repo, baseline_rev, out / "plots")
    sections.append("`dvc plots diff` of the two runs: plots/index.html in the artifact.\n" if ok
                    else f"`dvc plots` wrote no page:\n\n```\n{said[-2000:]}\n```\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", help="base commit or ref (main); empty or all zeros: none")
    ap.add_argument("--out", type=Path, required=True, help="folder for summary.md, runs, charts, plots")
    ap.add_argument("--work", type=Path, help="scratch folder for the base's worktree (default: a temporary one)")
    ap.add_argument("-S", "--set", dest="overrides", action="append",
                    help=f"subset override for both runs (repeatable); default: {' '.join(SUBSET)}")
    args = ap.parse_args(argv)
    repo = Path(git(Path.cwd(), "rev-parse", "--show-toplevel").stdout.strip())
    out = args.out.resolve()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    work = Path(tempfile.mkdtemp(prefix="pr-check-", dir=args.work))
    report = Report()
    base = baseline_rev = None
    overrides: dict[str, Any] = {}
    try:
        check_lock(repo, report)
        if report.failures:
            return 1
        overrides = parse_overrides(args.overrides or list(SUBSET))
        lacking = missing_keys(yaml.safe_load((repo / "params.yaml").read_text()) or {}, list(overrides))
        if lacking:
            raise CheckError(f"params.yaml lacks {', '.join(lacking)}, set by the subset overrides")
        ok, tail = run_pipeline(repo, overrides, out / "pr")
        if not ok:
            report.fail("the pipeline failed on the subset")
            report.sections.append(f"<details><summary>Last lines of the run</summary>\n\n```\n{tail}\n```\n"
                                   "</details>\n")
            return 1
        base = resolve(repo, args.base)
        if base is None:
            report.note(f"no baseline: no base commit ({args.base or 'none given'}); drop check skipped")
        else:
            baseline_rev = run_baseline(repo, base, overrides, work, out / "baseline", report)
        run_gate(repo, out / "pr", out / "baseline" if baseline_rev else None, report)
        summarize(repo, base, baseline_rev, overrides, out, report)
        return 1 if report.failures else 0
    except (CheckError, subprocess.CalledProcessError, OSError, yaml.YAMLError) as err:
        detail = f"{err}\n{err.stderr}" if isinstance(err, subprocess.CalledProcessError) else str(err)
        report.fail(f"check stopped: {detail.strip()}")
        return 1
    finally:
        (out / "summary.md").write_text(report.markdown(), encoding="utf-8")
        if (work / "baseline").exists():
            git(repo, "worktree", "remove", "--force", str(work / "baseline"), check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
