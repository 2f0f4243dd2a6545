"""One command for a GPU machine: every GPU figure and check of the project, in one table and one JSON file.

The GPU machines have PyTorch but no DVC, no internet and no ../shared, so the
JPEG copy of CIFAR-10, the mirror tool and the airbench package travel in an
ignored folder of the checkout (cache/gpu/). On this machine:

    .venv/bin/python benchmarks/gpu_check.py --prepare-carry cache/gpu [--airbench /path/airbench-0.1.8.tar.gz]

(without --airbench it copies the airbench package the test extras installed)

then on the GPU machine, from the checkout's root, with cache/gpu carried:

    python benchmarks/gpu_check.py [--budget-s 480] [--out DIR]

Parts, in order, each reported with a status (ok, failed, skipped; stopped by a signal) so one
failure never hides the rest:
  mirror       the full mirror built from the JPEG archive with the mirror tool, md5 checked
  fast_gpu     the fast-gpu recipe for 5 seeds through dvc.yaml's stage commands (no DVC), with
               evaluate.tta=airbench and training-split mean/std: accuracy, train and compile
               seconds, training and evaluation FLOPs
  airbench     the airbench package's own train94 for 5 seeds on the same mirror (a subprocess)
  tutorial     the tutorial recipe against the PyTorch tutorial's own loop, 1 epoch each
               (params.yaml's tutorial trains 10: cut to fit the time budget)
  determinism  train.numerics.deterministic: the train stage twice, identical weights expected
  models       each model x {fp32, bf16} x compile {off, on}, two optimizer steps each
A time guard skips what would run past --budget-s. `--only PART...` runs some parts again,
with the mirror, which is reused from cache/gpu-mirror where an earlier run on the same machine
built it. Writes gpu_check.json, gpu_check.txt (the table) and gpu_check.log (everything
printed) to --out, which defaults to $OUT when set (the device machine returns only that
folder); the JSON is rewritten after every part, so a run killed midway keeps what it measured.
Stopped by SIGTERM (the device's time limit) or Ctrl-C, it marks the running part "stopped", writes
the table and the JSON of what it finished, and exits 143 (130).

--smoke runs the same parts on the CPU in a couple of minutes: a tiny JPEG archive
through the real mirror tool when it is found (else a synthetic archive in the
official format), 2 seeds, 1 epoch, small batches; airbench runs on the CPU in
fp32 without CUDA (airbench_runs.py --cpu), from the installed package where
--airbench names none; torch.compile reports itself skipped on the CPU. tests/test_gpu_check.py
runs it, so the script cannot rot between GPU sessions.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import copy
import dataclasses
import importlib.util
import io
import json
import logging
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.airbench_runs import write_airbench_data  # noqa: E402
from benchmarks.runner import ROOT, commit, copy_project, machine, results, run_stages  # noqa: E402
from stages.common import Interrupted, catch_stop_signals, default_path  # noqa: E402
from stages.params import parse_params, set_dotted  # noqa: E402
from stages.common import file_md5  # noqa: E402

FULL_MD5 = "182e9d6f9f54ceeea150cb85e6c574de"  # the mirror tool's full build (../shared/data/README.md)
CARRY = ROOT / "cache/gpu"  # what --prepare-carry fills; the device run carries it
SHARED = ROOT.parent / "shared"
PARTS = ("mirror", "fast_gpu", "airbench", "tutorial", "determinism", "models")
DATA_PARTS = {"fast_gpu", "airbench", "tutorial", "determinism"}  # these need the mirror part's archive
# Seconds each part takes on one H100 (estimates, not yet measured: 470 in all). A part starts only
# with half its estimate left; seeds and grid cells stop early to leave the later parts their estimates.
# fast_gpu: the first seed's cold compile (about a minute), then about 25 s a seed of process starts,
# compile cache loads, 10 epochs and evaluation.
ESTIMATE_S = {"mirror": 50, "fast_gpu": 200, "airbench": 45, "tutorial": 80, "determinism": 35, "models": 60}
SMOKE_ESTIMATE_S = dict.fromkeys(PARTS, 5)
SEEDS, SMOKE_SEEDS = 5, 2
SMOKE_PER_CLASS = (20, 10)  # train, test images per class of the smoke archive
MODELS = ("mlp", "cnn", "resnet", "airbench")
# Images per step in the models grid, two steps per cell. 1024 as fast-gpu's: its airbench bf16 cell
# can then load fast_gpu's compiled graphs from inductor's cache instead of compiling afresh.
GRID_BATCH, SMOKE_GRID_BATCH = 1024, 8
# --smoke on the CPU: narrow resnet and airbench nets, so a step takes a fraction of a second
SMOKE_MODEL = {"train.model.width": 8, "train.model.widths": [16, 32, 32]}
SMOKE_AIRBENCH_BATCH = 50  # airbench drops the last short batch: 4 steps of the smoke archive's 200 images
CPU_COMPILE_SKIP = ("torch.compile on the CPU takes 20-45 s per model (inductor's C++ build): "
                    "--smoke checks compile on CUDA only")
PATH_KEYS = {"download": "raw", "prepare": "prepared"}  # each stage's output in dvc.yaml's paths
HAVE_DVCLIVE = importlib.util.find_spec("dvclive") is not None
DATA_NOTE = (f"data: the JPEG copy of CIFAR-10 (lossy, mirror md5 {FULL_MD5}), not the official files: "
             "the device carries at most 64 MiB and the lossless PNG copy is 135 MB; its accuracies compare "
             "with BENCHMARKS.md's JPEG-copy rows, about 3.5 points below published ones")
DVCLIVE_NOTE = "DVCLive is not installed here: the train stage ran without --live (its per-epoch DVCLive folder)"
TAIL_LINES = 25  # lines of a failed part's output kept in the JSON

log = logging.getLogger("gpu_check")


class Skipped(Exception):
    """A part that did not run, with why; `figures` holds anything it measured before deciding."""

    def __init__(self, reason: str, figures: dict | None = None):
        super().__init__(reason)
        self.figures = figures or {}


class Failed(Exception):
    """A check that ran and found a problem; `figures` keeps what it measured."""

    def __init__(self, reason: str, figures: dict | None = None):
        super().__init__(reason)
        self.figures = figures or {}


@dataclasses.dataclass
class Clock:
    """The global time guard: seconds left of the budget, and what the parts still to come need."""

    budget: float
    estimates: dict[str, float]
    start: float = dataclasses.field(default_factory=time.perf_counter)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.budget - self.elapsed()

    def can_start(self, part: str) -> bool:
        return self.left() >= self.estimates[part] / 2

    def can_continue(self, part: str, next_seconds: float) -> bool:
        """Whether one more iteration of `part` (seed, cell) fits before the later parts' estimates."""
        later = sum(self.estimates[p] for p in PARTS[PARTS.index(part) + 1:])
        return self.left() - later >= next_seconds


