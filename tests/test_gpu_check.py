"""benchmarks/gpu_check.py: its --smoke run end to end in a subprocess, so the GPU script cannot rot
between GPU sessions, and the helpers that only the GPU run would otherwise exercise."""
from __future__ import annotations

import importlib.util
import io
import json
import math
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest
import torch
import yaml

from benchmarks import airbench_runs, gpu_check
from benchmarks.airbench_runs import write_airbench_data
from benchmarks.gpu_check import PARTS, airbench_path, without_live
from stages.prepare import read_split
from tests.cifar_archive import official_members, write_archive
from tests.conftest import PROJECT

SCRIPT = PROJECT / "benchmarks/gpu_check.py"
HAVE_AIRBENCH = importlib.util.find_spec("airbench") is not None
MIRROR_TOOL = PROJECT.parent / "shared/tools/cifar10_mirror.py"  # beside the checkout here; absent on a clean clone


def run_check(out: Path, *args: str, timeout: float) -> tuple[subprocess.CompletedProcess, dict, str]:
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--out", str(out), *args], cwd=PROJECT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert (out / "gpu_check.json").is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, json.loads((out / "gpu_check.json").read_text()), (out / "gpu_check.txt").read_text()


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One --smoke run (about a minute on 2 idle cores); a generous budget so a busy machine's slowness
    shows as time, not as parts skipped by the time guard."""
    tool = ["--mirror-tool", str(MIRROR_TOOL)] if MIRROR_TOOL.is_file() else []
    return run_check(tmp_path_factory.mktemp("gpu_check"), "--budget-s", "3600", *tool, timeout=1800)


@pytest.mark.e2e
def test_smoke_run_exits_cleanly_and_reports_every_part(smoke):
    proc, report, _ = smoke
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list(report["parts"]) == list(PARTS)
    assert report["finished"] and report["mode"] == "smoke"
    assert report["machine"] and report["torch"] == torch.__version__
    assert all(p["status"] in ("ok", "failed", "skipped") and isinstance(p["seconds"], float)
               for p in report["parts"].values())


@pytest.mark.e2e
def test_smoke_parts_pass_or_say_why_they_skipped(smoke):
    _, report, _ = smoke
    parts = report["parts"]
    failed = {name: (p["reason"], p.get("log_tail")) for name, p in parts.items() if p["status"] == "failed"}
    assert not failed
    expected_skip = set() if HAVE_AIRBENCH else {"airbench"}
    assert {name for name, p in parts.items() if p["status"] == "skipped"} == expected_skip
    if not HAVE_AIRBENCH:
        assert "no airbench package" in parts["airbench"]["reason"]
        assert parts["airbench"]["figures"] == {"train_images": 200, "test_images": 100}  # its data files, written
    assert parts["determinism"]["figures"]["identical"] is True


@pytest.mark.e2e
@pytest.mark.skipif(not HAVE_AIRBENCH, reason="airbench is not installed (pip install -e '.[test]' installs it)")
def test_smoke_runs_airbench_own_code_without_cuda(smoke):
    """Without CUDA the airbench part runs the installed package's train94 on the CPU (airbench_runs.py --cpu):
    the same parsing and table the GPU run uses, exercised on every test run."""
    _, report, text = smoke
    figures = report["parts"]["airbench"]["figures"]
    assert [r["seed"] for r in figures["runs"]] == [0, 1]
    assert all(0 <= r["test_accuracy"] <= 1 and r["train_seconds"] > 0 for r in figures["runs"])
    assert figures["epochs"] == 1 and figures["batch_size"] == 50 and figures["test_images"] == 100
    # the installed package, unless this checkout holds one prepared for a GPU session (--prepare-carry)
    carried = gpu_check.found_airbench(gpu_check.CARRY) if gpu_check.CARRY.is_dir() else None
    assert figures["package"] == str(carried) if carried else figures["package"].startswith("installed: ")
    assert figures["mean_train_seconds"] > 0
    cuda = torch.cuda.is_available()
    assert figures["device"] == torch.cuda.get_device_name() if cuda else figures["device"].endswith("), fp32")
    assert any(line.split()[:3] == ["mean", "of", "2"] and "airbench's own code on" in line
               for line in text.splitlines())


@pytest.mark.e2e
def test_smoke_builds_its_archive_with_the_mirror_tool_when_there_is_one(smoke):
    _, report, _ = smoke
    mirror = report["parts"]["mirror"]["figures"]
    # With ../shared present the real tool builds it; on a clean clone (CI) the synthetic archive stands in.
    assert mirror["source"].startswith("the mirror tool on") == MIRROR_TOOL.is_file()
    assert ("no mirror tool found" in mirror["source"]) != MIRROR_TOOL.is_file()
    assert len(mirror["md5"]) == 32 and mirror["expected_md5"] is None


@pytest.mark.e2e
def test_smoke_figures_are_numbers(smoke):
    _, report, _ = smoke
    fast = report["parts"]["fast_gpu"]["figures"]
    assert [r["seed"] for r in fast["runs"]] == [0, 1]
    for run in fast["runs"]:
        assert 0 <= run["test_accuracy"] <= 1 and run["train_seconds"] > 0 and run["warmup_seconds"] >= 0
        assert run["train_flops"] > 0 and run["eval_flops"] > 0 and run["tta_views"] == 6  # airbench's TTA
    assert fast["overrides"]["prepare.mean"] == "train" and fast["mean_train_seconds"] > 0
    tutorial = report["parts"]["tutorial"]["figures"]
    assert tutorial["speedup"] > 0 and math.isfinite(tutorial["accuracy_difference_points"])
    assert tutorial["pipeline"]["recipe"] == "tutorial" and tutorial["epochs"] == 1
    cells = report["parts"]["models"]["figures"]["cells"]
    assert len(cells) == 4 * 2 * 2
    for cell in cells:
        if cell["status"] == "ok":
            assert math.isfinite(cell["loss"]) and cell["seconds"] > 0 and cell["tensors_changed"] > 0
        else:  # the CPU's compile cells
            assert cell["compile"] and cell["status"] == "skipped" and "compile" in cell["reason"]


@pytest.mark.e2e
def test_smoke_says_which_data_each_fast_gpu_run_measured(smoke):
    """The GPU rows run on the JPEG copy (the official data does not fit the device's carry): each run
    says whether prepare found the official batch files; the tiny archive's are not."""
    _, report, text = smoke
    runs = report["parts"]["fast_gpu"]["figures"]["runs"]
    assert [r["data_official"] for r in runs] == [False, False]
    seed_lines = [line for line in text.splitlines() if line.split()[:2] in (["seed", "0"], ["seed", "1"])]
    assert any("not the official data" in line for line in seed_lines)
    assert gpu_check.DATA_NOTE not in report["notes"]  # the full run's note about the JPEG copy


def test_full_run_notes_the_jpeg_copy(tmp_path):
    """A full run (here with every part skipped by the time guard) says in its table that its figures are
    on the JPEG copy, so none is read as an official-data figure."""
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--budget-s", "0", "--out", str(tmp_path)],
                          cwd=PROJECT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert gpu_check.DATA_NOTE in report["notes"] and "JPEG copy" in gpu_check.DATA_NOTE
    assert f"note: {gpu_check.DATA_NOTE}" in (tmp_path / "gpu_check.txt").read_text()


@pytest.mark.e2e
def test_smoke_table_has_a_line_per_part_and_per_model_cell(smoke):
    _, report, text = smoke
    lines = text.splitlines()
    for name, part in report["parts"].items():
        assert any(line.split()[:3] == [name, "(part)", part["status"]] for line in lines), name
    assert any(line.split()[:5] == ["resnet", "bf16", "compile", "off", "ok"] for line in lines)
    assert "smoke run" in lines[-1]
    assert text.strip() in smoke[0].stdout  # printed too


@pytest.mark.e2e
def test_time_guard_skips_what_does_not_fit_and_still_writes_the_report(tmp_path):
    proc, report, text = run_check(tmp_path, "--budget-s", "0", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert report["finished"] and list(report["parts"]) == list(PARTS)
    assert all(p["status"] == "skipped" and p["reason"].startswith("time guard") for p in report["parts"].values())
    assert "skipped" in text


@pytest.mark.e2e
def test_sigterm_writes_the_table_and_json_of_the_parts_finished_and_exits_143(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--smoke", "--out", str(tmp_path), "--budget-s", "3600"],
                            cwd=PROJECT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    report = tmp_path / "gpu_check.json"
    deadline = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline and not (
            report.is_file() and "mirror" in json.loads(report.read_text())["parts"]):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)  # as the device's time limit does, with fast_gpu running
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 143, output[-3000:]
    report = json.loads(report.read_text())
    assert list(report["parts"]) == ["mirror", "fast_gpu"] and not report["finished"]
    assert report["parts"]["mirror"]["status"] == "ok" and report["stopped_by"] == "SIGTERM"
    stopped = report["parts"]["fast_gpu"]
    assert stopped["status"] == "stopped" and stopped["reason"].startswith("stopped by SIGTERM")
    lines = (tmp_path / "gpu_check.txt").read_text().splitlines()
    assert any(line.split()[:3] == ["mirror", "(part)", "ok"] for line in lines)
    assert any(line.split()[:3] == ["fast_gpu", "(part)", "stopped"] for line in lines)
    assert "Traceback" not in output


@pytest.mark.e2e
def test_only_runs_the_parts_asked_for(tmp_path):
    proc, report, _ = run_check(tmp_path, "--only", "models", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {name: p["status"] for name, p in report["parts"].items()} == {
        "mirror": "skipped", "fast_gpu": "skipped", "airbench": "skipped", "tutorial": "skipped",
        "determinism": "skipped", "models": "ok"}
    assert report["parts"]["mirror"]["reason"] == "not asked for (--only)"


def test_airbench_data_is_what_its_loader_reads(tmp_path, archive):
    path, _ = archive
    assert write_airbench_data(path, tmp_path / "cifar10") == {"train_images": 200, "test_images": 50}
    train = torch.load(tmp_path / "cifar10/train.pt", weights_only=True)  # as airbench's CifarLoader loads it
    assert train["images"].dtype == torch.uint8 and train["images"].shape == (200, 32, 32, 3)
    assert train["labels"].dtype == torch.int64 and train["classes"][:2] == ["airplane", "automobile"]
    with tarfile.open(path) as tar:
        tar.extractall(tmp_path / "raw", **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    images, labels = read_split(tmp_path / "raw/cifar-10-batches-py", ("data_batch_1",), 10)  # (N, 3, 32, 32)
    assert torch.equal(train["images"][0], torch.from_numpy(images[0]).permute(1, 2, 0))  # HWC, same pixels
    assert train["labels"][:len(labels)].tolist() == labels.tolist()


def test_airbench_path_finds_the_package_in_an_sdist_a_wheel_or_a_folder(tmp_path):
    sdist = tmp_path / "airbench-0.1.8.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        info = tarfile.TarInfo("airbench-0.1.8/airbench/__init__.py")
        tar.addfile(info, io.BytesIO(b""))
    assert airbench_path(sdist, tmp_path / "src") == tmp_path / "src/airbench-0.1.8"
    wheel = tmp_path / "airbench-0.1.8-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("airbench/__init__.py", "")
    assert airbench_path(wheel, tmp_path) == wheel
    package = tmp_path / "src/airbench-0.1.8/airbench"
    assert airbench_path(package, tmp_path) == package.parent == airbench_path(package.parent, tmp_path)
    with pytest.raises(Exception, match="no airbench package"):
        airbench_path(tmp_path / "src", tmp_path)


def test_without_live_drops_only_the_dvclive_folder_from_the_train_command():
    cmd = yaml.safe_load((PROJECT / "dvc.yaml").read_text())["stages"]["train"]["cmd"]
    assert "--live ${paths.live}" in cmd
    stripped = without_live(cmd)
    assert "--live" not in stripped
    assert stripped.split() == [w for w in cmd.split() if w not in ("--live", "${paths.live}")]


@pytest.mark.skipif(not HAVE_AIRBENCH, reason="airbench is not installed (pip install -e '.[test]' installs it)")
def test_prepare_carry_copies_the_inputs_and_by_default_the_installed_airbench(tmp_path):
    jpeg, tool = tmp_path / "cifar10-jpeg.tar.gz", tmp_path / "cifar10_mirror.py"
    jpeg.write_bytes(b"jpeg archive")
    tool.write_text("# mirror tool\n")
    dest = tmp_path / "carry"
    for _ in range(2):  # a second run refreshes the folder in place
        gpu_check.main(["--prepare-carry", str(dest), "--jpeg", str(jpeg), "--mirror-tool", str(tool)])
    assert sorted(p.name for p in dest.iterdir()) == ["airbench", "cifar10-jpeg.tar.gz", "cifar10_mirror.py"]
    assert (dest / "cifar10-jpeg.tar.gz").read_bytes() == b"jpeg archive"
    assert (dest / "airbench/lib_airbench94.py").is_file() and not (dest / "airbench/__pycache__").exists()
    assert gpu_check.found_airbench(dest) == dest / "airbench"  # what the GPU run picks up from cache/gpu
    assert airbench_path(dest / "airbench", tmp_path) == dest  # ...and puts on airbench_runs.py's PYTHONPATH


def test_prepare_carry_names_what_it_cannot_find(tmp_path):
    with pytest.raises(SystemExit, match=r"not found: JPEG archive \(--jpeg\)"):
        gpu_check.main(["--prepare-carry", str(tmp_path / "carry"), "--jpeg", str(tmp_path / "missing.tar.gz"),
                        "--mirror-tool", str(tmp_path), "--airbench", str(tmp_path)])


@pytest.mark.parametrize("make, message", [
    (None, r"--archive .*missing\.tar\.gz: no such file \(expected an official-format cifar-10-python\.tar\.gz\)"),
    (lambda p: p.write_bytes(b"not a tar"), r"--archive .*: not an official-format CIFAR-10 archive: "),
    (lambda p: write_archive(p, {k: v for k, v in official_members(2, 1).items() if not k.endswith("test_batch")}),
     r"not an official-format CIFAR-10 archive: .*test_batch: file not found"),
])
def test_airbench_runs_archive_errors_name_the_file_and_write_nothing(tmp_path, monkeypatch, capsys, make, message):
    archive = tmp_path / ("missing.tar.gz" if make is None else "bad.tar.gz")
    if make is not None:
        make(archive)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        airbench_runs.main(["--archive", str(archive), "--json", "runs.json", "--cpu"])
    assert re.search(message, str(exc.value) if exc.value.code != 2 else capsys.readouterr().err)
    assert not (tmp_path / "cifar10").exists() and not (tmp_path / "runs.json").exists()
