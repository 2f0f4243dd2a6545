"""The real `dvc repro` on a copy of the project, fed the tiny official-format archive.

Most tests start from the one first run that tests/conftest_e2e.py builds per session and
work on their own copy of it (`ran_project`); only what a test changes runs again.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import yaml

from tests.cifar_archive import CLASSES
from tests.e2e_support import (ENV, RECIPE_EPOCHS, RECIPE_SWITCH, SECOND_LR, STAGES, copy_project, exp_show,
                               make_project, ran, run_queue, set_params, sh)

pytestmark = pytest.mark.e2e
pytest_plugins = ["tests.conftest_e2e"]


def test_first_repro_runs_every_stage_and_writes_every_output(first_run):
    project = first_run.root
    assert ran(first_run.output) == set(STAGES)
    assert "epoch 1/2 loss" in first_run.output and "epoch 2/2 loss" in first_run.output
    metrics = json.loads((project / "metrics/metrics.json").read_text())
    assert metrics["test_images"] == 50 and set(metrics["per_class_accuracy"]) == set(CLASSES)
    assert metrics["accuracy"] > 0.3  # learnable synthetic pattern; chance is 0.1
    assert (project / "data/model.pth").is_file() and (project / "data/prepared/test.pt").is_file()
    assert len((project / "metrics/confusion.csv").read_text().splitlines()) == 51
    assert not (project / "data/checkpoints/train.pt").exists()  # a finished run leaves none behind


def test_repro_skip_rerun_diff_and_repeatability(first_run, second_run, ran_project, tmp_path):
    out = sh(ran_project, "dvc", "repro")
    assert ran(out) == set() and "Data and pipelines are up to date" in out
    assert "up to date" in sh(ran_project, "dvc", "status")

    assert ran(second_run.output) == {"train", "evaluate"}  # a param changed
    project = copy_project(second_run.root, tmp_path / "second")
    changed = json.loads(sh(project, "dvc", "metrics", "diff", "--json"))["metrics/metrics.json"]
    everything = json.loads(sh(project, "dvc", "metrics", "diff", "--json", "--all"))["metrics/metrics.json"]
    assert {f"per_class_accuracy.{c}" for c in CLASSES} <= set(changed) | set(everything)
    assert "accuracy" in changed or "loss" in changed
    assert changed["loss"]["old"] != changed["loss"]["new"]
    for key in ("accuracy_low", "accuracy_high", "per_class_accuracy_low.cat", "per_class_accuracy_high.cat"):
        assert isinstance(everything[key]["new"], float) and "diff" in everything[key]  # numbers, with a change

    sh(project, "dvc", "plots", "show", "--out", "plots_html")
    html = (project / "plots_html/index.html").read_text()
    for title in ("Test confusion matrix", "Test accuracy per class", "Loss per epoch", "Accuracy per epoch"):
        assert title in html
    assert "predictions.png" in html
    rendered = json.loads(sh(project, "dvc", "plots", "show", "--json"))
    assert not rendered.get("errors"), rendered.get("errors")

    # Same params and seed on the CPU: a forced re-run trains every epoch afresh (the finished run's
    # checkpoint is gone) and writes identical metrics (on the same machine and torch build). Forced
    # from train on: the data stages only unpack and convert (test_first_repro... covers them running).
    sh(project, "git", "checkout", "params.yaml")
    out = sh(project, "dvc", "repro", "--force", "--single-item", "train", "evaluate")
    assert ran(out) == {"train", "evaluate"}
    assert "epoch 1/2 loss" in out and "epoch 2/2 loss" in out and "resuming" not in out
    assert not (project / "data/checkpoints/train.pt").exists()
    assert (project / "metrics/metrics.json").read_bytes() == (first_run.root / "metrics/metrics.json").read_bytes()


def test_run_cache_restores_training_for_params_seen_before(first_run, second_run, tmp_path):
    # first_run trained with train.optim.lr 0.001 (params A), second_run then with SECOND_LR (B)
    assert "epoch 1/2 loss" in first_run.output and "epoch 1/2 loss" in second_run.output  # both trained
    metrics_a = (first_run.root / "metrics/metrics.json").read_bytes()
    project = copy_project(second_run.root, tmp_path / "project")
    assert (project / "metrics/metrics.json").read_bytes() != metrics_a  # so A's below are restored ones
    # A again; metrics.json and train.json are in git (cache: false under the stages' metrics:), and
    # DVC copies such files into its run cache and restores them too
    again = sh(project, "dvc", "exp", "run", "-S", "train.optim.lr=0.001")
    assert "Stage 'train' is cached - skipping run" in again and "Stage 'evaluate' is cached" in again
    assert "epoch 1/2 loss" not in again  # restored, not trained
    assert (project / "metrics/metrics.json").read_bytes() == metrics_a
    assert json.loads((project / "metrics/train.json").read_text())["epochs"] == 2


def test_fresh_clone_diffs_committed_metrics_without_dvc_pull(second_run, tmp_path):
    # The small metrics and plots files are in git (cache: false under the stages' own metrics: and
    # plots:), so a clone compares two commits at once; only model, data and predictions.png need a pull.
    project = copy_project(second_run.root, tmp_path / "project")
    sh(project, "git", "add", "-A")
    sh(project, "git", "commit", "-qm", "train.optim.lr 0.0005")
    clone = tmp_path / "clone"
    sh(tmp_path, "git", "clone", "-q", str(project), str(clone))
    assert not (clone / "data/model.pth").exists()
    result = subprocess.run(["dvc", "metrics", "diff", "HEAD~1", "--json"], cwd=clone, env=ENV, capture_output=True,
                            text=True)
    assert result.returncode == 0 and "failed to load" not in result.stderr, result.stderr
    diff = json.loads(result.stdout)
    loss = diff["metrics/metrics.json"]["loss"]
    assert isinstance(loss["old"], float) and isinstance(loss["new"], float) and loss["old"] != loss["new"]
    assert "train_loss" in diff["metrics/train.json"] and "train.loss" in diff["metrics/live/metrics.json"]
    plots = json.loads(subprocess.run(["dvc", "plots", "diff", "HEAD~1", "--json"], cwd=clone, env=ENV,
                                      capture_output=True, text=True).stdout)
    assert {"Loss per epoch", "metrics/confusion.csv", "metrics/per_class.csv"} <= set(plots["data"])
    assert {error["name"] for error in plots.get("errors", [])} == {"metrics/predictions.png"}  # in DVC's cache


def test_failing_stage_leaves_no_finished_looking_output(tmp_path, archive):
    project = make_project(tmp_path / "project", archive)  # never run: no dvc.lock yet
    bad = tmp_path / "not-an-archive.tar.gz"
    bad.write_bytes(b"not gzip at all")
    set_params(project, **{"data.url": str(bad), "data.md5": hashlib.md5(bad.read_bytes()).hexdigest()})
    result = subprocess.run(["dvc", "repro"], cwd=project, env=ENV, capture_output=True, text=True)
    assert result.returncode != 0
    assert "download: error:" in result.stderr + result.stdout
    assert "cannot extract as a gzip-compressed tar archive" in result.stderr + result.stdout
    assert not (project / "data/cifar-10-batches-py").exists()
    assert not [p.name for p in (project / "data").iterdir() if p.name.startswith(".")]
    assert not (project / "dvc.lock").exists()


def test_recipe_switch_with_exp_run_records_the_recipe_in_dvc_lock(recipe_run):
    project = recipe_run.root  # after dvc exp run RECIPE_SWITCH
    assert ran(recipe_run.output) == {"train", "evaluate"}
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    locked = lock["stages"]["train"]["params"]["params.yaml"]
    assert locked["train"]["recipe"] == "resnet-cpu" and locked["train"]["model"]["width"] == 4
    assert locked["recipes"]["resnet-cpu"]["model"]["name"] == "resnet"
    meta = json.loads((project / "data/model.json").read_text())
    assert meta["train_params"]["model"]["name"] == "resnet"  # the recipe's values, resolved
    assert meta["train_params"]["optim"]["label_smoothing"] == 0.2 and meta["train_params"]["model"]["width"] == 4
    assert json.loads((project / "metrics/train.json").read_text())["recipe"] == "resnet-cpu"
    shown = recipe_run.exp_show  # dvc exp show --json, after the run
    assert "resnet-cpu" in json.dumps(shown)

    # dvc exp show: each run's effective train values from data/train_params.yaml (dvc.yaml's top-level
    # params), where params.yaml has null for what the recipe decides. The committed first run
    # (tutorial) and the experiment (resnet-cpu); overrides and recipe values look the same.
    base = next(row for row in shown if row["rev"] != "workspace")
    rows = [base, *(rev for exp in base["experiments"] for rev in exp["revs"])]
    runs = {row["data"]["params"]["params.yaml"]["data"]["train"]["recipe"]:
            row["data"]["params"]["data/train_params.yaml"]["data"] for row in rows}
    tutorial, resnet = runs["tutorial"], runs["resnet-cpu"]
    assert base["data"]["params"]["params.yaml"]["data"]["train"]["optim"]["batch_size"] is None
    assert (tutorial["model"]["name"], tutorial["optim"]["batch_size"]) == ("mlp", 4)  # the recipe's
    assert (tutorial["optim"]["lr"], tutorial["optim"]["epochs"]) == (0.001, 2)  # tests.e2e_support.TRAIN's
    assert (resnet["model"]["name"], resnet["optim"]["label_smoothing"]) == ("resnet", 0.2)  # the recipe's
    assert (resnet["model"]["width"], resnet["optim"]["epochs"]) == (4, RECIPE_EPOCHS)  # set by -S
    diff = json.loads(sh(project, "dvc", "params", "diff", "--json"))["data/train_params.yaml"]  # HEAD: tutorial
    assert diff["model.name"] == {"old": "mlp", "new": "resnet"}
    assert (diff["optim.label_smoothing"]["old"], diff["optim.label_smoothing"]["new"]) == (0.0, 0.2)


def test_queued_sweep_gate_and_ci_summary(second_run, tmp_path):
    project = copy_project(second_run.root, tmp_path / "project")
    sh(project, "git", "commit", "-qam", "second run")  # the baseline run: train.optim.lr SECOND_LR, seed 0
    base = project / "base-metrics.json"
    shutil.copy(project / "metrics/metrics.json", base)
    base_confusion = project / "base-confusion.csv"
    shutil.copy(project / "metrics/confusion.csv", base_confusion)

    # DVC 3.67's Hydra sweeper expands range(0,2) to seeds 0 and 1: a 2 x 2 grid, whose (0.001, 0)
    # and (SECOND_LR, 0) the run cache restores from first_run and second_run
    assert SECOND_LR == 0.002
    sh(project, "dvc", "exp", "run", "--queue", "-S", "train.optim.lr=0.001,0.002", "-S",
       "train.numerics.seed=range(0,2)")
    run_queue(project)  # dvc exp run --run-all -j 1
    shown = json.loads(sh(project, "dvc", "exp", "show", "--json"))
    runs = [exp for row in shown for exp in (row.get("experiments") or [])]
    trains = [run["revs"][0]["data"]["params"]["params.yaml"]["data"]["train"] for run in runs]
    grid = sorted((train["optim"]["lr"], train["numerics"]["seed"]) for train in trains)
    assert grid == [(0.001, 0), (0.001, 1), (0.002, 0), (0.002, 1)]
    summary = sh(project, sys.executable, "-m", "stages.seeds")  # runs `dvc exp show --json` itself
    assert summary.startswith("4 runs in 2 group(s)")
    assert "| train.optim.lr=0.001 | 2 | 0, 1 | " in summary and "| train.optim.lr=0.002 | 2 | 0, 1 | " in summary
    assert "| cat | " in summary
    accuracies = [run["revs"][0]["data"]["metrics"]["metrics/metrics.json"]["data"]["accuracy"] for run in runs]
    assert all(0 <= a <= 1 for a in accuracies)

    # The CI gate and summary, as .github/workflows/pipeline.yml runs them.
    assert "up to date" in sh(project, "dvc", "status")
    out = sh(project, sys.executable, "-m", "stages.gate", "--baseline", str(base))
    assert "PASS accuracy" in out and "within gate.max_drop" in out
    out = sh(project, sys.executable, "-m", "stages.gate", "--baseline", str(base), "--baseline-confusion",
             str(base_confusion))  # --confusion defaults to dvc.yaml's path: the same run, so nothing changed
    assert ("PASS paired test, overall (50 images): accuracy" in out and "right only before 0, right only now 0; "
            "McNemar p=1 (not significant at gate.alpha 0.05)" in out)
    set_params(project, **{"gate.min_accuracy": 0.999})
    failing = subprocess.run([sys.executable, "-m", "stages.gate"], cwd=project, env=ENV, capture_output=True,
                             text=True)
    assert failing.returncode == 1 and "gate: error: accuracy" in failing.stderr
    assert "per_class_accuracy.cat" in sh(project, "dvc", "metrics", "diff", "HEAD", "--md", "--all")
    sh(project, "dvc", "params", "diff", "HEAD", "--md")  # the workflow's summary command runs


def test_kill_9_mid_training_then_repro_resumes_to_the_same_result(first_run, ran_project):
    # first_run is the uninterrupted run. Its copy, made as if train had never run (no lock entries
    # and outputs of train and evaluate, no run cache: DVC would restore them from either rather than
    # train), trains again and is killed as soon as the first epoch's checkpoint exists, with the
    # second of 2 epochs still to run.
    killed = ran_project
    lock = yaml.safe_load((killed / "dvc.lock").read_text())
    for stage in ("train", "evaluate"):
        for out in lock["stages"].pop(stage)["outs"]:
            path = killed / out["path"]
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
    (killed / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))
    shutil.rmtree(killed / ".dvc/cache/runs")
    checkpoint = killed / "data/checkpoints/train.pt"
    proc = subprocess.Popen(["dvc", "repro"], cwd=killed, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 600
    try:
        while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:  # the whole process group, dvc and the stage, mid-run
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert checkpoint.exists() and not (killed / "data/model.pth").exists()

    out = sh(killed, "dvc", "repro")
    assert ran(out) == {"train", "evaluate"}
    assert "resuming after epoch 1" in out
    assert "epoch 1/2 loss" not in out and "epoch 2/2 loss" in out  # no epoch twice
    whole = first_run.root
    assert (killed / "metrics/metrics.json").read_bytes() == (whole / "metrics/metrics.json").read_bytes()
    assert (killed / "data/model.pth").read_bytes() == (whole / "data/model.pth").read_bytes()
    for name in ("train/loss", "train/accuracy", "lr"):  # the live records too: every epoch once
        path = f"metrics/live/plots/metrics/{name}.tsv"
        assert (killed / path).read_text() == (whole / path).read_text()


def test_push_to_a_local_remote_then_fresh_clone_and_pull_is_up_to_date(pushed, tmp_path):
    project = pushed  # first_run with `dvc remote add -d`, committed, `dvc push`ed
    clone = tmp_path / "clone"
    sh(tmp_path, "git", "clone", "-q", str(project), str(clone))
    assert not (clone / "data/model.pth").exists()
    sh(clone, "dvc", "pull")
    assert (clone / "data/model.pth").read_bytes() == (project / "data/model.pth").read_bytes()
    assert "up to date" in sh(clone, "dvc", "status")
    out = sh(clone, "dvc", "repro")
    assert ran(out) == set() and "Data and pipelines are up to date" in out


def experiments(project) -> dict[float, dict]:
    """`dvc exp show --json`'s experiments by their train.optim.lr: their metrics files, as parsed."""
    runs = [exp["revs"][0]["data"] for row in exp_show(project) for exp in (row.get("experiments") or [])]
    return {run["params"]["params.yaml"]["data"]["train"]["optim"]["lr"]:
            {name: entry["data"] for name, entry in run["metrics"].items()} for run in runs}