class Tee:
    """Copies everything written to file descriptors 1 and 2, by this process and the stages it
    starts, to the terminal and a log file, keeping the last lines for failure reports."""

    def __init__(self, log_path: Path):
        self.log_path = log_path
        self.lines: collections.deque[tuple[int, str]] = collections.deque(maxlen=500)
        self.count = 0
        self._marker: str | None = None
        self._seen = threading.Event()

    def __enter__(self) -> "Tee":
        sys.stdout.flush()
        sys.stderr.flush()
        self._saved = os.dup(1), os.dup(2)
        read, write = os.pipe()
        os.dup2(write, 1)
        os.dup2(write, 2)
        os.close(write)
        sys.stdout.reconfigure(line_buffering=True)
        self._thread = threading.Thread(target=self._pump, args=(read,), daemon=True)
        self._thread.start()
        return self

    def _pump(self, read: int) -> None:
        partial = b""
        with open(read, "rb", buffering=0) as pipe, open(self.log_path, "ab") as log_file:
            for chunk in iter(lambda: pipe.read(1 << 16), b""):
                os.write(self._saved[0], chunk)
                log_file.write(chunk)
                log_file.flush()
                *done, partial = (partial + chunk).split(b"\n")
                for raw in done:
                    line = raw.decode(errors="replace").rstrip("\r")
                    self.lines.append((self.count, line))
                    self.count += 1
                    if line == self._marker:
                        self._seen.set()

    def mark(self, line: str) -> int:
        """Print `line` and wait until the log has it: all output before it is then in `lines`. Returns
        the line's number."""
        self._seen.clear()
        self._marker = line
        print(line, flush=True)
        self._seen.wait(timeout=5)
        return self.count

    def tail(self, since: int) -> list[str]:
        return [line for i, line in self.lines if i >= since][-TAIL_LINES:]

    def __exit__(self, *exc) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(self._saved[0], 1)
        os.dup2(self._saved[1], 2)
        # Compile workers started by torch.compile may hold the pipe open: don't wait on them.
        self._thread.join(timeout=2)


