"""CI's check (.github/scripts/pr_check.py) end to end, on a scratch git repository with a main
branch and PR branches, each checked out as CI does: a fresh clone of the PR branch.

All clones share one DVC cache (set with `dvc cache dir --local`), as successive CI runs
share nothing but could: it starts as a copy of the cache of the session's first run
(tests/conftest_e2e.py, the same project on the same archive), so the fixture's run of the
pipeline and every case restore from the run cache wherever code and params match, and each
case runs only what it changed.
"""
from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.cifar_archive import CLASSES
from tests.conftest import PROJECT
from tests.e2e_support import ENV, make_project, ran, sh

pytest_plugins = ["tests.conftest_e2e"]
SCRIPT = PROJECT / ".github/scripts/pr_check.py"
# The subset overrides for the tiny archive: train.optim.epochs as committed (2), and a gate floor.
OVERRIDES = ["-S", "train.optim.epochs=2", "-S", "gate.min_accuracy=0.3"]


def edit_params(repo: Path, change: Callable[[dict], None]) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    change(params)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def use_cache(repo: Path, cache: Path) -> None:
    """What `dvc cache dir --local CACHE` writes, without starting DVC for it."""
    (repo / ".dvc/config.local").write_text(f"[cache]\n    dir = {cache}\n")


def branch(repo: Path, name: str, start: str, change: Callable[[Path], None]) -> None:
    sh(repo, "git", "checkout", "-q", "-B", name, start)
    change(repo)
    sh(repo, "git", "add", "-u")  # not -A: the fixture's run leaves outputs in the workspace
    sh(repo, "git", "commit", "-qm", name)


@pytest.fixture(scope="module")
def origin(tmp_path_factory, archive, first_run) -> tuple[Path, Path]:
    """(origin repository, shared DVC cache). Branches:
    main          the project on the tiny archive, dvc.lock not committed
    pr-pass       gate.max_drop changed (no stage depends on it), run, dvc.lock committed
    pr-stale      pr-pass with train.optim.lr changed and dvc.lock left as it was
    pr-drop       train.optim.lr so small that the model learns nothing in 2 epochs
    old-main      main whose params.yaml has no `gate` section yet; pr-adds-gate adds it
    empty         a main with a README only; pr-first adds the whole pipeline
    """
    root = tmp_path_factory.mktemp("pr_check")
    cache = root / "dvc-cache"
    shutil.copytree(first_run.root / ".dvc/cache", cache)  # with its run cache
    repo = make_project(root / "origin", archive)
    sh(repo, "git", "branch", "-M", "main")
    use_cache(repo, cache)

    branch(repo, "pr-pass", "main", lambda r: edit_params(r, lambda p: p["gate"].update(max_drop=0.03)))
    out = sh(repo, sys.executable, "-m", "dvc", "repro")  # the first run's stages, restored
    assert ran(out) == set(), "the first run's params and code differ from main's"
    sh(repo, "git", "add", "dvc.lock")
    sh(repo, "git", "commit", "-qm", "pr-pass: run, commit dvc.lock")
    branch(repo, "pr-stale", "pr-pass", lambda r: edit_params(r, lambda p: p["train"]["optim"].update(lr=0.002)))
    branch(repo, "pr-drop", "main", lambda r: edit_params(r, lambda p: p["train"]["optim"].update(lr=1e-6)))
    branch(repo, "old-main", "main", lambda r: edit_params(r, lambda p: p.pop("gate")))
    branch(repo, "pr-adds-gate", "old-main", lambda r: sh(r, "git", "checkout", "main", "--", "params.yaml"))

    sh(repo, "git", "checkout", "-q", "--orphan", "empty")
    sh(repo, "git", "rm", "-rq", "--cached", ".")
    sh(repo, "git", "clean", "-fdxq", "-e", ".dvc/config.local")
    (repo / "README.md").write_text("CIFAR-10, soon\n")
    sh(repo, "git", "add", "README.md")
    sh(repo, "git", "commit", "-qm", "empty")
    branch(repo, "pr-first", "empty", lambda r: sh(r, "git", "checkout", "main", "--", "."))
    return repo, cache


