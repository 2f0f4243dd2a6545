"""Live metrics during a real `dvc exp run`, and the model registry entry resolved through a remote.

Both start from a copy of the session's first run (tests/conftest_e2e.py)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from tests.e2e_support import ENV, sh

pytestmark = pytest.mark.e2e
pytest_plugins = ["tests.conftest_e2e"]
EPOCHS = 5  # of the watched run: each new epoch is seen (the run is frozen while DVC is asked)


def live_step(project) -> int | None:
    """The epoch DVC reports for the running experiment (`dvc metrics show` in the workspace)."""
    result = subprocess.run(["dvc", "metrics", "show", "--json"], cwd=project, env=ENV, capture_output=True,
                            text=True)  # stderr: a warning while train.json is being remade
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)  # keyed by revision; "" is the workspace
    data = shown.get("", {}).get("data", {}).get("metrics/live/metrics.json", {}).get("data")
    return data.get("step") if data else None


def exp_show_step(project) -> int:
    """The epoch in the workspace row of `dvc exp show`."""
    rows = json.loads(subprocess.run(["dvc", "exp", "show", "--json"], cwd=project, env=ENV, capture_output=True,
                                     text=True, check=True).stdout)
    workspace = next(row for row in rows if row["rev"] == "workspace")
    return workspace["data"]["metrics"]["metrics/live/metrics.json"]["data"]["step"]


def file_step(path) -> int:
    try:
        return json.loads(path.read_text())["step"]
    except (OSError, ValueError, KeyError):  # not there yet, or caught mid-write
        return 0


def test_metrics_dvc_reports_change_while_the_train_stage_runs(ran_project):
    project = ran_project  # the committed baseline run
    train_json, live_json = project / "metrics/train.json", project / "metrics/live/metrics.json"

    proc = subprocess.Popen(["dvc", "exp", "run", "-S", f"train.optim.epochs={EPOCHS}"], cwd=project, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    # Whenever the live file shows a new epoch, freeze the run (dvc and the stage: one process group)
    # and ask DVC, so that slow `dvc metrics show` calls on a busy machine cannot outlast training.
    reported, last, in_exp_show = [], 0, None
    deadline = time.monotonic() + 600
    try:
        while proc.poll() is None and len(set(reported)) < 2 and time.monotonic() < deadline:
            step = file_step(live_json)
            if step <= last or train_json.exists():  # train.json: deleted before train runs, written at its end
                time.sleep(0.02)
                continue
            os.killpg(proc.pid, signal.SIGSTOP)
            try:
                if not train_json.exists():
                    shown = live_step(project)
                    if shown:
                        reported.append(shown)
                        if in_exp_show is None:
                            in_exp_show = (shown, exp_show_step(project))
                    last = step
            finally:
                os.killpg(proc.pid, signal.SIGCONT)
        assert proc.wait(timeout=600) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert len(set(reported)) >= 2, f"dvc metrics show during the train stage reported epochs {reported}"
    assert reported == sorted(reported) and all(1 <= s < EPOCHS for s in reported)
    assert in_exp_show[0] == in_exp_show[1]  # `dvc exp show` sees the same epoch in the workspace row
    assert live_step(project) == EPOCHS and exp_show_step(project) == EPOCHS  # and after the run, the last epoch


def test_model_registry_entry_resolves_through_a_local_remote(ran_project, tmp_path):
    project = ran_project
    sh(project, "dvc", "remote", "add", "-d", "store", str(tmp_path / "remote"))
    sh(project, "git", "add", "-A")
    sh(project, "git", "commit", "-qm", "first model and a remote")
    sh(project, "git", "tag", "-a", "cifar10-classifier@v1.0.0", "-m", "first model")  # a GTO version tag
    sh(project, "dvc", "push")
    shared = tmp_path / "shared.git"  # what a teammate clones: git history only, no DVC cache
    sh(tmp_path, "git", "clone", "-q", "--bare", str(project), str(shared))
    shutil.rmtree(project / ".dvc/cache")  # so the model can only come from the remote

    consumer = tmp_path / "consumer"
    consumer.mkdir()
    out = sh(consumer, "dvc", "artifacts", "get", str(shared), "cifar10-classifier", "-o", "model.pth")
    assert "Downloaded 1 file(s)" in out
    assert (consumer / "model.pth").read_bytes() == (project / "data/model.pth").read_bytes()
    out = sh(consumer, "dvc", "artifacts", "get", str(shared), "cifar10-classifier", "--rev", "v1.0.0",
             "-o", "v1.pth")
    assert (consumer / "v1.pth").read_bytes() == (project / "data/model.pth").read_bytes()

    missing = subprocess.run(["dvc", "artifacts", "get", str(shared), "no-such-model"], cwd=consumer,
                             env=ENV, capture_output=True, text=True)
    assert missing.returncode == 1 and "no-such-model" in missing.stderr + missing.stdout

    from dvc.api import artifacts_show
    shown = artifacts_show("cifar10-classifier", repo=str(shared))
    assert shown["path"] == "data/model.pth"
