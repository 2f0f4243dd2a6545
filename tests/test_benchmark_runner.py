"""benchmarks/runner.py: a benchmark stopped by kill (SIGTERM) leaves neither its scratch copy of the
project (about 1 GB of prepared data on the full set) nor a stage process running on in it."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PROJECT

pytestmark = pytest.mark.e2e  # a benchmark process and its stage

# A benchmark in miniature: a scratch folder whose one stage runs until it is stopped.
BENCHMARK = '''
import sys
sys.path.insert(0, sys.argv[1])
from benchmarks.runner import run_stages, scratch
with scratch("runner-test-") as work:
    (work / "dvc.yaml").write_text(
        "stages:\\n  slow:\\n    cmd: python -c \\"import os, time; print('child', os.getpid(), flush=True); "
        "time.sleep(300)\\"\\n")
    print("work", work, flush=True)
    run_stages(work)
'''


def test_sigterm_removes_the_scratch_folder_and_stops_the_stage(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", BENCHMARK, str(PROJECT)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "TMPDIR": str(tmp_path)})
    work = child = None
    for line in proc.stdout:
        if line.startswith("work "):
            work = Path(line.split(maxsplit=1)[1].strip())
        elif line.startswith("child "):
            child = int(line.split()[1])
            break
    assert work is not None and work.is_dir() and child is not None
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    proc.stdout.close()
    assert not work.exists()
    assert list(tmp_path.iterdir()) == []
    try:
        os.kill(child, 0)
    except ProcessLookupError:
        pass  # the stage was killed and reaped
    else:
        os.kill(child, signal.SIGKILL)
        raise AssertionError(f"stage process {child} still runs after its benchmark was stopped")
