"""The real `dvc repro` on a copy of the project, fed the tiny official-format archive."""
from __future__ import annotations

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
from tests.conftest import PROJECT, write_params

pytestmark = pytest.mark.e2e
COPIED = ["stages", "dvc.yaml", "params.yaml", ".dvc/config", ".dvc/.gitignore", ".dvcignore", ".gitignore",
          "pyproject.toml"]
ENV = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}",
       "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
       "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com",
       "DVC_STUDIO_OFFLINE": "1"}  # train's DVCLive must not post to a Studio account set up on this machine


def sh(cwd, *cmd: str) -> str:
    result = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def ran(output: str) -> set[str]:
    return {stage for stage in ("download", "prepare", "train", "evaluate") if f"Running stage '{stage}'" in output}


@pytest.fixture
def project(tmp_path, archive):
    return make_project(tmp_path / "project", archive)


def make_project(root, archive, **dotted):
    """A git repo holding a copy of the project, its params pointed at the tiny archive."""
    for item in COPIED:
        src, dst = PROJECT / item, root / item
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__")) if src.is_dir()
         else shutil.copy(src, dst))
    write_params(root / "params.yaml", **{"data.url": str(archive[0]), "data.md5": archive[1],
                                          "train.optim.epochs": 2, "train.optim.lr": 0.01,
                                          "train.numerics.device": "cpu",
                                          "evaluate.device": "cpu", **dotted})
    sh(root, "git", "init", "-q")
    sh(root, "git", "add", "-A")
    sh(root, "git", "commit", "-qm", "init")
    return root


def test_repro_skip_rerun_diff_and_repeatability(project):
    out = sh(project, "dvc", "repro")
    assert ran(out) == {"download", "prepare", "train", "evaluate"}
    metrics = json.loads((project / "metrics/metrics.json").read_text())
    assert metrics["test_images"] == 50 and set(metrics["per_class_accuracy"]) == set(CLASSES)
    assert metrics["accuracy"] > 0.3  # learnable synthetic pattern; chance is 0.1
    assert (project / "data/model.pth").is_file() and (project / "data/prepared/test.pt").is_file()
    assert len((project / "metrics/confusion.csv").read_text().splitlines()) == 51
    first_metrics = (project / "metrics/metrics.json").read_bytes()
    sh(project, "git", "add", "-A")
    sh(project, "git", "commit", "-qm", "first run")

    out = sh(project, "dvc", "repro")
    assert ran(out) == set() and "Data and pipelines are up to date" in out
    assert "up to date" in sh(project, "dvc", "status")

    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"]["optim"]["lr"] = 0.002
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = sh(project, "dvc", "repro")
    assert ran(out) == {"train", "evaluate"}
    diff = json.loads(sh(project, "dvc", "metrics", "diff", "--json"))
    changed = diff["metrics/metrics.json"]
    assert {f"per_class_accuracy.{c}" for c in CLASSES} <= set(changed) | set(
        json.loads(sh(project, "dvc", "metrics", "diff", "--json", "--all"))["metrics/metrics.json"])
    assert "accuracy" in changed or "loss" in changed
    assert changed["loss"]["old"] != changed["loss"]["new"]
    everything = json.loads(sh(project, "dvc", "metrics", "diff", "--json", "--all"))["metrics/metrics.json"]
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
    # checkpoint is gone) and writes identical metrics (on the same machine and torch build).
    sh(project, "git", "checkout", "params.yaml")
    out = sh(project, "dvc", "repro", "--force")
    assert ran(out) == {"download", "prepare", "train", "evaluate"}
    assert "epoch 1/2 loss" in out and "epoch 2/2 loss" in out and "resuming" not in out
    assert not (project / "data/checkpoints/train.pt").exists()
    assert (project / "metrics/metrics.json").read_bytes() == first_metrics


def test_run_cache_restores_training_for_params_seen_before(project):
    first = sh(project, "dvc", "exp", "run", "-S", "train.optim.lr=0.02")  # params A
    metrics_a = (project / "metrics/metrics.json").read_bytes()
    second = sh(project, "dvc", "exp", "run", "-S", "train.optim.lr=0.005")  # B
    third = sh(project, "dvc", "exp", "run", "-S", "train.optim.lr=0.02")  # A again
    assert "epoch 1/2 loss" in first and "epoch 1/2 loss" in second  # these two trained
    assert "Stage 'train' is cached - skipping run" in third and "Stage 'evaluate' is cached" in third
    assert "epoch 1/2 loss" not in third  # restored, not trained
    assert (project / "metrics/metrics.json").read_bytes() == metrics_a
    assert json.loads((project / "metrics/train.json").read_text())["epochs"] == 2


def test_failing_stage_leaves_no_finished_looking_output(project, tmp_path):
    bad = tmp_path / "not-an-archive.tar.gz"
    bad.write_bytes(b"not gzip at all")
    import hashlib
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["data"].update(url=str(bad), md5=hashlib.md5(bad.read_bytes()).hexdigest())
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = subprocess.run(["dvc", "repro"], cwd=project, env=ENV, capture_output=True, text=True)
    assert result.returncode != 0
    assert "download: error:" in result.stderr + result.stdout
    assert "cannot extract as a gzip-compressed tar archive" in result.stderr + result.stdout
    assert not (project / "data/cifar-10-batches-py").exists()
    assert not [p.name for p in (project / "data").iterdir() if p.name.startswith(".")]
    assert not (project / "dvc.lock").exists()


