"""Faults a user meets (docs/faults.md, "What happens when..."): a stop signal, a full disk, a damaged
checkpoint or prepared file, running out of memory. Signals are sent to real stage processes; a full
disk is a real file-size limit (RLIMIT_FSIZE) in a subprocess or an injected ENOSPC."""
from __future__ import annotations

import copy
import errno
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

from stages import common, download, evaluate, trainer
from stages.common import DiskFull, StageError, disk_full
from tests.conftest import PROJECT, write_params
from tests.test_evaluate import run_evaluate, trained  # noqa: F401 - a fixture
from tests.test_train import RESUMABLE, count_epochs, run_train, weights

ENV = {"OMP_NUM_THREADS": "1", **os.environ, "DVC_STUDIO_OFFLINE": "1"}
TIMING = ("seconds", "images_per_second", "train_seconds", "warmup_seconds")  # differ between any two runs


def start_stage(args: list[str], cwd, file_limit: int | None = None) -> subprocess.Popen:
    """A stage process as DVC starts one, SIGINT at its default even where this test runs in the background.
    `cwd`: the test's own folder, outside any DVC repo (DVCLive opens the one it finds)."""
    def child():
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if file_limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))

    env = {**ENV, "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT), os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen([sys.executable, *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, preexec_fn=child)


def finish(proc: subprocess.Popen, timeout: float = 300) -> str:
    return proc.communicate(timeout=timeout)[0]


def leftovers(folder) -> list[str]:
    """Temporary files and folders of atomic_path (.<name>.<random>.tmp) anywhere under folder."""
    return [str(p) for p in folder.rglob(".*.tmp")]


# ---------------------------------------------------------------- a stop signal

# resnet with momentum, a schedule, random crops and flips and an EMA: state beyond the weights to resume
SIGNAL_TRAIN = {**RESUMABLE, "train.optim.epochs": 4, "train.numerics.device": "cpu"}


def train_command(out, params, prepared) -> list[str]:
    return ["-m", "stages.train", "--params", str(params), "--prepared", str(prepared),
            "--model", str(out / "model.pth"), "--model-meta", str(out / "model.json"),
            "--metrics", str(out / "train.json"), "--history", str(out / "train_log.csv"),
            "--live", str(out / "live"), "--checkpoint", str(out / "ckpt/train.pt")]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, prepared):
    out = tmp_path_factory.mktemp("uninterrupted")
    params = write_params(out / "params.yaml", **SIGNAL_TRAIN)
    proc = start_stage(train_command(out, params, prepared), out)
    output = finish(proc)
    assert proc.returncode == 0, output[-3000:]
    return out


def same_run(a, b) -> None:
    """Two train stage runs wrote the same results: weights byte for byte, the same figures and records."""
    assert (a / "model.pth").read_bytes() == (b / "model.pth").read_bytes()
    drop = lambda d: {k: v for k, v in d.items() if k not in TIMING}  # noqa: E731
    assert drop(json.loads((a / "train.json").read_text())) == drop(json.loads((b / "train.json").read_text()))
    pd.testing.assert_frame_equal(*(pd.read_csv(d / "train_log.csv").drop(columns=["seconds", "images_per_second"])
                                    for d in (a, b)))
    for name in ("train/loss.tsv", "lr.tsv"):
        assert (a / "live/plots/metrics" / name).read_text() == (b / "live/plots/metrics" / name).read_text()


