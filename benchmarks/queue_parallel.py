"""What parallel queue workers cost: wall time of `dvc exp run --run-all -j 1` against `-j 2` for the same
queued experiments, on the tiny synthetic archive the end-to-end tests use (1 epoch each, the CPU).

    .venv/bin/python benchmarks/queue_parallel.py [--experiments 2]

Each -j runs in its own copy of one baseline project (git repo, DVC cache); the experiments' params
are new to the run cache, so both train. Prints the seconds of each and the machine.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.runner import machine  # noqa: E402
from tests.cifar_archive import official_members, write_archive  # noqa: E402
from tests.e2e_support import make_project, run_queue, sh  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiments", type=int, default=2)
    args = ap.parse_args(argv)
    # ignore_cleanup_errors: the queue workers may still be writing their logs as they wind down
    with tempfile.TemporaryDirectory(prefix="queue-parallel-", ignore_cleanup_errors=True) as tmp:
        root = Path(tmp)
        archive = root / "cifar-10-python.tar.gz"
        md5 = write_archive(archive, official_members(train_per_class=20, test_per_class=5))
        base = make_project(root / "base", (archive, md5), **{"train.optim.epochs": 1})
        sh(base, "dvc", "repro")
        sh(base, "git", "add", "-A")
        sh(base, "git", "commit", "-qm", "baseline")
        seconds = {}
        for jobs in (1, 2):
            project = root / f"j{jobs}"
            shutil.copytree(base, project, symlinks=True)
            for i in range(args.experiments):
                sh(project, "dvc", "exp", "run", "--queue", "-S", f"train.optim.lr={0.002 + 0.001 * i}")
            start = time.perf_counter()
            run_queue(project, jobs=jobs)
            seconds[jobs] = time.perf_counter() - start
            print(f"-j {jobs}: {args.experiments} experiments in {seconds[jobs]:.0f}s", flush=True)
        print(f"-j 2 / -j 1: {seconds[2] / seconds[1]:.2f}; {machine()}")


if __name__ == "__main__":
    main()
