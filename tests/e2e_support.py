"""Scratch DVC projects for the end-to-end tests: a copy of the project in a git repo, fed the
tiny official-format archive, and the helpers that run commands in it. The fixtures built on
these are in tests/conftest_e2e.py."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from stages.params import set_dotted
from tests.conftest import PROJECT, write_params

COPIED = ["stages", "images", "dvc.yaml", "params.yaml", ".dvc/config", ".dvc/.gitignore", ".dvcignore", ".gitignore",
          "pyproject.toml"]
STAGES = ("download", "prepare", "train", "evaluate")
# One torch thread per stage unless the caller sets OMP_NUM_THREADS: the tiny batches gain nothing
# from more, and on a busy 2-core machine threads waiting for each other made an epoch of the
# tutorial MLP take 100 s instead of 11 s.
ENV = {"OMP_NUM_THREADS": "1", **os.environ,
       "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}",
       "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
       "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com",
       "DVC_STUDIO_OFFLINE": "1"}  # train's DVCLive must not post to a Studio account set up on this machine


def sh(cwd, *cmd: str) -> str:
    result = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def ran(output: str) -> set[str]:
    """The stages whose command `dvc repro` / `dvc exp run` output says it ran."""
    return {stage for stage in STAGES if f"Running stage '{stage}'" in output}


# The tutorial recipe, 2 epochs on the CPU, with training state beyond the weights: momentum buffers,
# the schedule's step, lookahead's slow weights, alternate flips' epoch parity; the kill -9 test
# resumes all of it. Reaches 70% test accuracy on the tiny archive (lr 1e-6: 6%; 0.01: 100%).
TRAIN = {"train.optim.epochs": 2, "train.optim.lr": 0.001, "train.optim.momentum": 0.9, "train.optim.nesterov": True,
         "train.optim.schedule": "linear", "train.optim.warmup": 0.2, "train.average.lookahead": 0.7,
         "train.augment.flip": "alternate", "train.augment.crop_pad": 2, "train.numerics.device": "cpu"}


# The learning rate of tests/conftest_e2e.py's second_run (the first run's is TRAIN's 0.001): one of
# the queued sweep's values, so that the sweep finds that point in the run cache.
SECOND_LR = 0.002
# What recipe_run sets: the resnet-cpu recipe narrowed to the tiny archive (7 steps an epoch), for
# enough epochs that a watcher sees the live metrics change while train runs.
RECIPE_EPOCHS = 4
RECIPE_SWITCH = ("-S", "train.recipe=resnet-cpu", "-S", "train.model.width=4", "-S", "train.optim.batch_size=32",
                 "-S", "train.numerics.precision=fp32", "-S", f"train.optim.epochs={RECIPE_EPOCHS}")


def make_project(root: Path, archive: tuple[Path, str], **dotted) -> Path:
    """A git repo holding a copy of the project, its params pointed at the tiny archive, TRAIN set."""
    for item in COPIED:
        src, dst = PROJECT / item, root / item
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__")) if src.is_dir()
         else shutil.copy(src, dst))
    write_params(root / "params.yaml", **{"data.url": str(archive[0]), "data.md5": archive[1], **TRAIN,
                                          "evaluate.device": "cpu", **dotted})
    sh(root, "git", "init", "-q")
    sh(root, "git", "add", "-A")
    sh(root, "git", "commit", "-qm", "init")
    return root


def set_params(project: Path, **dotted) -> None:
    """Edit a project's params.yaml in place: set_params(project, **{"train.optim.lr": 0.1})."""
    path = project / "params.yaml"
    path.write_text(yaml.safe_dump(set_dotted(yaml.safe_load(path.read_text()), dotted), sort_keys=False))


@dataclass(frozen=True)
class Run:
    """A scratch project after a run, kept as it was: copy it (copy_project) to change anything."""

    root: Path
    output: str  # what the run printed


def copy_project(src: Path, dst: Path) -> Path:
    """A private copy of a scratch project: workspace, git history, DVC cache and run cache."""
    shutil.copytree(src, dst, symlinks=True)
    return dst


@dataclass(frozen=True)
class WatchedRun(Run):
    """A run of `dvc exp run` whose train stage was watched (watch_live)."""

    reported: list[int]  # the epoch `dvc metrics show` reported at each new epoch while train ran
    in_exp_show: tuple[int, int] | None  # (that epoch, the workspace row's of `dvc exp show`), asked once
    exp_show: list[dict]  # `dvc exp show --json` once the run had finished