@dataclasses.dataclass
class Check:
    """What the parts share: arguments, the clock, scratch space and the archive the mirror part made."""

    args: argparse.Namespace
    clock: Clock
    work: Path
    cuda: bool
    archive: Path | None = None
    md5: str | None = None
    raw: Path | None = None  # the fast_gpu part's download output, reused by the later parts
    prepared: Path | None = None  # ...and its prepare output (training-split mean/std)

    @property
    def smoke(self) -> bool:
        return self.args.smoke

    def data_overrides(self) -> dict:
        if self.archive is None:
            raise Skipped("no archive: the mirror part did not make one")
        return {"data.url": str(self.archive), "data.md5": self.md5}

    def project(self, name: str, overrides: dict) -> Path:
        """A fresh scratch copy of the project with these params overrides (and without --live where
        DVCLive is missing)."""
        work = self.work / name
        work.mkdir()
        copy_project(work, overrides)
        if not HAVE_DVCLIVE:
            spec = yaml.safe_load((work / "dvc.yaml").read_text())
            spec["stages"]["train"]["cmd"] = without_live(spec["stages"]["train"]["cmd"])
            (work / "dvc.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
        return work

    def reuse(self, work: Path, stage: str) -> bool:
        """Link the fast_gpu part's output of `stage` (download or prepare) into `work`, where there is one:
        each stage process costs seconds of imports, and these outputs depend only on data and prepare."""
        source = {"download": self.raw, "prepare": self.prepared}[stage]
        if source is None:
            return False
        target = output(work, PATH_KEYS[stage])
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(source, target_is_directory=True)
        return True


def without_live(cmd: str) -> str:
    """The train command minus its optional `--live DIR`: stages/tracking.py imports DVCLive for it,
    and the GPU machines have neither DVC nor DVCLive. The figures come from metrics/*.json alone."""
    return re.sub(r"\s+--live\s+\S+", "", cmd)


def output(work: Path, key: str) -> Path:
    """A stage output in a scratch copy, by its key in dvc.yaml's paths."""
    return work / default_path(key, work / "dvc.yaml")


def set_params(work: Path, overrides: dict) -> None:
    path = work / "params.yaml"
    path.write_text(yaml.safe_dump(set_dotted(yaml.safe_load(path.read_text()), overrides), sort_keys=False))


def read_json(path: Path) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


# ---------------------------------------------------------------- part 1: the mirror

def smoke_jpeg_tar(path: Path, per_class: tuple[int, int]) -> None:
    """A tiny archive in the JPEG copy's layout, train/<class>/NNNN.jpg and test/<class>/NNNN.jpg,
    of the synthetic test images (tests/cifar_archive.py), for the real mirror tool to read."""
    from PIL import Image

    from tests.cifar_archive import CLASSES, make_images

    with tarfile.open(path, "w:gz") as tar:
        for split, n, seed in (("train", per_class[0], 1), ("test", per_class[1], 2)):
            images, labels = make_images(n, seed)  # (N, 3072) uint8, R, G, B planes
            counts = collections.Counter()
            for pixels, label in zip(images.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels):
                buf = io.BytesIO()
                Image.fromarray(pixels).save(buf, format="JPEG", quality=75)
                info = tarfile.TarInfo(f"{split}/{CLASSES[label]}/{counts[label]:04d}.jpg")
                info.size, info.mtime = buf.tell(), 0
                buf.seek(0)
                tar.addfile(info, buf)
                counts[label] += 1


def run_mirror_tool(tool: Path, out_dir: Path, jpeg: Path, extra: list[str], timeout: float) -> Path:
    proc = subprocess.run([sys.executable, str(tool), str(out_dir), "--jpeg-tar", str(jpeg), *extra],
                          timeout=max(timeout, 10))
    if proc.returncode:
        raise Failed(f"the mirror tool failed with exit code {proc.returncode}")
    return out_dir / "cifar-10-python.tar.gz"


def part_mirror(c: Check) -> tuple[dict, list]:
    start = time.perf_counter()
    tool = c.args.mirror_tool
    if c.smoke:
        train, test = SMOKE_PER_CLASS
        if tool is not None:
            jpeg = c.work / "smoke-jpeg.tar.gz"
            smoke_jpeg_tar(jpeg, (train + 2, test + 2))  # two spare per class: the tool's limits cut them
            source = f"the mirror tool on a tiny synthetic JPEG archive (--train-per-class {train})"
            archive = run_mirror_tool(tool, c.work / "mirror", jpeg,
                                      ["--train-per-class", str(train), "--test-per-class", str(test)],
                                      c.clock.left())
        else:
            from tests.cifar_archive import official_members, write_archive

            source = "a synthetic archive in the official format (no mirror tool found)"
            archive = c.work / "mirror/cifar-10-python.tar.gz"
            write_archive(archive, official_members(train, test))
        expected, reused = None, False
    else:
        if c.args.jpeg is None or tool is None:
            raise Failed("needs the JPEG archive and the mirror tool: pass --jpeg and --mirror-tool, "
                         "or copy them into cache/gpu with --prepare-carry")
        archive = c.args.mirror_dir / "cifar-10-python.tar.gz"
        expected, source = FULL_MD5, f"{tool.name} on {c.args.jpeg.name} (the JPEG copy, lossy)"
        reused = archive.is_file() and file_md5(archive) == FULL_MD5  # an earlier run's build on this machine
        if not reused:
            run_mirror_tool(tool, c.args.mirror_dir, c.args.jpeg, [], c.clock.left())
    c.archive, c.md5 = archive.resolve(), file_md5(archive)
    figures = {"archive": str(c.archive), "md5": c.md5, "expected_md5": expected, "source": source,
               "reused": reused, "seconds": time.perf_counter() - start}
    text = f"md5 {c.md5}" + (" (reused)" if reused else "") + (f", {source}" if c.smoke else "")
    if expected is not None and c.md5 != expected:
        raise Failed(f"md5 {c.md5}, expected {expected}; later parts use it anyway", figures)
    return figures, [("archive", "ok", text)]


# ---------------------------------------------------------------- part 2: the fast-gpu recipe

def fast_gpu_overrides(c: Check) -> dict:
    """The fast-gpu recipe as the fast_gpu part runs it (determinism too): airbench's TTA, training-split
    mean/std; --smoke trains 1 epoch of small batches, on the CPU narrow nets, uncompiled."""
    overrides = {**c.data_overrides(), "train.recipe": "fast-gpu", "evaluate.tta": "airbench",
                 "prepare.mean": "train", "prepare.std": "train"}
    if c.smoke:
        overrides |= {"train.optim.epochs": 1, "train.optim.batch_size": 64}
        if not c.cuda:
            overrides |= {"train.numerics.compile": False, **SMOKE_MODEL}
    return overrides


def part_fast_gpu(c: Check) -> tuple[dict, list]:
    overrides = fast_gpu_overrides(c)
    notes = ["compile off and narrow nets: " + CPU_COMPILE_SKIP] if c.smoke and not c.cuda else []
    work = c.project("fast-gpu", overrides)
    prep = run_stages(work, only=("download",))
    c.raw = output(work, "raw")
    prep |= run_stages(work, only=("prepare",))
    c.prepared = output(work, "prepared")
    runs, rows, last = [], [], 0.0
    for seed in c.args.seeds:
        if runs and not c.clock.can_continue("fast_gpu", last):
            notes.append(f"time guard: {len(runs)} of {len(c.args.seeds)} seeds run")
            break
        set_params(work, {"train.numerics.seed": seed})
        start = time.perf_counter()
        stages = run_stages(work, only=("train", "evaluate"))
        last = time.perf_counter() - start
        train, metrics = read_json(output(work, "train_metrics")), read_json(output(work, "metrics"))
        run = {"seed": seed, "test_accuracy": metrics["accuracy"], "train_seconds": train["train_seconds"],
               "warmup_seconds": train["warmup_seconds"], "train_flops": train["train_flops"],
               "eval_flops": metrics["eval_flops"], "tta_views": metrics["tta_views"],
               "precision": train["precision"], "device": train["device"], "epochs": train["epochs"],
               "data_official": metrics.get("data_official"), "stages": stages}
        runs.append(run)
        rows.append((f"seed {seed}", "ok", f"{run['test_accuracy']:.2%}, train {run['train_seconds']:.2f}s, "
                     f"compile {run['warmup_seconds']:.1f}s, {run['precision']} on {run['device']}, "
                     f"{'official data' if run['data_official'] else 'not the official data'}"))
        print(f"=== fast-gpu seed {seed}: {rows[-1][2]}", flush=True)
    accuracy, sd = mean_sd([r["test_accuracy"] for r in runs])
    figures = {"overrides": overrides, "notes": notes, "seeds_asked": c.args.seeds, "runs": runs,
               "mean_test_accuracy": accuracy, "stdev_test_accuracy": sd,
               "mean_train_seconds": statistics.mean(r["train_seconds"] for r in runs),
               "mean_warmup_seconds": statistics.mean(r["warmup_seconds"] for r in runs),
               "train_flops": runs[0]["train_flops"], "eval_flops": runs[0]["eval_flops"],
               "download_prepare": prep}
    rows.append((f"mean of {len(runs)}", "ok",
                 f"{accuracy:.2%} (sd {sd:.2%}), train {figures['mean_train_seconds']:.2f}s, compile "
                 f"{figures['mean_warmup_seconds']:.1f}s, {figures['train_flops']:.3g} train + "
                 f"{figures['eval_flops']:.3g} eval FLOP" + "".join(f"; {n}" for n in notes)))
    return figures, rows


# ---------------------------------------------------------------- part 3: the airbench package

def airbench_path(source: Path, work: Path) -> Path:
    """The sys.path entry that makes `import airbench` find the package in a wheel, sdist or folder."""
    if source.is_dir():
        if (source / "airbench/__init__.py").is_file():
            return source
        if source.name == "airbench" and (source / "__init__.py").is_file():
            return source.parent
    if source.suffix == ".whl":
        return source  # a pure-Python wheel imports as a zip
    if source.name.endswith((".tar.gz", ".tgz")):
        with tarfile.open(source, "r:gz") as tar:
            tar.extractall(work, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
        found = sorted(work.glob("*/airbench/__init__.py"))
        if found:
            return found[0].parent.parent
    raise Failed(f"{source}: no airbench package in it (expected a wheel, an sdist or a folder)")


def part_airbench(c: Check) -> tuple[dict, list]:
    c.data_overrides()
    folder = c.work / "airbench"
    sizes = write_airbench_data(c.archive, folder / "cifar10")
    if not c.cuda and not c.smoke:
        raise Skipped("airbench is CUDA-only (its make_net94 calls .cuda()) and torch finds no CUDA here; "
                      "wrote cifar10/train.pt and test.pt only", sizes)
    if c.args.airbench is None and installed_airbench() is None:
        raise Skipped("no airbench package: pass --airbench (wheel, sdist or folder), put it in cache/gpu, "
                      "or pip install airbench==0.1.8", sizes)
    env = dict(os.environ)
    if c.args.airbench is not None:  # else the installed one
        path = airbench_path(c.args.airbench, c.work / "airbench-src")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(path), os.environ.get("PYTHONPATH")]))
    out = folder / "runs.json"
    argv = [sys.executable, str(ROOT / "benchmarks/airbench_runs.py"), "--json", str(out),
            "--seeds", *map(str, c.args.seeds)]
    if c.smoke:  # 1 epoch of batches that fit the tiny archive; on the CPU by its fp32 patches
        argv += ["--epochs", "1", "--batch-size", str(SMOKE_AIRBENCH_BATCH)] + ([] if c.cuda else ["--cpu"])
    timeout = max(c.clock.left() - sum(c.clock.estimates[p] for p in PARTS[PARTS.index("airbench") + 1:]), 30)
    try:
        proc = subprocess.run(argv, cwd=folder, env=env, timeout=timeout)
        error = f"airbench_runs.py failed with exit code {proc.returncode}" if proc.returncode else None
    except subprocess.TimeoutExpired:
        error = f"stopped by the time guard after {timeout:.0f}s"
    report = read_json(out) if out.is_file() else {"runs": []}
    runs = report["runs"]
    package = str(c.args.airbench) if c.args.airbench else f"installed: {report.get('airbench', 'airbench')}"
    figures = {**sizes, **report, "package": package}
    rows = [(f"seed {r['seed']}", "ok", f"{r['test_accuracy']:.2%}, train {r['train_seconds']:.2f}s "
             f"+ TTA eval {r['tta_eval_seconds']:.2f}s") for r in runs]
    if runs:
        accuracy, sd = mean_sd([r["test_accuracy"] for r in runs])
        figures |= {"mean_test_accuracy": accuracy, "stdev_test_accuracy": sd,
                    "mean_train_seconds": statistics.mean(r["train_seconds"] for r in runs)}
        rows.append((f"mean of {len(runs)}", "ok", f"{accuracy:.2%} (sd {sd:.2%}), train "
                     f"{figures['mean_train_seconds']:.2f}s, {report['epochs']} epochs, airbench's own code "
                     f"on {report['device']}"))
    if error:
        raise Failed(f"{error}; {len(runs)} of {len(c.args.seeds)} runs finished", figures | {"rows": rows})
    return figures, rows