def check(origin: tuple[Path, Path], tmp_path: Path, pr: str, base: str) -> tuple[int, str, str, Path]:
    """Clone branch pr as CI does, run the check against origin/base; (exit, output, summary, out)."""
    repo, cache = origin
    clone = tmp_path / "clone"
    sh(tmp_path, "git", "clone", "-q", "-b", pr, str(repo), str(clone))
    use_cache(clone, cache)
    out = tmp_path / "report"
    result = subprocess.run([sys.executable, str(SCRIPT), "--base", f"origin/{base}", "--out", str(out),
                             "--work", str(tmp_path), *OVERRIDES], cwd=clone, env=ENV, capture_output=True,
                            text=True, timeout=600)
    output = result.stdout + result.stderr
    print(output)  # shown by pytest -s and on failure: the check's own log
    summary = (out / "summary.md").read_text()
    print(summary)
    assert not list(tmp_path.glob("pr-check-*")), "the base's worktree is removed"
    return result.returncode, output, summary, out


@pytest.mark.e2e
def test_passing_pr_with_a_committed_lock(origin, tmp_path):
    code, output, summary, out = check(origin, tmp_path, "pr-pass", "main")
    assert code == 0, output
    assert summary.startswith("## Pipeline check: passed")
    assert "PASS dvc.lock matches the committed code and params" in summary
    assert "- baseline: the base" in summary
    assert "PASS accuracy change +0.0000 against baseline" in summary and "within gate.max_drop 0.0300" in summary
    assert "PASS paired test, overall (50 images)" in summary  # the gate got both confusion files
    assert ("Data: baseline run, a mirror, 7 batch file(s) differ from the official ones; PR run, a mirror, "
            "7 batch file(s) differ from the official ones.") in summary  # the tiny archive
    # Same repository and cache: nothing is downloaded again, the base's unchanged stages are restored.
    assert "Running stage" not in output and output.count("Stage 'download' is cached") == 2
    for cls in CLASSES:
        row = next(line for line in summary.splitlines() if line.startswith(f"| accuracy: {cls} |"))
        base, pr, change = (cell.strip() for cell in row.split("|")[2:5])
        assert float(base) == float(pr) and change == "+0.0000"
    params = summary.split("### Params")[1].split("### Charts")[0]
    assert "| gate.max_drop | 0.02 | 0.03 |" in params
    assert "gate.min_accuracy" not in params.split("Both runs")[0]  # overrides are not the PR's change
    assert "`gate.min_accuracy=0.3`" in params
    assert "```mermaid\nxychart-beta" in summary and "bar: baseline; line: PR" in summary
    for run in ("pr", "baseline"):
        assert {"metrics.json", "confusion.csv"} <= {p.name for p in (out / run).iterdir()}
    for png in ("per_class.png", "curves.png"):
        assert (out / "charts" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Test accuracy per class" in (out / "plots/index.html").read_text()


@pytest.mark.e2e
def test_pr_whose_accuracy_drops_fails_with_the_reason(origin, tmp_path):
    code, output, summary, _ = check(origin, tmp_path, "pr-drop", "main")
    assert code == 1
    assert summary.startswith("## Pipeline check: failed")
    assert "FAIL accuracy change -" in summary and "beyond gate.max_drop 0.0200" in summary
    assert "FAIL paired test, overall (50 images)" in summary and "significant drop" in summary
    assert "| train.optim.lr | 0.001 | 1e-06 |" in summary


@pytest.mark.e2e
def test_pr_adding_the_params_key_the_overrides_set_has_no_baseline_and_passes(origin, tmp_path):
    code, output, summary, out = check(origin, tmp_path, "pr-adds-gate", "old-main")
    assert code == 0, output
    assert "params.yaml lacks gate.min_accuracy (set by the subset overrides); drop check skipped" in summary
    assert "PASS accuracy" in summary and "accuracy change" not in summary
    assert "| gate.min_accuracy | (absent) | 0.5 |" in summary and "| gate.max_drop | (absent) | 0.02 |" in summary
    assert "| accuracy | — |" in summary
    assert not (out / "baseline").exists()


@pytest.mark.e2e
def test_first_pr_without_a_pipeline_on_main_has_no_baseline_and_passes(origin, tmp_path):
    code, output, summary, _ = check(origin, tmp_path, "pr-first", "empty")
    assert code == 0, output
    assert "has no dvc.yaml (a first pipeline); drop check skipped" in summary
    assert "PASS accuracy" in summary


@pytest.mark.e2e
def test_stale_committed_lock_fails_before_anything_runs(origin, tmp_path):
    code, output, summary, out = check(origin, tmp_path, "pr-stale", "main")
    assert code == 1
    assert "FAIL dvc.lock is stale" in summary and "train: params.yaml: train modified" in summary
    assert "Running stage" not in output and not (out / "pr").exists()


def load_script():
    spec = importlib.util.spec_from_file_location("pr_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("pr_check", module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_only_code_params_and_definition_changes_make_the_lock_stale():
    status = {  # `dvc status --json` in a fresh clone: no data, one code change, one params change
        "prepare": [{"changed deps": {"data/cifar-10-batches-py": "deleted"}},
                    {"changed outs": {"data/prepared": "not in cache"}}, "changed command"],
        "train": [{"changed deps": {"data/prepared": "deleted", "params.yaml": {"train": "modified"}}}],
        "evaluate": [{"changed deps": {"data/model.pth": "deleted", "stages/evaluate.py": "modified"}}],
        "download": [{"changed outs": {"data/cifar-10-batches-py": "not in cache"}}],
    }
    stale = load_script().stale_stages(status, tracked={"stages/evaluate.py", "params.yaml"})
    assert stale == {"prepare": ["changed command"], "train": ["params.yaml: train modified"],
                     "evaluate": ["stages/evaluate.py modified"]}


def test_overrides_may_change_values_never_add_keys():
    script = load_script()
    parsed = script.parse_overrides(["train.optim.lr=0.1", "train.numerics.compile=true", "train.augment.flip=none"])
    assert parsed == {"train.optim.lr": 0.1, "train.numerics.compile": True, "train.augment.flip": "none"}
    with pytest.raises(script.CheckError, match="override 'nonsense': expected dotted.key=value"):
        script.parse_overrides(["nonsense"])
    params = {"train": {"optim": {"lr": None}}, "gate": {"min_accuracy": 0.5}}
    keys = ["train.optim.lr", "train.lr", "gate.max_drop", "gate.min_accuracy.x", "x.y"]
    assert script.missing_keys(params, keys) == ["train.lr", "gate.max_drop", "gate.min_accuracy.x", "x.y"]


@pytest.mark.e2e
def test_a_bad_override_stops_the_check_with_its_reason(origin, tmp_path):
    repo, _ = origin
    clone = tmp_path / "clone"
    sh(tmp_path, "git", "clone", "-q", "-b", "pr-drop", str(repo), str(clone))
    result = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "out"), "--work", str(tmp_path),
                             "-S", "train.no_such_key=1"], cwd=clone, env=ENV, capture_output=True, text=True)
    assert result.returncode == 1
    assert ("FAIL check stopped: params.yaml lacks train.no_such_key, set by the subset overrides"
            in (tmp_path / "out/summary.md").read_text())


