"""benchmarks/pipeline_vs_tutorial.py end to end on a tiny archive: full runs, then interleaved timing rounds."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import PROJECT


@pytest.mark.e2e
def test_full_runs_then_interleaved_rounds_in_swapped_order(tmp_path, archive):
    out = tmp_path / "2a.json"
    proc = subprocess.run([sys.executable, str(PROJECT / "benchmarks/pipeline_vs_tutorial.py"), "--archive",
                           str(archive[0]), "--md5", archive[1], "--epochs", "1", "--rounds", "3", "--json", str(out)],
                          cwd=tmp_path, capture_output=True, text=True, env={"OMP_NUM_THREADS": "1", **os.environ})
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["epochs"] == 1 and 0 <= result["pipeline"]["test_accuracy"] <= 1
    assert "without its md5 checks" in result["tutorial"]["dataset"]  # the tiny archive is not the official data
    rounds = result["interleaved"]
    assert [len(v) for v in rounds["seconds_per_epoch"].values()] == [3, 3]
    medians = rounds["median_seconds_per_epoch"]
    assert result["speedup_interleaved"] == rounds["speedup"] == medians["tutorial"] / medians["pipeline"]
    order = [line.split()[3].rstrip(":") for line in proc.stdout.splitlines() if line.startswith("=== round")]
    assert order == ["pipeline", "tutorial", "tutorial", "pipeline", "pipeline", "tutorial"]
    assert "interleaved, 3 one-epoch rounds each" in proc.stdout
