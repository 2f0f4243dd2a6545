"""The training tests pass on the other kind of CPU too.

CPU kernels differ in their last bits from one instruction set to the next, so a test
tuned on one machine can fail on another (it happened: an AVX512 machine passed a
learning test that an AVX2-only machine failed). Here the training tests run again in a
subprocess with PyTorch's kernels capped at AVX2, the common laptop and cloud case. On a
machine whose kernels are AVX2-class already, that run would repeat the suite's own run on the
same kernels (a minute or more for nothing), so it skips, saying so.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import torch

from tests.conftest import PROJECT

AVX2_CAP = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
AVX2_OR_LESS = ("AVX2", "DEFAULT", "NO AVX")  # torch.backends.cpu.get_cpu_capability() below AVX512
pytestmark = pytest.mark.e2e  # the training tests again, in a pytest process of their own
CAPPED_TESTS = ["tests/test_train.py", "tests/test_precision.py", "tests/test_models.py"]


def run_capped(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=PROJECT, env={**os.environ, **AVX2_CAP},
                          capture_output=True, text=True)


@pytest.mark.skipif(all(os.environ.get(k) == v for k, v in AVX2_CAP.items()),
                    reason="this process already runs under the AVX2 cap")
@pytest.mark.skipif("ATEN_CPU_CAPABILITY" not in os.environ and torch.backends.cpu.get_cpu_capability() in AVX2_OR_LESS,
                    reason="this CPU's kernels are AVX2-class already: the capped run would repeat this run")
def test_training_tests_pass_with_cpu_kernels_capped_at_avx2():
    capability = run_capped("-c", "import torch; print(torch.backends.cpu.get_cpu_capability())")
    assert capability.stdout.strip() in AVX2_OR_LESS, capability  # the cap took effect
    # -n 0: one process, beside the suite's other worker (pyproject's addopts ask for two)
    result = run_capped("-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0", *CAPPED_TESTS)
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr[-2000:]
    assert result.returncode == 0, f"under {AVX2_CAP}:\n{result.stdout[-6000:]}\n{result.stderr[-2000:]}"
    assert re.search(r"\b\d+ passed\b", summary) and "failed" not in summary, summary
