"""Shared by the benchmark scripts: run dvc.yaml's stage commands without DVC, and describe the machine.

The GPU machines these benchmarks also run on have no DVC, so the stages run as
the same commands dvc.yaml gives them, in a scratch copy of the project whose
params.yaml gets the overrides asked for.
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch
import yaml

from stages.params import set_dotted
from stages.precision import probe_cpu

ROOT = Path(__file__).resolve().parents[1]


def stage_commands(dvc_yaml: Path) -> list[tuple[str, str]]:
    """(name, command) of each stage in order, with dvc.yaml's ${paths.*} vars filled in."""
    spec = yaml.safe_load(dvc_yaml.read_text())
    paths = {k: v for var in spec.get("vars", []) for k, v in var.get("paths", {}).items()}
    fill = lambda cmd: re.sub(r"\$\{paths\.(\w+)\}", lambda m: paths[m.group(1)], cmd)  # noqa: E731
    return [(name, fill(stage["cmd"])) for name, stage in spec["stages"].items()]


@contextlib.contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    """A temporary folder for a benchmark's project copy, removed when the benchmark ends, fails, or
    is stopped by Ctrl-C or SIGTERM (kill's default): its prepared data is about 1 GB on full data."""
    def stop(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
            yield Path(tmp)
    finally:
        signal.signal(signal.SIGTERM, previous)


def copy_project(work: Path, overrides: dict) -> None:
    for item in ("stages", "dvc.yaml", "params.yaml"):
        (shutil.copytree if (ROOT / item).is_dir() else shutil.copy)(ROOT / item, work / item)
    params = set_dotted(yaml.safe_load((work / "params.yaml").read_text()), overrides)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def run_stages(work: Path, only: tuple[str, ...] | None = None) -> dict:
    """Run the stage commands in `work`; return seconds and peak memory (MiB) of each."""
    figures = {}
    for name, cmd in stage_commands(work / "dvc.yaml"):
        if only and name not in only:
            continue
        print(f"--- stage {name}: {cmd}", flush=True)
        argv = shlex.split(cmd)
        argv[0] = sys.executable if argv[0] == "python" else argv[0]
        start = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=work)
        try:
            _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak RSS, in KiB on Linux
        except BaseException:  # stopped (SIGTERM, Ctrl-C): the stage must not run on in a deleted folder
            proc.kill()
            proc.wait()
            raise
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            raise SystemExit(f"stage {name} failed with exit code {proc.returncode}")
        figures[name] = {"seconds": time.perf_counter() - start, "peak_rss_mib": usage.ru_maxrss / 1024}
    return figures


def results(work: Path) -> dict:
    metrics = json.loads((work / "metrics/metrics.json").read_text())
    train = json.loads((work / "metrics/train.json").read_text())
    return {"test_accuracy": metrics["accuracy"], "train_seconds": train["train_seconds"],
            "per_class_accuracy": metrics["per_class_accuracy"], "device": train["device"],
            "recipe": train["recipe"], "epochs": train["epochs"]}


def machine() -> str:
    cpu = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    bf16 = probe_cpu()
    kind = "native bf16" if bf16.avx512_bf16 or bf16.amx else "no native bf16"
    caps = bf16.capability + (f", ONEDNN_MAX_CPU_ISA={bf16.onednn_isa}" if bf16.onednn_isa else "")
    return (f"{os.cpu_count()} cores {cpu} ({kind}, kernels {caps}){gpu}, torch {torch.__version__}, "
            f"Python {platform.python_version()}")


def parse_set(items: list[str]) -> dict:
    """--set KEY=VALUE arguments as dotted params overrides, values read as YAML."""
    pairs = [item.split("=", 1) for item in items]
    if any(len(p) != 2 for p in pairs):
        raise SystemExit("--set takes KEY=VALUE, e.g. --set train.optim.epochs=8")
    return {key: yaml.safe_load(value) for key, value in pairs}


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