@pytest.mark.e2e  # stage processes of its own
@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_stop_signal_during_training_keeps_the_checkpoint_and_the_rerun_resumes_bit_for_bit(
        tmp_path, prepared, uninterrupted, sig, code):
    params = write_params(tmp_path / "params.yaml", **SIGNAL_TRAIN)
    checkpoint = tmp_path / "ckpt/train.pt"
    proc = start_stage(train_command(tmp_path, params, prepared), tmp_path)
    while not checkpoint.exists() and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(sig)  # epoch 1's checkpoint is there; epoch 2 of 4 is running (or 3, on a slow machine)
    started = time.monotonic()
    output = finish(proc)
    assert proc.returncode == code, output[-3000:]
    assert time.monotonic() - started < 30  # seconds, on a busy machine; about 1 when idle
    assert "Traceback" not in output
    said = [line for line in output.splitlines() if "interrupted" in line]
    assert len(said) == 1, output[-3000:]
    done = len(torch.load(checkpoint, weights_only=True)["history"])
    assert done in (1, 2)
    assert re.search(rf"train: interrupted by {sig.name}( \(Ctrl-C\))? (in|after) epoch [123]/4; kept "
                     rf"{re.escape(str(checkpoint))} \(epoch {done} of 4 done\): the next run resumes after "
                     rf"epoch {done}$", said[0]), said[0]
    assert not (tmp_path / "model.pth").exists() and not (tmp_path / "train.json").exists()
    assert not leftovers(tmp_path)

    proc = start_stage(train_command(tmp_path, params, prepared), tmp_path)
    output = finish(proc)
    assert proc.returncode == 0, output[-3000:]
    assert f"resuming after epoch {done}" in output and f"epoch {done}/4 loss" not in output
    assert "epoch 4/4 loss" in output
    same_run(tmp_path, uninterrupted)
    assert not checkpoint.exists()


# Stops after prepare has written its first tensor file into its temporary folder (deterministic: the
# signal must land mid-write, and the tiny archive's files take milliseconds).
SLOW_PREPARE = ("import sys, time; from stages import common, prepare; save = prepare.torch_save; "
                "prepare.torch_save = lambda *a: (save(*a), print('saved', flush=True), time.sleep(60)); "
                "common.run_stage('prepare', prepare.main)")


@pytest.mark.e2e  # stage processes of its own
def test_sigterm_during_prepare_leaves_the_previous_output_and_a_rerun_finishes(tmp_path, prepared):
    raw = prepared.parent / "raw"
    params = write_params(tmp_path / "params.yaml", **{"prepare.val_size": 40})
    out = tmp_path / "prepared"
    shutil.copytree(prepared, out)  # a previous run's output, as outside DVC (dvc repro deletes it first)
    (out / "train.pt").write_bytes(b"previous")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    proc = start_stage(["-c", SLOW_PREPARE, "--params", str(params), "--raw", str(raw), "--out", str(out)], tmp_path)
    while proc.stdout.readline().strip() != "saved":  # after the log line of classes and statistics
        assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    output = finish(proc)
    assert proc.returncode == 143 and "Traceback" not in output, output
    assert re.search(rf"prepare: interrupted by SIGTERM while writing {re.escape(str(out))}; no output of this run "
                     "was finished; earlier outputs are left as they were$", output.strip()), output
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before and not leftovers(tmp_path)

    proc = start_stage(["-m", "stages.prepare", "--params", str(params), "--raw", str(raw), "--out", str(out)],
                       tmp_path)
    output = finish(proc)
    assert proc.returncode == 0, output
    assert all((out / name).read_bytes() == (prepared / name).read_bytes() for name in before)


# ---------------------------------------------------------------- a full disk