def live_step(project: Path) -> int | None:
    """The epoch DVC reports for the running experiment (`dvc metrics show` in the workspace)."""
    result = subprocess.run(["dvc", "metrics", "show", "--json"], cwd=project, env=ENV, capture_output=True,
                            text=True)  # stderr: a warning while train.json is being remade
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)  # keyed by revision; "" is the workspace
    data = shown.get("", {}).get("data", {}).get("metrics/live/metrics.json", {}).get("data")
    return data.get("step") if data else None


def exp_show(project: Path) -> list[dict]:
    """`dvc exp show --json`, parsed."""
    return json.loads(sh(project, "dvc", "exp", "show", "--json"))


def workspace_step(shown: list[dict]) -> int:
    """The epoch in the workspace row of `dvc exp show --json`."""
    workspace = next(row for row in shown if row["rev"] == "workspace")
    return workspace["data"]["metrics"]["metrics/live/metrics.json"]["data"]["step"]


def file_step(path: Path) -> int:
    try:
        return json.loads(path.read_text())["step"]
    except (OSError, ValueError, KeyError):  # not there yet, or caught mid-write
        return 0


def watch_live(project: Path, *args: str) -> WatchedRun:
    """`dvc exp run ARGS`, asking DVC for the live metrics whenever the train stage finishes an epoch.

    Whenever the live file shows a new epoch, the run is frozen (dvc and the stage: one process
    group) while DVC is asked, so that slow `dvc metrics show` calls on a busy machine cannot
    outlast training. Stops asking once two epochs were reported.
    """
    train_json, live_json = project / "metrics/train.json", project / "metrics/live/metrics.json"
    reported, last, in_exp_show = [], 0, None
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(["dvc", "exp", "run", *args], cwd=project, env=ENV, stdout=log,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
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
                                in_exp_show = (shown, workspace_step(exp_show(project)))
                        last = step
                finally:
                    os.killpg(proc.pid, signal.SIGCONT)
            code = proc.wait(timeout=600)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.seek(0)
        output = log.read()
    assert code == 0, f"dvc exp run {' '.join(args)} failed:\n{output}"
    return WatchedRun(project, output, reported, in_exp_show, exp_show(project))


# dvc-task's record of a queue worker (numbered from 1): {"pid": ..., "returncode": null until it exits, ...}
QUEUE_WORKER = ".dvc/tmp/exps/celery/dvc-exp-worker-{}.json"


def worker_exited(project: Path, since: float, jobs: int = 1) -> bool:
    """Whether the queue workers started after `since` (time.time()) have all exited."""
    for number in range(1, jobs + 1):
        record = project / QUEUE_WORKER.format(number)
        try:
            if record.stat().st_mtime < since or json.loads(record.read_text()).get("returncode") is None:
                return False
        except (OSError, ValueError):
            return False
    return True


def run_queue(project: Path, attempts: int = 3, grace: float = 60, limit: float = 1800, jobs: int = 1) -> str:
    """`dvc exp run --run-all -j <jobs>` (`dvc queue start -j <jobs>`, then following the logs), run again
    when its queue workers die with experiments left.

    DVC's worker can stop on a half-written message of its file-system broker ("Unrecoverable
    error: JSONDecodeError" in its log; treeverse/dvc#10398, #10428; seen here on a busy machine)
    after finishing its current experiment, and `--run-all` then waits forever for the rest. Its
    client only follows logs, so killing it loses nothing; a new `--run-all` starts a new worker
    for what is left in the queue, and returns at once when nothing is.
    """
    output = ""
    for _ in range(attempts):
        started = time.time()
        with tempfile.TemporaryFile("w+") as log:
            proc = subprocess.Popen(["dvc", "exp", "run", "--run-all", "-j", str(jobs)], cwd=project, env=ENV,
                                    stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True)
            exited = None  # when the worker was first seen to have exited
            while proc.poll() is None:
                time.sleep(1)
                if exited is None and worker_exited(project, started, jobs):
                    exited = time.monotonic()
                if (exited is not None and time.monotonic() - exited > grace) or time.time() - started > limit:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            log.seek(0)
            output += log.read()
        if proc.returncode == 0:
            return output
        assert exited is not None, f"dvc exp run --run-all failed:\n{output}"
    raise AssertionError(f"the experiment queue did not finish in {attempts} attempts:\n{output}")