# ---------------------------------------------------------------- part 4: the tutorial's loop

def part_tutorial(c: Check) -> tuple[dict, list]:
    from benchmarks.pipeline_vs_tutorial import run_tutorial

    epochs = c.args.tutorial_epochs
    work = c.project("tutorial", {**c.data_overrides(), "train.recipe": "tutorial", "train.optim.epochs": epochs})
    stages = run_stages(work, only=("prepare", "train", "evaluate") if c.reuse(work, "download") else None)
    pipeline = {**results(work), "stages": stages}
    pipeline.pop("per_class_accuracy")
    figures = {"epochs": epochs, "note": f"{epochs} epoch(s) each; params.yaml's tutorial recipe trains 10",
               "pipeline": pipeline}
    rows = [("pipeline", "ok", f"{pipeline['test_accuracy']:.2%}, train {pipeline['train_seconds']:.1f}s, "
             f"{epochs} epoch(s) on {pipeline['device']}")]
    # The tutorial's loop runs several times slower than the pipeline's at batch 4.
    if not c.clock.can_continue("tutorial", 3 * pipeline["train_seconds"]):
        raise Skipped("time guard: no time left for the tutorial's own loop", figures | {"rows": rows})
    # torchvision's CIFAR10 reads the download stage's cifar-10-batches-py folder from its parent
    raw = output(work, "raw")
    tutorial = run_tutorial(raw.parent, epochs, torch.device(pipeline["device"]))
    figures |= {"tutorial": tutorial, "speedup": tutorial["train_seconds"] / pipeline["train_seconds"],
                "accuracy_difference_points": 100 * (pipeline["test_accuracy"] - tutorial["test_accuracy"])}
    rows += [("tutorial loop", "ok", f"{tutorial['test_accuracy']:.2%}, train {tutorial['train_seconds']:.1f}s"),
             ("speed-up", "ok", f"{figures['speedup']:.2f}x, accuracy {figures['accuracy_difference_points']:+.2f} "
              "points (pipeline - tutorial)")]
    return figures, rows