@pytest.mark.e2e  # stage processes of its own
def test_file_size_limit_while_prepare_writes_is_one_error_and_keeps_the_previous_output(tmp_path, prepared):
    params = write_params(tmp_path / "params.yaml", **{"prepare.val_size": 40})
    out = tmp_path / "prepared"
    shutil.copytree(prepared, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    proc = start_stage(["-m", "stages.prepare", "--params", str(params), "--raw", str(prepared.parent / "raw"),
                        "--out", str(out)], tmp_path, file_limit=300_000)  # train.pt takes 0.5 MB
    output = finish(proc)
    assert proc.returncode == 1 and "Traceback" not in output, output
    assert re.search(rf"prepare: error: {re.escape(str(out))}: cannot write the prepared tensors: File too large "
                     rf"\(EFBIG\); it needs about {250 * (3072 + 8) / 1e6:.1f} MB, the file-size limit "
                     rf"\(ulimit -f\) is 0\.3 MB\. Nothing was written at {re.escape(str(out))}: what was there is "
                     r"left as it was\. Free some space",
                     output), output
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before and not leftovers(tmp_path)


def crash_after(epochs_done, tmp_path, prepared, monkeypatch, checkpoint, settings) -> None:
    """Run `settings` until the epoch after `epochs_done` dies, as a kill would: the checkpoint stays."""
    real_epoch, calls = trainer.train_epoch, []

    def crashing(*args, **kwargs):
        calls.append(1)
        if len(calls) > epochs_done:
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(trainer, "train_epoch", crashing)
    with pytest.raises(KeyboardInterrupt):
        run_train(tmp_path, prepared, checkpoint, **settings)
    monkeypatch.setattr(trainer, "train_epoch", real_epoch)


@pytest.mark.e2e  # stage processes of its own
def test_file_size_limit_while_saving_a_checkpoint_stops_and_keeps_the_last_one(tmp_path, prepared, monkeypatch):
    checkpoint = tmp_path / "ckpt/train.pt"
    crash_after(1, tmp_path / "a", prepared, monkeypatch, checkpoint, SIGNAL_TRAIN)
    saved = checkpoint.read_bytes()  # 0.3 MB: the weights, their momentum and their average
    out = tmp_path / "b"
    out.mkdir()
    params = write_params(out / "params.yaml", **SIGNAL_TRAIN)
    command = train_command(out, params, prepared)
    command[command.index("--checkpoint") + 1] = str(checkpoint)
    proc = start_stage(command, out, file_limit=200_000)
    output = finish(proc)
    assert proc.returncode == 1 and "Traceback" not in output, output[-3000:]
    assert "resuming after epoch 1" in output and "epoch 2/4 loss" in output
    assert re.search(rf"train: error: {re.escape(str(checkpoint))}: cannot write the training checkpoint after "
                     r"epoch 2: File too large \(EFBIG\); it needs about 0\.3 MB, the file-size limit \(ulimit -f\) "
                     r"is 0\.2 MB\. Nothing was written at", output), output[-3000:]
    assert checkpoint.read_bytes() == saved and not leftovers(tmp_path)
    assert not (out / "model.pth").exists()


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_full_disk_while_download_copies_names_the_output_and_the_room_it_needs(tmp_path, archive_params,
                                                                                  archive, monkeypatch):
    out = tmp_path / "raw"
    out.mkdir()
    (out / "previous").write_text("an earlier download")

    def half_then_full(src, dst):
        with open(src, "rb") as f, open(dst, "wb") as g:
            g.write(f.read(1000))
        no_space()

    monkeypatch.setattr(download.shutil, "copyfile", half_then_full)
    size = archive[0].stat().st_size
    with pytest.raises(DiskFull, match=rf"raw: cannot write the archive and its extracted files: No space "
                                       rf"left on device \(ENOSPC\); it needs about {size * 2.1 / 1e6:.1f} MB, "
                                       r"[\d.]+ MB free on the disk of .*Nothing was written at .*raw"):
        download.main(["--params", str(archive_params()), "--out", str(out)])
    assert [p.name for p in tmp_path.iterdir() if p.name != "params.yaml"] == ["raw"]  # no temporary folder
    assert (out / "previous").read_text() == "an earlier download"


def test_full_disk_while_evaluate_writes_leaves_no_metrics(tmp_path, trained, prepared, monkeypatch):  # noqa: F811
    monkeypatch.setattr(evaluate.pd.DataFrame, "to_csv", no_space)
    with pytest.raises(DiskFull, match=r"confusion\.csv: cannot write confusion\.csv: No space left on device"):
        run_evaluate(trained, prepared, tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EFBIG])
def test_disk_full_is_found_behind_the_errors_that_wrap_it(code):
    full = OSError(code, os.strerror(code))
    try:
        try:
            raise full
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos") from None
    except RuntimeError as wrapped:  # as torch.save raises it
        assert disk_full(wrapped) is full
    assert disk_full(OSError(errno.EACCES, "Permission denied")) is None


@pytest.fixture
def stage_signals():
    """run_stage installs signal handlers: give pytest its own back."""
    saved = {sig: signal.getsignal(sig) for sig in common.STOP_SIGNALS}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)
    common._StopState.raised, common._StopState.pending = False, None


def test_full_disk_outside_atomic_writes_is_one_line(stage_signals):
    def main(argv):  # as DVCLive's own appends fail
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "metrics/live/plots/metrics/lr.tsv")

    with pytest.raises(SystemExit, match=r"^train: error: No space left on device writing "
                                         r"metrics/live/plots/metrics/lr\.tsv \([\d.]+ MB free on the disk of"):
        common.run_stage("train", main)


# ---------------------------------------------------------------- a damaged checkpoint

