"""The CI quality gate on crafted metrics."""
from __future__ import annotations

import json

import pytest

from stages import gate
from stages.common import StageError
from tests.conftest import write_params


def write_metrics(path, accuracy):
    path.write_text(json.dumps({"accuracy": accuracy, "loss": 1.0}))
    return path


@pytest.fixture
def params(tmp_path):
    return write_params(tmp_path / "params.yaml", **{"gate.min_accuracy": 0.5, "gate.max_drop": 0.02})


def test_passes_above_threshold_and_within_drop(tmp_path, params, capsys):
    gate.main(["--params", str(params), "--metrics", str(write_metrics(tmp_path / "m.json", 0.55)),
               "--baseline", str(write_metrics(tmp_path / "base.json", 0.56))])
    out = capsys.readouterr().out
    assert "PASS accuracy 0.5500 >= gate.min_accuracy 0.5000" in out
    assert "PASS accuracy change -0.0100 against baseline 0.5600 (within gate.max_drop 0.0200)" in out


def test_fails_below_threshold(tmp_path, params):
    with pytest.raises(StageError, match=r"accuracy 0\.4900 < gate\.min_accuracy 0\.5000"):
        gate.main(["--params", str(params), "--metrics", str(write_metrics(tmp_path / "m.json", 0.49))])


def test_fails_on_a_drop_beyond_tolerance(tmp_path, params):
    with pytest.raises(StageError, match=r"accuracy change -0\.0300 against baseline 0\.6000 \(beyond"):
        gate.main(["--params", str(params), "--metrics", str(write_metrics(tmp_path / "m.json", 0.57)),
                   "--baseline", str(write_metrics(tmp_path / "base.json", 0.60))])


def test_bad_metrics_files_are_named(tmp_path, params):
    (tmp_path / "m.json").write_text('{"loss": 1}')
    with pytest.raises(StageError, match=r"m\.json: expected JSON with a numeric 'accuracy'"):
        gate.main(["--params", str(params), "--metrics", str(tmp_path / "m.json")])
    with pytest.raises(StageError, match=r"nope\.json: metrics file not found"):
        gate.main(["--params", str(params), "--metrics", str(tmp_path / "nope.json")])


def test_run_stage_turns_a_failure_into_exit_1(tmp_path, params):
    from stages.common import run_stage

    argv = ["--params", str(params), "--metrics", str(write_metrics(tmp_path / "m.json", 0.1))]
    with pytest.raises(SystemExit) as exit_info:
        run_stage("gate", gate.main, argv)
    assert str(exit_info.value.code).startswith("gate: error: accuracy 0.1000 <")
