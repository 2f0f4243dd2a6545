"""Per-epoch records: the history CSV and DVCLive's folder follow training epoch by epoch, and resume."""
from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
import torch
import yaml
from torch import nn

from stages import trainer
from stages.params import parse_params
from stages.tracking import epoch_log
from tests.conftest import PROJECT, params_dict


@pytest.fixture(autouse=True)
def no_studio(monkeypatch):
    monkeypatch.setenv("DVC_STUDIO_OFFLINE", "1")  # never post to a Studio account configured on this machine


def tiny_run(tmp_path, epochs=3, val_images=4, crash_in_epoch=None, checkpoint=None, spy=None):
    """fit() on 8 random images with the real epoch_log; returns (history, csv path, live folder)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    t = trainer.Trainer(model, [torch.optim.SGD(model.parameters(), lr=0.01)])
    gen = torch.Generator().manual_seed(1)
    data = {"images": torch.randn(8, 3, 32, 32, generator=gen), "labels": torch.arange(8)}
    val = {"images": torch.randn(val_images, 3, 32, 32, generator=gen), "labels": torch.arange(val_images)}
    p = parse_params(params_dict(**{"train.optim.epochs": epochs, "train.optim.batch_size": 4})).train
    csv, live = tmp_path / "log.csv", tmp_path / "live"
    calls = []

    def train_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == crash_in_epoch:
            raise KeyboardInterrupt  # as good as a kill: nothing after this line runs
        return real_epoch(*args, **kwargs)

    real_epoch, trainer.train_epoch = trainer.train_epoch, train_epoch
    try:
        with epoch_log(csv, live) as on_epoch:
            history = trainer.fit(t, data, val, p, checkpoint, {"run": 1} if checkpoint else None,
                                  on_epoch=(lambda h: (on_epoch(h), spy(h))) if spy else on_epoch)
    finally:
        trainer.train_epoch = real_epoch
    return history, csv, live


def tsv(path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t")


def test_every_epoch_reaches_dvclive_and_the_csv_when_it_ends(tmp_path):
    dvc_yaml = (PROJECT / "dvc.yaml").read_bytes()
    seen = []
    csv, live = tmp_path / "log.csv", tmp_path / "live"
    history, _, _ = tiny_run(tmp_path, spy=lambda h: seen.append(
        (len(h), json.loads((live / "metrics.json").read_text())["step"], len(pd.read_csv(csv)))))
    assert seen == [(1, 1, 1), (2, 2, 2), (3, 3, 3)]  # written during training, not only at the end

    summary = json.loads((live / "metrics.json").read_text())
    last = history[-1]
    assert summary == {"train": {"loss": last["train_loss"], "accuracy": last["train_accuracy"]},
                       "val": {"loss": last["val_loss"], "accuracy": last["val_accuracy"]},
                       "lr": last["lr"], "seconds": last["seconds"],
                       "images_per_second": last["images_per_second"], "step": 3}
    loss = tsv(live / "plots/metrics/train/loss.tsv")
    assert loss["step"].tolist() == [1, 2, 3]  # step = epoch, as in the CSV
    assert loss["loss"].tolist() == pytest.approx([row["train_loss"] for row in history])
    assert tsv(live / "plots/metrics/val/accuracy.tsv")["accuracy"].tolist() == pytest.approx(
        [row["val_accuracy"] for row in history])
    assert pd.read_csv(csv)["train_loss"].tolist() == pytest.approx([row["train_loss"] for row in history])
    # dvcyaml=False: DVCLive writes no dvc.yaml of its own and leaves the project's alone.
    assert not list(live.rglob("dvc.yaml")) and (PROJECT / "dvc.yaml").read_bytes() == dvc_yaml
    assert sorted(p.name for p in live.iterdir()) == ["metrics.json", "plots"]  # no report, no params


def test_without_validation_dvclive_logs_no_val_metrics_and_the_csv_keeps_empty_columns(tmp_path):
    _, csv, live = tiny_run(tmp_path, epochs=2, val_images=0)
    assert "val" not in json.loads((live / "metrics.json").read_text())
    assert not (live / "plots/metrics/val").exists()
    assert pd.read_csv(csv)["val_loss"].isna().all()


@pytest.mark.parametrize("dvc_deleted_outputs", [True, False])
def test_resumed_run_ends_with_the_records_of_an_uninterrupted_one(tmp_path, dvc_deleted_outputs):
    history, whole_csv, whole_live = tiny_run(tmp_path / "whole", checkpoint=tmp_path / "whole.ckpt")

    checkpoint = tmp_path / "crash.ckpt"
    with pytest.raises(KeyboardInterrupt):
        tiny_run(tmp_path / "crash", crash_in_epoch=3, checkpoint=checkpoint)
    live = tmp_path / "crash/live"
    assert json.loads((live / "metrics.json").read_text())["step"] == 2
    if dvc_deleted_outputs:  # dvc repro deletes a stage's outputs before running it; a run by hand does not
        shutil.rmtree(live)
        (tmp_path / "crash/log.csv").unlink()
    resumed, csv, live = tiny_run(tmp_path / "crash", checkpoint=checkpoint)

    timings = ["seconds", "images_per_second"]  # of the epochs each run trained itself
    pd.testing.assert_frame_equal(pd.read_csv(csv).drop(columns=timings),
                                  pd.read_csv(whole_csv).drop(columns=timings))
    for name in ("train/loss", "train/accuracy", "val/loss", "val/accuracy", "lr"):
        path = f"plots/metrics/{name}.tsv"
        assert (live / path).read_text() == (whole_live / path).read_text(), name  # no epoch twice, none lost
    assert tsv(live / "plots/metrics/seconds.tsv")["step"].tolist() == [1, 2, 3]
    summary, expected = (json.loads((d / "metrics.json").read_text()) for d in (live, whole_live))
    assert {k: v for k, v in summary.items() if k not in timings} == {
        k: v for k, v in expected.items() if k not in timings}


def test_processes_other_than_rank_0_write_nothing(tmp_path):
    with epoch_log(tmp_path / "log.csv", tmp_path / "live", enabled=False) as on_epoch:
        assert on_epoch is None
    assert list(tmp_path.iterdir()) == []


def test_dvc_yaml_declares_the_live_folder_its_metrics_and_the_model_artifact():
    from dvc.repo import Repo

    spec = yaml.safe_load((PROJECT / "dvc.yaml").read_text())
    train_stage = spec["stages"]["train"]
    assert "--live ${paths.live}" in train_stage["cmd"]
    # the folder's two outputs: the TSVs a plain cached entry, the latest epoch a metrics file in git
    # (`cache: false` under the stage's own metrics: keeps the run cache on)
    assert "${paths.live}/plots" in train_stage["outs"]
    assert {"${paths.live}/metrics.json": {"cache": False}} in train_stage["metrics"]
    with Repo(str(PROJECT)) as repo:  # DVC's own reading, vars resolved
        artifact = repo.artifacts.read()["dvc.yaml"]["cifar10-classifier"]
    assert (artifact.path, artifact.type) == ("data/model.pth", "model")
    assert artifact.desc and {"cifar10", "pytorch"} <= set(artifact.labels)


def test_without_dvclive_installed_the_csv_is_still_written(tmp_path, monkeypatch, caplog):
    import builtins

    real_import = builtins.__import__

    def no_dvclive(name, *args, **kwargs):
        if name == "dvclive" or name.startswith("dvclive."):
            raise ImportError("No module named 'dvclive'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_dvclive)
    with epoch_log(tmp_path / "log.csv", tmp_path / "live") as on_epoch:
        on_epoch([{"epoch": 1, "train_loss": 1.0, "train_accuracy": 0.5, "val_loss": None, "val_accuracy": None,
                   "seconds": 1.0, "images_per_second": 10.0, "lr": 0.1}])
    assert (tmp_path / "log.csv").is_file() and not (tmp_path / "live").exists()
    assert "DVCLive is not installed" in caplog.text
