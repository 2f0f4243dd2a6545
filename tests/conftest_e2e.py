"""Fixtures of the end-to-end tests: one finished first run of the pipeline, shared.

A test module loads them with `pytest_plugins = ["tests.conftest_e2e"]`: as a plugin, a
session-scoped fixture is built once for every module that asks, where a fixture imported
into each module would be built once per module.

`first_run` is the project on the tiny archive after one `dvc repro`, committed: the state
most tests start from. A test that changes anything works on its own copy (`ran_project`),
which keeps the git history, the DVC cache and its run cache, so nothing is downloaded,
prepared or trained again unless the test changes what it depends on.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e_support import Run, copy_project, make_project, sh


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