def workspace_files(project) -> dict[str, int]:
    """Every file of the workspace outside .git and .dvc, with its modification time (ns)."""
    return {str(p.relative_to(project)): p.stat().st_mtime_ns for p in project.rglob("*")
            if p.is_file() and not {".git", ".dvc"} & set(p.relative_to(project).parts)}


def without_timing(metrics: dict) -> dict:
    timing = ("train_seconds", "warmup_seconds", "images_per_second", "seconds")
    return {path: {k: v for k, v in data.items() if k not in timing} for path, data in metrics.items()}


def test_two_queued_experiments_run_at_once_each_match_the_same_experiment_run_alone(first_run, second_run,
                                                                                      recipe_run, tmp_path):
    # Two experiments that first_run's run cache has not seen, each already run alone in a copy of
    # first_run: SECOND_LR (second_run, `dvc repro` in the workspace, 2 epochs) and the resnet-cpu recipe
    # (recipe_run, `dvc exp run` in the workspace, RECIPE_EPOCHS epochs)...
    alone = {SECOND_LR: {name: json.loads((second_run.root / name).read_text())
                         for name in ("metrics/metrics.json", "metrics/train.json", "metrics/live/metrics.json")},
             **experiments(recipe_run.root)}
    assert set(alone) == {SECOND_LR, 0.001}  # the recipe run keeps TRAIN's train.optim.lr
    # ...and both queued, then run by two workers at once, each in its own copy under .dvc/tmp/exps
    queued = copy_project(first_run.root, tmp_path / "queued")
    sh(queued, "dvc", "exp", "run", "--queue", "-S", f"train.optim.lr={SECOND_LR}")
    sh(queued, "dvc", "exp", "run", "--queue", *RECIPE_SWITCH)
    workspace = workspace_files(queued)
    run_queue(queued, jobs=2)
    ran_at_once = experiments(queued)
    assert set(ran_at_once) == set(alone)
    for lr, metrics in ran_at_once.items():  # identical, on the CPU: nothing shared between the two
        assert without_timing(metrics) == without_timing(alone[lr]), lr
        epochs = metrics["metrics/train.json"]["epochs"]
        assert epochs == (2 if lr == SECOND_LR else RECIPE_EPOCHS)
        assert metrics["metrics/live/metrics.json"]["step"] == epochs  # each its own DVCLive folder, each epoch once
        assert metrics["metrics/live/metrics.json"]["train"]["loss"] == metrics["metrics/train.json"]["train_loss"]
    # The workspace saw neither run: no checkpoint, DVCLive record or temporary file of theirs
    assert workspace_files(queued) == workspace