# ---------------------------------------------------------------- part 5: deterministic training

def part_determinism(c: Check) -> tuple[dict, list]:
    overrides = {**fast_gpu_overrides(c), "train.numerics.deterministic": True, "train.numerics.compile": False,
                 "train.optim.epochs": 1}
    work = c.project("determinism", overrides)
    if not c.reuse(work, "prepare"):  # the same prepare params as fast_gpu's
        run_stages(work, only=("download", "prepare"))
    weights, seconds = [], []
    for _ in range(2):
        start = time.perf_counter()
        run_stages(work, only=("train",))
        seconds.append(time.perf_counter() - start)
        weights.append(torch.load(output(work, "model"), map_location="cpu", weights_only=True))
    device = read_json(output(work, "train_metrics"))["device"]
    first, second = weights
    differing = [k for k in first if not torch.equal(first[k], second[k])]
    biggest = max(((first[k].double() - second[k].double()).abs().max().item() for k in differing), default=0.0)
    figures = {"device": device, "overrides": overrides, "tensors": len(first), "differing_tensors": differing,
               "max_abs_difference": biggest, "identical": not differing, "stage_seconds": seconds}
    if differing:
        raise Failed(f"{len(differing)} of {len(first)} weight tensors differ between two runs on {device} "
                     f"(max |difference| {biggest:.3g})", figures)
    return figures, [("two train runs", "ok", f"identical weights ({len(first)} tensors) on {device}, "
                      f"compile off")]


