"""Fixtures of the end-to-end tests: one finished first run of the pipeline, shared.

A test module loads them with `pytest_plugins = ["tests.conftest_e2e"]`: as a plugin, a
session-scoped fixture is built once for every module that asks, where a fixture imported
into each module would be built once per module.

`first_run` is the project on the tiny archive after one `dvc repro`, committed: the state
most tests start from. A test that changes anything works on its own copy (`ran_project`),
which keeps the git history, the DVC cache and its run cache, so nothing is downloaded,
prepared or trained again unless the test changes what it depends on. The other fixtures are
runs that several tests read (each stage process costs seconds of imports, so a run that tests
only inspect is made once): never change a shared run; copy it (copy_project) first.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e_support import (RECIPE_SWITCH, SECOND_LR, Run, WatchedRun, copy_project, make_project, set_params, sh,
                               watch_live)


@pytest.fixture(scope="session")
def first_run(tmp_path_factory, archive) -> Run:
    """The project after its first `dvc repro` (tests.e2e_support.TRAIN), outputs committed."""
    root = make_project(tmp_path_factory.mktemp("first_run") / "project", archive)
    output = sh(root, "dvc", "repro")
    sh(root, "git", "add", "-A")
    sh(root, "git", "commit", "-qm", "first run")
    return Run(root, output)


@pytest.fixture
def ran_project(first_run, tmp_path) -> Path:
    """This test's own copy of `first_run`'s project."""
    return copy_project(first_run.root, tmp_path / "project")


@pytest.fixture(scope="session")
def second_run(first_run, tmp_path_factory) -> Run:
    """A copy of first_run after train.optim.lr 0.001 -> SECOND_LR (not committed) and `dvc repro`:
    its run cache holds both trainings."""
    project = copy_project(first_run.root, tmp_path_factory.mktemp("second_run") / "project")
    set_params(project, **{"train.optim.lr": SECOND_LR})
    return Run(project, sh(project, "dvc", "repro"))


@pytest.fixture(scope="session")
def recipe_run(first_run, tmp_path_factory) -> WatchedRun:
    """A copy of first_run after `dvc exp run` with RECIPE_SWITCH, its live metrics asked for while
    train ran (tests.e2e_support.watch_live)."""
    project = copy_project(first_run.root, tmp_path_factory.mktemp("recipe_run") / "project")
    return watch_live(project, *RECIPE_SWITCH)


@pytest.fixture(scope="session")
def pushed(first_run, tmp_path_factory) -> Path:
    """A copy of first_run with a local default remote, committed, the model tagged as version
    v1.0.0 of the registry entry (a GTO tag), and `dvc push`ed: what a teammate clones."""
    root = tmp_path_factory.mktemp("pushed")
    project = copy_project(first_run.root, root / "project")
    sh(project, "dvc", "remote", "add", "-d", "store", str(root / "remote"))
    sh(project, "git", "add", "-A")
    sh(project, "git", "commit", "-qm", "first model and a remote")
    sh(project, "git", "tag", "-a", "cifar10-classifier@v1.0.0", "-m", "first model")
    sh(project, "dvc", "push")
    return project
