"""Training in several processes with torchrun and DistributedDataParallel, entered through dvc repro.

The train stage stays the one command in dvc.yaml. When the environment asks for
more than one process (CIFAR_NPROC per node, CIFAR_NNODES nodes meeting at
CIFAR_RDZV_ENDPOINT host:port), the stage re-runs itself under torchrun; each
rank then takes its share of every global batch of the epoch's seeded
permutation, gradients are averaged across ranks, and only rank 0 writes.
`train.optim.batch_size` stays the global batch, so results match one process up to
floating-point reduction order (and per-rank BatchNorm statistics).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
import sys

import torch
import torch.distributed as torch_dist

from .common import Interrupted

ENV_NPROC, ENV_NNODES, ENV_RDZV = "CIFAR_NPROC", "CIFAR_NNODES", "CIFAR_RDZV_ENDPOINT"


@dataclasses.dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = Dist()


def _env_int(name: str, env: dict) -> int:
    value = env.get(name, "1")
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"environment variable {name}={value!r}: expected a whole number >= 1")
    return int(value)


def launch_command(module: str, argv: list[str], env: dict | None = None) -> list[str] | None:
    """The torchrun command (torchrun's own main, through `torchrun` below) that re-runs `python -m module argv`
    in several processes, or None for one."""
    env = os.environ if env is None else env
    if "LOCAL_RANK" in env:  # already a torchrun worker
        return None
    nproc, nnodes = _env_int(ENV_NPROC, env), _env_int(ENV_NNODES, env)
    if nproc * nnodes == 1:
        return None
    cmd = [sys.executable, "-m", "stages.distributed", f"--nproc_per_node={nproc}", f"--nnodes={nnodes}"]
    if nnodes > 1:
        if not env.get(ENV_RDZV):
            raise ValueError(f"{ENV_NNODES}={nnodes} needs {ENV_RDZV}=host:port, the same on every node")
        cmd += ["--rdzv_backend=c10d", f"--rdzv_endpoint={env[ENV_RDZV]}"]
    else:
        cmd += ["--standalone"]
    return cmd + ["-m", module, *argv]


SHUTDOWN_GRACE_S = 1  # for torchrun that got the signal itself (Ctrl-C reaches the whole process group)


def run_workers(command: list[str]) -> int:
    """Run the torchrun command; return its exit code.

    Stopped by SIGINT or SIGTERM, pass the signal on to torchrun (unless it got it too and is already
    shutting down), which passes it to every worker; wait for them: rank 0 says what it kept, so
    this process stops without a word of its own.
    """
    proc = subprocess.Popen(command)
    try:
        return proc.wait()
    except Interrupted as err:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(SHUTDOWN_GRACE_S)
        if proc.poll() is None:
            proc.send_signal(err.signum)
            proc.wait()
        err.quiet = True
        raise


def setup(device: torch.device) -> tuple[Dist, torch.device]:
    """Join the process group when running under torchrun; return this rank and its device."""
    if "LOCAL_RANK" not in os.environ:
        return SINGLE, device
    dist = Dist(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"]))
    if device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    torch_dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist, device


def teardown(dist: Dist) -> None:
    if dist.world > 1:
        torch_dist.destroy_process_group()


def all_sum(tensor: torch.Tensor, dist: Dist) -> torch.Tensor:
    if dist.world > 1:
        torch_dist.all_reduce(tensor, op=torch_dist.ReduceOp.SUM)
    return tensor


def all_max(tensor: torch.Tensor, dist: Dist) -> torch.Tensor:
    if dist.world > 1:
        torch_dist.all_reduce(tensor, op=torch_dist.ReduceOp.MAX)
    return tensor


# What torchrun logs when it passes a stop signal on to its workers; rank 0 says it in one line instead.
TORCHRUN_STOP_MESSAGES = ("Received %s death signal", "Sending process %s closing signal")


def torchrun(argv: list[str]) -> int:
    """torch.distributed.run's main, stopped by SIGINT or SIGTERM without its traceback and warnings."""
    import logging

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.run import main

    quiet = logging.Filter()
    quiet.filter = lambda record: not str(record.msg).startswith(TORCHRUN_STOP_MESSAGES)
    for name in ("torch.distributed.elastic.agent.server.api", "torch.distributed.elastic.multiprocessing.api"):
        logging.getLogger(name).addFilter(quiet)
    try:
        main(argv)
    except SignalException as err:
        return 128 + int(err.sigval)
    return 0


if __name__ == "__main__":
    sys.exit(torchrun(sys.argv[1:]))