# ---------------------------------------------------------------- part 6: the models grid

def grid_params(raw: dict, model: str, precision: str, compile_: bool, batch: int, device: str, extra: dict):
    """The fast-gpu recipe's train params with the model, precision and compile of one cell, validated."""
    overrides = {"train.recipe": "fast-gpu", "train.model.name": model, "train.numerics.precision": precision,
                 "train.numerics.compile": compile_, "train.optim.batch_size": batch, "train.optim.epochs": 1,
                 "train.numerics.device": device, **extra}
    return parse_params(set_dotted(copy.deepcopy(raw), overrides)).train


def train_steps(p, device: torch.device, batch: int, steps: int = 2) -> dict:
    """`steps` optimizer steps of the train stage's own machinery on random images; checks the loss
    is finite and the weights moved."""
    from stages.models import Airbench, build_model
    from stages.trainer import make_trainer, train_epoch
    from stages.whitening import init_whitening

    torch.manual_seed(0)
    images = torch.randn(steps * batch, 3, 32, 32, device=device)  # (N, 3, 32, 32) float32
    labels = torch.randint(0, 10, (steps * batch,), device=device)
    model = build_model(p.model, num_classes=10).to(device)
    if isinstance(model, Airbench) and p.model.whiten:
        init_whitening(model.whiten, images, p.model.whiten_eps)
    if p.numerics.channels_last:
        model.to(memory_format=torch.channels_last)
    before = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}
    forward = torch.compile(model) if p.numerics.compile else model
    trainer = make_trainer(p, model, steps, len(labels), forward)
    start = time.perf_counter()
    loss, _ = train_epoch(trainer, images, labels, batch, torch.Generator().manual_seed(0))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    after = model.state_dict()
    moved = sum(not torch.equal(before[k], after[k]) for k in before)
    finite = all(torch.isfinite(after[k]).all() for k in before)
    if not (math.isfinite(loss) and finite and moved):
        raise Failed(f"loss {loss}, weights finite {finite}, {moved} of {len(before)} tensors changed")
    return {"loss": loss, "seconds": seconds, "tensors_changed": moved}


def part_models(c: Check) -> tuple[dict, list]:
    from stages.common import choose_device

    device = choose_device("auto")
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    batch = SMOKE_GRID_BATCH if c.smoke else GRID_BATCH
    extra = SMOKE_MODEL if c.smoke and device.type == "cpu" else {}
    cells, rows = [], []
    last = {False: 0.0, True: 0.0}  # seconds of the last cell without and with compile: the next one's guess
    # Every uncompiled cell first: the compiled ones take 10-60 s each and are the ones the time guard cuts.
    for compile_ in (False, True):
        for model in MODELS:
            for precision in ("fp32", "bf16"):
                cell = {"model": model, "precision": precision, "compile": compile_, "device": str(device)}
                item = f"{model} {precision} compile {'on' if compile_ else 'off'}"
                if compile_ and device.type == "cpu" and c.smoke:
                    cell |= {"status": "skipped", "reason": CPU_COMPILE_SKIP}
                elif not c.clock.can_continue("models", last[compile_]):
                    cell |= {"status": "skipped", "reason": "time guard"}
                else:
                    start = time.perf_counter()
                    try:
                        torch._dynamo.reset()  # each cell compiles afresh, within dynamo's recompile limits
                        p = grid_params(raw, model, precision, compile_, batch, str(device), extra)
                        cell |= {"status": "ok", **train_steps(p, device, batch)}
                    except Exception as err:  # noqa: BLE001 - one cell's failure is reported, the grid goes on
                        cell |= {"status": "failed", "error": f"{type(err).__name__}: {err}"[:500]}
                    last[compile_] = cell["wall_seconds"] = time.perf_counter() - start
                cells.append(cell)
                text = (f"loss {cell['loss']:.3f}, {cell['wall_seconds']:.1f}s (2 steps of {batch})"
                        if cell["status"] == "ok" else cell.get("reason") or cell.get("error"))
                rows.append((item, cell["status"], text))
                print(f"=== models {item}: {cell['status']} {text}", flush=True)
    figures = {"device": str(device), "batch_size": batch, "steps": 2, "overrides": extra, "cells": cells}
    failed = [f"{x['model']} {x['precision']} compile {x['compile']}" for x in cells if x["status"] == "failed"]
    if failed:
        raise Failed(f"{len(failed)} of {len(cells)} cells failed: {', '.join(failed)}", figures | {"rows": rows})
    return figures, rows


# ---------------------------------------------------------------- the run, the table, the JSON