DAMAGE_TRAIN = {**RESUMABLE, "train.optim.epochs": 2}  # resnet, momentum, EMA (a step counter), 2 epochs


@pytest.fixture(scope="module")
def fresh_weights(tmp_path_factory, prepared):
    return weights(run_train(tmp_path_factory.mktemp("fresh"), prepared, **DAMAGE_TRAIN)["model.pth"])


@pytest.fixture(scope="module")
def epoch_one_checkpoint(tmp_path_factory, prepared):
    root = tmp_path_factory.mktemp("epoch_one")
    with pytest.MonkeyPatch.context() as monkeypatch:
        crash_after(1, root, prepared, monkeypatch, root / "train.ckpt", DAMAGE_TRAIN)
    return torch.load(root / "train.ckpt", weights_only=True)


def first_param(state):
    return next(iter(state["model"]))


def wrong_history(state):
    state["ema"]["n_averaged"].fill_(2)  # its history records epoch 1 (5 steps); its states, 2 steps


DAMAGES = {
    "missing key": (lambda s: s["model"].pop(first_param(s)), r"model lacks \['net\.0\.0\.weight'\]"),
    "other shape": (lambda s: s["model"].__setitem__(first_param(s), torch.zeros(3)),
                    r"model\['net\.0\.0\.weight'\] is \(3,\) torch\.float32, this run's \(4, 3, 3, 3\)"),
    "history longer than its states": (wrong_history,
                                       r"its history records 1 epoch\(s\) \(5 steps\), the EMA counted 2 steps"),
    "history of a wrong type": (lambda s: s.__setitem__("history", {"epoch": 1}), r"history is a dict, not a list"),
    "lr of a wrong type": (lambda s: s["optimizers"][0]["param_groups"][0].__setitem__("lr", "0.1"),
                           r"optimizers\[0\] param_groups\[0\]\['lr'\] is '0\.1', expected a number"),
    "momentum of another shape": (lambda s: s["optimizers"][0]["state"][0].__setitem__("momentum_buffer",
                                                                                       torch.zeros(2)),
                                  r"optimizers\[0\] state\[0\]\['momentum_buffer'\] is \(2,\), its parameter "
                                  r"\(\d+(, \d+)*\)"),
    "not a checkpoint": (lambda s: s.clear() or s.update({"weights": torch.zeros(1)}),
                         r"not a checkpoint of this code: holds \['weights'\]"),
}


@pytest.mark.parametrize("damage", DAMAGES, ids=list(DAMAGES))
def test_checkpoint_that_loads_but_does_not_fit_is_set_aside_and_training_starts_afresh(
        tmp_path, prepared, epoch_one_checkpoint, fresh_weights, caplog, monkeypatch, damage):
    harm, reason = DAMAGES[damage]
    state = copy.deepcopy(epoch_one_checkpoint)
    harm(state)
    checkpoint = tmp_path / "train.ckpt"
    torch.save(state, checkpoint)
    epochs = count_epochs(monkeypatch)
    with caplog.at_level("INFO", logger="stages"):
        resumed = weights(run_train(tmp_path / "run", prepared, checkpoint, **DAMAGE_TRAIN)["model.pth"])
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and re.search(reason, warnings[0]), warnings
    assert warnings[0].endswith("; set aside as train.ckpt.bad, training from the start")
    assert (tmp_path / "train.ckpt.bad").is_file() and "resuming" not in caplog.text
    assert len(epochs) == 2  # every epoch trained again
    assert all(torch.equal(fresh_weights[k], resumed[k]) for k in fresh_weights)  # nothing of it applied


def test_a_checkpoint_that_passes_the_checks_but_fails_to_load_is_undone(
        tmp_path, prepared, epoch_one_checkpoint, fresh_weights, caplog, monkeypatch):
    state = copy.deepcopy(epoch_one_checkpoint)
    state["ema"] = {k: v for k, v in state["ema"].items() if k != "n_averaged"}  # the EMA's load fails last
    checkpoint = tmp_path / "train.ckpt"
    torch.save(state, checkpoint)
    monkeypatch.setattr(trainer, "structure_problem", lambda *a: None)
    monkeypatch.setattr(trainer, "counter_problem", lambda *a: None)
    with caplog.at_level("WARNING", logger="stages"):
        resumed = weights(run_train(tmp_path / "run", prepared, checkpoint, **DAMAGE_TRAIN)["model.pth"])
    assert "does not fit this run (it does not load: RuntimeError: Error(s) in loading state_dict" in caplog.text
    # The weights and optimizer were loaded before the EMA failed: undone, the run equals a fresh one.
    assert all(torch.equal(fresh_weights[k], resumed[k]) for k in fresh_weights)


