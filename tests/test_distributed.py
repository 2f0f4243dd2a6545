"""Multi-process training: torchrun launch from the stage itself, and DDP matching one process."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from stages.distributed import launch_command
from tests.conftest import PROJECT, write_params


def test_one_process_needs_no_launch():
    assert launch_command("stages.train", ["--x"], env={}) is None
    assert launch_command("stages.train", ["--x"], env={"CIFAR_NPROC": "2", "LOCAL_RANK": "0"}) is None


def test_processes_per_node_launch_standalone_torchrun():
    cmd = launch_command("stages.train", ["--params", "p.yaml"], env={"CIFAR_NPROC": "2"})
    assert cmd == [sys.executable, "-m", "stages.distributed", "--nproc_per_node=2", "--nnodes=1",
                   "--standalone", "-m", "stages.train", "--params", "p.yaml"]


def test_several_nodes_need_a_rendezvous_endpoint():
    with pytest.raises(ValueError, match=r"CIFAR_NNODES=2 needs CIFAR_RDZV_ENDPOINT=host:port"):
        launch_command("stages.train", [], env={"CIFAR_NNODES": "2"})
    cmd = launch_command("stages.train", [], env={"CIFAR_NNODES": "2", "CIFAR_NPROC": "4",
                                                  "CIFAR_RDZV_ENDPOINT": "10.0.0.1:29500"})
    assert "--nnodes=2" in cmd and "--rdzv_backend=c10d" in cmd and "--rdzv_endpoint=10.0.0.1:29500" in cmd


def test_bad_process_count_is_named():
    with pytest.raises(ValueError, match=r"CIFAR_NPROC='two': expected a whole number >= 1"):
        launch_command("stages.train", [], env={"CIFAR_NPROC": "two"})


def run_stage(tmp_path, prepared, nproc):
    out = tmp_path / f"n{nproc}"
    out.mkdir()
    params = write_params(out / "params.yaml", **{"train.optim.epochs": 2, "train.optim.batch_size": 8,
                                                  "train.optim.lr": 0.01, "train.optim.momentum": 0.9,
                                                  "train.numerics.device": "cpu"})
    env = {**os.environ, "CIFAR_NPROC": str(nproc), "DVC_STUDIO_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "stages.train", "--params", str(params), "--prepared",
                             str(prepared), "--model", str(out / "model.pth"), "--model-meta", str(out / "m.json"),
                             "--metrics", str(out / "train.json"), "--history", str(out / "log.csv"),
                             "--checkpoint", str(out / "ckpt.pt"), "--live", str(out / "live")],
                            cwd=PROJECT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result.stderr


@pytest.mark.e2e  # torchrun and two ranks: processes of their own
def test_two_gloo_processes_train_the_same_model_as_one(tmp_path, prepared):
    one, _ = run_stage(tmp_path, prepared, 1)
    two, log = run_stage(tmp_path, prepared, 2)
    assert "stages.distributed --nproc_per_node=2" in log
    assert log.count("epoch 2/2") == 1  # only rank 0 logs epochs
    a, b = (torch.load(d / "model.pth", weights_only=True) for d in (one, two))
    worst = max((a[k] - b[k]).abs().max().item() for k in a)  # said on failure
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a), worst  # same global batches, averaged gradients
    m1, m2 = (json.loads((d / "train.json").read_text()) for d in (one, two))
    assert m2["processes"] == 2 and m1["processes"] == 1
    assert m2["val_accuracy"] == pytest.approx(m1["val_accuracy"], abs=0.05)
    assert m2["train_loss"] == pytest.approx(m1["train_loss"], rel=1e-4)
    # One set of outputs, from rank 0; the finished run's checkpoint is gone.
    assert sorted(p.name for p in two.iterdir()) == ["live", "log.csv", "m.json", "model.pth", "params.yaml",
                                                     "train.json"]
    live = json.loads((two / "live/metrics.json").read_text())
    assert live["step"] == 2 and live["train"]["loss"] == pytest.approx(m2["train_loss"])
    assert (two / "live/plots/metrics/train/loss.tsv").read_text().count("\n") == 3  # header + 2 epochs, once