RUNNERS = {"mirror": part_mirror, "fast_gpu": part_fast_gpu, "airbench": part_airbench, "tutorial": part_tutorial,
           "determinism": part_determinism, "models": part_models}


def run_part(name: str, c: Check, tee: Tee) -> dict:
    """Run one part; whatever happens, return its status, seconds, figures, table rows and why."""
    if not c.clock.can_start(name):
        return {"status": "skipped", "seconds": 0.0, "reason": f"time guard: {c.clock.left():.0f}s left of "
                f"{c.clock.budget:.0f}s, the part needs about {c.clock.estimates[name]}s", "figures": {}, "rows": []}
    since = tee.mark(f"=== part {name} ({c.clock.elapsed():.0f}s into the run)")
    start = time.perf_counter()
    entry = {"status": "ok", "reason": None}
    try:
        entry["figures"], entry["rows"] = RUNNERS[name](c)
    except Skipped as err:
        entry |= {"status": "skipped", "reason": str(err), "figures": err.figures}
    except (Exception, SystemExit) as err:  # noqa: BLE001 - a failed part is reported and the rest still runs
        figures = getattr(err, "figures", {})
        reason = str(err) if isinstance(err, (Failed, SystemExit)) else f"{type(err).__name__}: {err}"
        entry |= {"status": "failed", "reason": reason, "figures": figures}
        if not isinstance(err, (Failed, SystemExit)):
            log.exception("part %s failed", name)  # the traceback, into the log
    entry["seconds"] = time.perf_counter() - start
    entry.setdefault("rows", entry["figures"].pop("rows", []))
    tee.mark(f"=== part {name}: {entry['status']} in {entry['seconds']:.1f}s" +
             (f": {entry['reason']}" if entry["reason"] else ""))
    if entry["status"] == "failed":
        entry["log_tail"] = tee.tail(since)
    return entry


def table(report: dict) -> str:
    """One line per part and per figure row beneath it: part, item, status, seconds, figures."""
    lines = [f"{'part':<12} {'item':<26} {'status':<8} {'seconds':>7}  figures", "-" * 100]
    for name in PARTS:
        entry = report["parts"].get(name)
        if entry is None:
            continue
        lines.append(f"{name:<12} {'(part)':<26} {entry['status']:<8} {entry['seconds']:>7.1f}  "
                     f"{entry['reason'] or ''}")
        for item, status, text in entry["rows"]:
            lines.append(f"{'':<12} {item:<26} {status:<8} {'':>7}  {text}")
    lines.append("-" * 100)
    lines += [f"note: {note}" for note in report["notes"]]
    lines.append(f"{report['mode']} run, {report['elapsed_s']:.0f}s of a {report['budget_s']:.0f}s budget, on "
                 f"{report['machine']}")
    return "\n".join(lines)


def write_report(out: Path, report: dict) -> None:
    tmp = out / "gpu_check.json.tmp"
    tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")
    tmp.replace(out / "gpu_check.json")


def first_existing(*paths: Path) -> Path | None:
    return next((p for p in paths if p.exists()), None)


def found_airbench(folder: Path) -> Path | None:
    candidates = [*sorted(folder.glob("airbench*.whl")), *sorted(folder.glob("airbench*.tar.gz")),
                  *sorted(p for p in folder.glob("airbench*") if p.is_dir())]
    return candidates[-1] if candidates else None


def installed_airbench() -> Path | None:
    """The folder of the airbench package installed here (the test extras install it), if any."""
    spec = importlib.util.find_spec("airbench")
    return Path(spec.origin).parent if spec and spec.origin else None