# ---------------------------------------------------------------- a damaged prepared file

@pytest.mark.parametrize("content, reason", [
    (b"\x00" * 100, r"damaged prepared split, unreadable \("),
    ({"images": torch.zeros(2, 3, 32, 32, dtype=torch.uint8), "labels": torch.zeros(3, dtype=torch.long),
      "classes": ["a"], "mean": [0.5] * 3, "std": [0.5] * 3},
     r"damaged prepared split: labels must be an int64 tensor \(2,\)"),
    ({"images": torch.zeros(2, 3, 32, 32, dtype=torch.uint8)},
     r"damaged prepared split: expected a dict with \['classes', "),
], ids=["garbage", "labels-of-another-length", "missing-keys"])
def test_damaged_prepared_file_is_named_with_how_to_rebuild_it(tmp_path, prepared, content, reason):
    folder = tmp_path / "prepared"
    shutil.copytree(prepared, folder)
    if isinstance(content, bytes):
        (folder / "train.pt").write_bytes(content)
    else:
        torch.save(content, folder / "train.pt")
    with pytest.raises(StageError, match=rf"prepared/train\.pt: {reason}.*; rebuild it with `dvc repro -f prepare`"):
        run_train(tmp_path / "run", folder)
    assert not (tmp_path / "run/model.pth").exists()


def test_damaged_test_split_is_named_by_evaluate(tmp_path, trained, prepared):  # noqa: F811
    folder = tmp_path / "prepared"
    shutil.copytree(prepared, folder)
    (folder / "test.pt").write_bytes(b"PK\x03\x04 half a zip")
    with pytest.raises(StageError, match=r"test\.pt: damaged prepared split, unreadable .*dvc repro -f prepare"):
        run_evaluate(trained, folder, tmp_path / "out")


# ---------------------------------------------------------------- out of memory

def allocate_too_much(*args, **kwargs):
    torch.empty(2 ** 50, dtype=torch.uint8)  # the CPU allocator's own error: 1 PB


def raise_memory_error(*args, **kwargs):
    raise MemoryError()


@pytest.mark.parametrize("fault", [allocate_too_much, raise_memory_error], ids=["torch-allocator", "MemoryError"])
def test_out_of_memory_in_training_names_the_batch_size(tmp_path, prepared, monkeypatch, fault):
    checkpoint = tmp_path / "train.ckpt"
    crash_after(1, tmp_path / "a", prepared, monkeypatch, checkpoint, SIGNAL_TRAIN)
    saved = checkpoint.read_bytes()
    real_epoch, calls = trainer.train_epoch, []
    monkeypatch.setattr(trainer, "train_epoch", lambda *a, **k: calls.append(1) or fault())
    with pytest.raises(StageError, match=r"^out of memory in epoch 2 on cpu at batch size 32 \(\w+Error: .*\); set "
                                         r"a smaller train\.optim\.batch_size, e\.g\. dvc exp run -S "
                                         r"train\.optim\.batch_size=16$"):
        run_train(tmp_path / "b", prepared, checkpoint, **SIGNAL_TRAIN)
    assert checkpoint.read_bytes() == saved and not (tmp_path / "b/model.pth").exists()


def test_out_of_memory_in_evaluate_names_its_batch_size(tmp_path, trained, prepared, monkeypatch):  # noqa: F811
    monkeypatch.setattr(evaluate, "tta_logits", allocate_too_much)
    with pytest.raises(StageError, match=r"^out of memory scoring 50 test images on cpu at batch size 1000 "
                                         r"\(RuntimeError: .*can't allocate memory.*\); set a smaller "
                                         r"evaluate\.batch_size, e\.g\. dvc exp run -S evaluate\.batch_size=500$"):
        run_evaluate(trained, prepared, tmp_path)
    assert list(tmp_path.iterdir()) == []