def test_recipe_switch_with_exp_run_records_the_recipe_in_dvc_lock(project):
    sh(project, "dvc", "repro")
    sh(project, "git", "add", "-A")
    sh(project, "git", "commit", "-qm", "first run")
    out = sh(project, "dvc", "exp", "run", "-S", "train.recipe=resnet-cpu", "-S", "train.model.width=4",
             "-S", "train.optim.batch_size=32", "-S", "train.numerics.precision=fp32")
    assert ran(out) == {"train", "evaluate"}
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    locked = lock["stages"]["train"]["params"]["params.yaml"]
    assert locked["train"]["recipe"] == "resnet-cpu" and locked["train"]["model"]["width"] == 4
    assert locked["recipes"]["resnet-cpu"]["model"]["name"] == "resnet"
    meta = json.loads((project / "data/model.json").read_text())
    assert meta["train_params"]["model"]["name"] == "resnet"  # the recipe's value, resolved
    assert meta["train_params"]["augment"]["flip"] == "random" and meta["train_params"]["model"]["width"] == 4
    assert json.loads((project / "metrics/train.json").read_text())["recipe"] == "resnet-cpu"
    shown = json.loads(sh(project, "dvc", "exp", "show", "--json"))
    assert "resnet-cpu" in json.dumps(shown)


def test_queued_sweep_gate_and_ci_summary(project):
    sh(project, "dvc", "repro")
    sh(project, "git", "add", "-A")
    sh(project, "git", "commit", "-qm", "baseline run")
    base = project / "base-metrics.json"
    shutil.copy(project / "metrics/metrics.json", base)
    base_confusion = project / "base-confusion.csv"
    shutil.copy(project / "metrics/confusion.csv", base_confusion)

    # DVC 3.67's Hydra sweeper expands range(0,2) to seeds 0 and 1: a 2 x 2 grid
    sh(project, "dvc", "exp", "run", "--queue", "-S", "train.optim.lr=0.005,0.02", "-S",
       "train.numerics.seed=range(0,2)")
    sh(project, "dvc", "exp", "run", "--run-all", "-j", "1")
    shown = json.loads(sh(project, "dvc", "exp", "show", "--json"))
    runs = [exp for row in shown for exp in (row.get("experiments") or [])]
    trains = [run["revs"][0]["data"]["params"]["params.yaml"]["data"]["train"] for run in runs]
    grid = sorted((train["optim"]["lr"], train["numerics"]["seed"]) for train in trains)
    assert grid == [(0.005, 0), (0.005, 1), (0.02, 0), (0.02, 1)]
    summary = sh(project, sys.executable, "-m", "stages.seeds")  # runs `dvc exp show --json` itself
    assert summary.startswith("4 runs in 2 group(s)")
    assert "| train.optim.lr=0.005 | 2 | 0, 1 | " in summary and "| train.optim.lr=0.02 | 2 | 0, 1 | " in summary
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
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["gate"]["min_accuracy"] = 0.999
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    failing = subprocess.run([sys.executable, "-m", "stages.gate"], cwd=project, env=ENV, capture_output=True,
                             text=True)
    assert failing.returncode == 1 and "gate: error: accuracy" in failing.stderr
    assert "per_class_accuracy.cat" in sh(project, "dvc", "metrics", "diff", "HEAD", "--md", "--all")
    sh(project, "dvc", "params", "diff", "HEAD", "--md")  # the workflow's summary command runs


def test_kill_9_mid_training_then_repro_resumes_to_the_same_result(tmp_path, archive):
    settings = {"train.optim.epochs": 40, "train.optim.lr": 0.005}
    whole = make_project(tmp_path / "whole", archive, **settings)
    sh(whole, "dvc", "repro")

    killed = make_project(tmp_path / "killed", archive, **settings)
    checkpoint = killed / "data/checkpoints/train.pt"
    proc = subprocess.Popen(["dvc", "repro"], cwd=killed, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # a few more epochs, then kill the whole process group mid-epoch
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert checkpoint.exists() and not (killed / "data/model.pth").exists()

    out = sh(killed, "dvc", "repro")
    assert "resuming after epoch" in out
    assert ran(out) == {"train", "evaluate"}
    assert (killed / "metrics/metrics.json").read_bytes() == (whole / "metrics/metrics.json").read_bytes()
    assert (killed / "data/model.pth").read_bytes() == (whole / "data/model.pth").read_bytes()
    for name in ("train/loss", "train/accuracy", "lr"):  # the live records too: every epoch once
        path = f"metrics/live/plots/metrics/{name}.tsv"
        assert (killed / path).read_text() == (whole / path).read_text()


def test_push_to_a_local_remote_then_fresh_clone_and_pull_is_up_to_date(project, tmp_path):
    sh(project, "dvc", "repro")
    sh(project, "dvc", "remote", "add", "-d", "store", str(tmp_path / "remote"))
    sh(project, "git", "add", "-A")
    sh(project, "git", "commit", "-qm", "run and remote")
    sh(project, "dvc", "push")

    clone = tmp_path / "clone"
    sh(tmp_path, "git", "clone", "-q", str(project), str(clone))
    assert not (clone / "data/model.pth").exists()
    sh(clone, "dvc", "pull")
    assert (clone / "data/model.pth").read_bytes() == (project / "data/model.pth").read_bytes()
    assert "up to date" in sh(clone, "dvc", "status")
    out = sh(clone, "dvc", "repro")
    assert ran(out) == set() and "Data and pipelines are up to date" in out