def prepare_carry(args: argparse.Namespace) -> None:
    """Copy the JPEG archive, the mirror tool and the airbench package into args.prepare_carry."""
    dest = args.prepare_carry
    dest.mkdir(parents=True, exist_ok=True)
    sources = {"JPEG archive (--jpeg)": args.jpeg or SHARED / "data/cifar10-jpeg.tar.gz",
               "mirror tool (--mirror-tool)": args.mirror_tool or SHARED / "tools/cifar10_mirror.py",
               "airbench package (--airbench)": args.airbench or found_airbench(dest) or installed_airbench()}
    missing = [what for what, path in sources.items() if path is None or not path.exists()]
    if missing:
        raise SystemExit(f"--prepare-carry: not found: {', '.join(missing)}")
    for path in sources.values():
        target = dest / path.name
        if target.resolve() == path.resolve():
            continue
        if path.is_dir():
            shutil.copytree(path, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target.unlink(missing_ok=True)  # ../shared's files are read-only, and so would be a copy's
            shutil.copyfile(path, target)
    size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file()) / 2**20
    rel = os.path.relpath(dest, ROOT)
    print(f"{dest}: {', '.join(sorted(p.name for p in dest.iterdir()))} ({size:.1f} MiB)\n"
          f"On the GPU machine, carry [\"{rel}\"] and run from the checkout's root:\n"
          f"  python benchmarks/gpu_check.py --budget-s 480")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--jpeg", type=Path, help="cifar10-jpeg.tar.gz (default: cache/gpu's, else ../shared/data's)")
    ap.add_argument("--mirror-tool", type=Path, help="cifar10_mirror.py (default: cache/gpu's, else ../shared/tools')")
    ap.add_argument("--airbench", type=Path, help="airbench wheel, sdist or folder (default: cache/gpu/airbench*; "
                    "--prepare-carry: else the installed package)")
    ap.add_argument("--out", type=Path,
                    help="folder for gpu_check.{json,txt,log} (default: $OUT, else cache/gpu-check)")
    ap.add_argument("--budget-s", type=float, default=480, help="seconds; later parts are skipped to stay within")
    ap.add_argument("--seeds", type=int,
                    help=f"how many seeds fast-gpu and airbench run (default {SEEDS}, --smoke {SMOKE_SEEDS})")
    ap.add_argument("--tutorial-epochs", type=int, default=1, help="epochs of the tutorial comparison (default 1)")
    ap.add_argument("--mirror-dir", type=Path, default=ROOT / "cache/gpu-mirror",
                    help="where the full mirror is built; one with the right md5 there is reused")
    ap.add_argument("--only", nargs="+", choices=PARTS, metavar="PART",
                    help=f"run only these parts (the mirror too where they need data): {', '.join(PARTS)}")
    ap.add_argument("--smoke", action="store_true", help="tiny data, 1 epoch, on whatever device: checks the script")
    ap.add_argument("--prepare-carry", type=Path, metavar="DIR",
                    help="only copy the JPEG archive, mirror tool and airbench package into DIR (e.g. cache/gpu)")
    args = ap.parse_args(argv)
    if args.prepare_carry:
        return args
    args.jpeg = args.jpeg or first_existing(CARRY / "cifar10-jpeg.tar.gz", SHARED / "data/cifar10-jpeg.tar.gz")
    args.mirror_tool = args.mirror_tool or first_existing(CARRY / "cifar10_mirror.py",
                                                          SHARED / "tools/cifar10_mirror.py")
    args.airbench = args.airbench or (found_airbench(CARRY) if CARRY.is_dir() else None)
    for name in ("jpeg", "mirror_tool", "airbench"):
        value = getattr(args, name)
        if value is not None and not value.exists():
            ap.error(f"--{name.replace('_', '-')}: {value} not found")
        setattr(args, name, value.resolve() if value is not None else None)
    args.seeds = list(range(args.seeds or (SMOKE_SEEDS if args.smoke else SEEDS)))
    args.out = args.out or (Path(os.environ["OUT"]) if os.environ.get("OUT") else ROOT / "cache/gpu-check")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.prepare_carry:
        prepare_carry(args)
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.log").unlink(missing_ok=True)
    clock = Clock(args.budget_s, SMOKE_ESTIMATE_S if args.smoke else ESTIMATE_S)
    cuda = torch.cuda.is_available()
    report = {"script": "benchmarks/gpu_check.py", "mode": "smoke" if args.smoke else "full", "commit": commit(),
              "machine": machine(), "torch": torch.__version__, "cuda": torch.version.cuda,
              "gpu": torch.cuda.get_device_name() if cuda else None, "python": platform.python_version(),
              "budget_s": args.budget_s, "elapsed_s": 0.0, "finished": False,
              "notes": ([] if args.smoke else [DATA_NOTE]) + ([] if HAVE_DVCLIVE else [DVCLIVE_NOTE]),
              "inputs": {k: getattr(args, k) and str(getattr(args, k)) for k in ("jpeg", "mirror_tool", "airbench")},
              "parts": {}}
    # The device's time limit sends SIGTERM: the parts finished so far still reach the table and the JSON.
    catch_stop_signals()
    stopped = None
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp, Tee(args.out / "gpu_check.log") as tee:
        check = Check(args, clock, Path(tmp), cuda)
        wanted = set(args.only or PARTS)
        wanted |= {"mirror"} if wanted & DATA_PARTS else set()
        try:
            for name in PARTS:
                started = clock.elapsed()
                report["parts"][name] = run_part(name, check, tee) if name in wanted else {
                    "status": "skipped", "seconds": 0.0, "reason": "not asked for (--only)", "figures": {}, "rows": []}
                report["elapsed_s"] = clock.elapsed()
                write_report(args.out, report)
        except Interrupted as err:
            stopped = err
            report["parts"][name] = {"status": "stopped", "seconds": clock.elapsed() - started, "figures": {},
                                     "reason": f"stopped by {err}; the parts after it did not run", "rows": []}
            report["stopped_by"] = str(err)
        finally:
            report["elapsed_s"], report["finished"] = clock.elapsed(), len(report["parts"]) == len(PARTS)
            write_report(args.out, report)
            text = table(report)
            (args.out / "gpu_check.txt").write_text(text + "\n")
            print("\n" + text, flush=True)
            with contextlib.suppress(OSError):
                print(f"wrote {args.out / 'gpu_check.json'}, gpu_check.txt, gpu_check.log", flush=True)
    if stopped is not None:
        sys.exit(128 + stopped.signum)


if __name__ == "__main__":
    main()
