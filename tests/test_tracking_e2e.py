"""Live metrics during a real `dvc exp run`, and the model registry entry resolved through a remote.

Both read runs of the session (tests/conftest_e2e.py): the watched recipe switch and the pushed first run."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.e2e_support import ENV, RECIPE_EPOCHS, copy_project, live_step, sh, workspace_step

pytestmark = pytest.mark.e2e
pytest_plugins = ["tests.conftest_e2e"]


def test_metrics_dvc_reports_change_while_the_train_stage_runs(recipe_run):
    # recipe_run: `dvc exp run` of RECIPE_EPOCHS epochs, `dvc metrics show` asked at each new epoch
    reported, in_exp_show = recipe_run.reported, recipe_run.in_exp_show
    assert len(set(reported)) >= 2, f"dvc metrics show during the train stage reported epochs {reported}"
    # The last epoch's live record is written before train.json, so a loaded machine can show it while train runs.
    assert reported == sorted(reported) and all(1 <= s <= RECIPE_EPOCHS for s in reported)
    assert in_exp_show[0] == in_exp_show[1]  # `dvc exp show` sees the same epoch in the workspace row
    # and after the run, the last epoch
    assert live_step(recipe_run.root) == RECIPE_EPOCHS and workspace_step(recipe_run.exp_show) == RECIPE_EPOCHS


def test_model_registry_entry_resolves_through_a_local_remote(pushed, tmp_path):
    project = copy_project(pushed, tmp_path / "project")  # tagged cifar10-classifier@v1.0.0 (GTO), pushed
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