def test_summary_reads_each_commits_own_run_from_git_and_says_which_data(tmp_path):
    script = load_script()
    repo = tmp_path / "repo"
    (repo / "metrics").mkdir(parents=True)
    shutil.copy(PROJECT / "dvc.yaml", repo / "dvc.yaml")  # its paths.metrics: where evaluate writes
    sh(repo, "git", "init", "-q")
    sh(repo, "git", "add", "dvc.yaml")
    sh(repo, "git", "commit", "-qm", "the pipeline, no run yet")
    for accuracy, official in ((0.5, False), (0.75, True)):  # a run on a mirror, then one on the real data
        (repo / "metrics/metrics.json").write_text(json.dumps(
            {"accuracy": accuracy, "per_class_accuracy": {"cat": accuracy}, "data_official": official,
             "data_files_differing": 0 if official else 7}))
        sh(repo, "git", "add", "metrics/metrics.json")
        sh(repo, "git", "commit", "-qm", f"a run: {accuracy}")
    assert script.committed_metrics(repo, "HEAD~2") is None
    assert script.committed_metrics(repo, "HEAD~1")["accuracy"] == 0.5

    section = "".join(script.committed_section(repo, base="HEAD~1"))
    assert "### Committed runs: base HEAD~1 against this change" in section
    assert "| accuracy | 0.5000 | 0.7500 | +0.2500 |" in section and "| accuracy: cat | 0.5000 | 0.7500 |" in section
    assert ("Data: base, a mirror, 7 batch file(s) differ from the official ones; this change, the official "
            "CIFAR-10 batch files.") in section
    assert "| accuracy | — | 0.7500 | — |" in "".join(script.committed_section(repo, base="HEAD~2"))
    assert script.committed_section(repo, base=None)[0].startswith("### Committed runs: base (none)")
    latest = sh(repo, "git", "rev-parse", "HEAD").strip()
    sh(repo, "git", "checkout", "-q", "HEAD~2")  # a change that commits no run of its own
    section = "".join(script.committed_section(repo, base=latest))
    assert "This change commits no run of its own; the base's has accuracy 0.7500." in section
    assert script.committed_section(repo, base="HEAD") == []  # neither commits one
