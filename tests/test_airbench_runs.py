"""benchmarks/airbench_runs.py: airbench's own train93/train94 on the CPU, for a few steps on a tiny archive."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from benchmarks import recipe_time
from benchmarks.airbench_runs import write_airbench_data

airbench = pytest.importorskip("airbench", reason="airbench is not installed (pip install -e '.[test]' installs it)")


@pytest.mark.e2e  # a process of its own: --cpu patches torch for the whole process
def test_variant_93_trains_airbench_train93_on_the_cpu(tmp_path, archive):
    write_airbench_data(archive[0], tmp_path / "cifar10")
    out = tmp_path / "runs.json"
    # the command benchmarks/recipe_time.py --airbench 93 times, with batches that fit the tiny archive
    command = [*recipe_time.airbench_command("93", 1, 0, out), "--batch-size", "50"]
    proc = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True,
                          env={"OMP_NUM_THREADS": "1", **os.environ})
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["variant"] == "93" and report["epochs"] == 1 and report["batch_size"] == 50
    assert report["widths"] == {"block1": 64, "block2": 128, "block3": 128}  # train93's, not train94's 256s
    [run] = report["runs"]
    assert run["seed"] == 0 and 0 <= run["test_accuracy"] <= 1 and run["train_seconds"] > 0
    assert "airbench seed 0:" in proc.stdout
    assert recipe_time.airbench_seconds_per_epoch(report) == run["train_seconds"]  # 1 epoch
    assert recipe_time.airbench_epochs("93") == (11, 3)  # a full train93 run: 11 epochs, its bias trains in 3
    assert report["whiten_bias_epochs"] == 3  # its own


@pytest.mark.e2e  # a process of its own, as above
def test_variant_93_can_time_an_epoch_with_its_whitening_bias_frozen(tmp_path, archive):
    write_airbench_data(archive[0], tmp_path / "cifar10")
    out = tmp_path / "runs.json"
    command = [*recipe_time.airbench_command("93", 1, 0, out, bias_epochs=0), "--batch-size", "50"]
    proc = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True,
                          env={"OMP_NUM_THREADS": "1", **os.environ})
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["whiten_bias_epochs"] == 0 and report["runs"][0]["train_seconds"] > 0


def test_an_unknown_variant_is_refused_with_the_choices(capsys):
    from benchmarks import airbench_runs

    with pytest.raises(SystemExit):
        airbench_runs.main(["--variant", "95", "--json", "x.json"])
    err = capsys.readouterr().err  # newer Pythons quote the choices, 3.11 does not
    assert "argument --variant: invalid choice: '95'" in err and "93" in err.split("choose from")[1]


def test_a_negative_whiten_bias_epochs_is_refused_naming_the_value(capsys):
    from benchmarks import airbench_runs

    with pytest.raises(SystemExit):
        airbench_runs.main(["--whiten-bias-epochs", "-1", "--json", "x.json"])
    assert "--whiten-bias-epochs -1: expected 0 or more epochs" in capsys.readouterr().err
