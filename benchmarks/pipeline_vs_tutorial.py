"""Benchmark: the default pipeline against the PyTorch tutorial's own training loop.

Runs, on the same machine in one process tree:
  (a) the pipeline: every stage command of dvc.yaml, in order, in a scratch copy of
      the project whose params.yaml is the default one with data.url/data.md5
      pointed at the given archive (DVC itself is not needed, so this also runs
      on machines without it);
  (b) the tutorial's loop: torchvision's CIFAR10 dataset with
      ToTensor() + Normalize((0.5,)*3, (0.5,)*3) per sample,
      DataLoader(batch_size=4, shuffle=True), the same MLP, SGD(lr=0.001),
      cross-entropy, the same number of epochs.
Prints test accuracy, training seconds and their ratio, and writes them as JSON.

    python benchmarks/pipeline_vs_tutorial.py --archive /path/cifar-10-python.tar.gz \
        --md5 182e9d6f9f54ceeea150cb85e6c574de [--epochs 10] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torchvision
import yaml
from torch import nn
from torchvision import transforms

ROOT = Path(__file__).resolve().parents[1]


class NeuralNetwork(nn.Module):
    """The tutorial's class, written out as the tutorial does."""

    def __init__(self):
        super().__init__()
        self.flatten = nn.Flatten()
        self.linear_relu_stack = nn.Sequential(
            nn.Linear(32 * 32 * 3, 1024), nn.ReLU(), nn.Linear(1024, 512), nn.ReLU(), nn.Linear(512, 10))

    def forward(self, x):
        return self.linear_relu_stack(self.flatten(x))


class MirrorCIFAR10(torchvision.datasets.CIFAR10):
    """torchvision's CIFAR10, minus its per-file md5s (the mirror's files differ; the archive was verified)."""

    train_list = [[name, None] for name, _ in torchvision.datasets.CIFAR10.train_list]
    test_list = [[name, None] for name, _ in torchvision.datasets.CIFAR10.test_list]
    meta = {**torchvision.datasets.CIFAR10.meta, "md5": None}


def stage_commands(dvc_yaml: Path) -> list[tuple[str, str]]:
    """(name, shell command) of each stage, with dvc.yaml's ${paths.*} vars filled in."""
    spec = yaml.safe_load(dvc_yaml.read_text())
    paths = {k: v for var in spec.get("vars", []) for k, v in var.get("paths", {}).items()}
    fill = lambda cmd: re.sub(r"\$\{paths\.(\w+)\}", lambda m: paths[m.group(1)], cmd)  # noqa: E731
    return [(name, fill(stage["cmd"])) for name, stage in spec["stages"].items()]


def run_pipeline(archive: Path, md5: str, epochs: int | None, work: Path) -> dict:
    for item in ("stages", "dvc.yaml", "params.yaml"):
        (shutil.copytree if (ROOT / item).is_dir() else shutil.copy)(ROOT / item, work / item)
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["data"].update(url=str(archive), md5=md5)
    if epochs:
        params["train"]["epochs"] = epochs
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    seconds = {}
    for name, cmd in stage_commands(work / "dvc.yaml"):
        print(f"--- pipeline stage {name}: {cmd}", flush=True)
        start = time.perf_counter()
        subprocess.run(cmd, shell=True, cwd=work, env=env, check=True)
        seconds[name] = time.perf_counter() - start
    metrics = json.loads((work / "metrics/metrics.json").read_text())
    train = json.loads((work / "metrics/train.json").read_text())
    return {"test_accuracy": metrics["accuracy"], "train_seconds": train["train_seconds"],
            "stage_seconds": seconds, "per_class_accuracy": metrics["per_class_accuracy"],
            "device": train["device"]}


def run_tutorial(batches_root: Path, epochs: int, device: torch.device) -> dict:
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
    trainset = MirrorCIFAR10(root=str(batches_root), train=True, download=False, transform=transform)
    testset = MirrorCIFAR10(root=str(batches_root), train=False, download=False, transform=transform)
    trainloader = torch.utils.data.DataLoader(trainset, batch_size=4, shuffle=True)
    testloader = torch.utils.data.DataLoader(testset, batch_size=4, shuffle=False)
    torch.manual_seed(0)
    net = NeuralNetwork().to(device)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.001)
    start = time.perf_counter()
    for epoch in range(epochs):
        epoch_start, running = time.perf_counter(), 0.0
        for inputs, labels in trainloader:
            inputs, labels = inputs.to(device), labels.to(device)
            optimizer.zero_grad()
            loss = criterion(net(inputs), labels)
            loss.backward()
            optimizer.step()
            running += loss.item()
        print(f"--- tutorial epoch {epoch + 1}/{epochs} loss {running / len(trainloader):.4f} "
              f"{time.perf_counter() - epoch_start:.1f}s", flush=True)
    train_seconds = time.perf_counter() - start
    correct = total = 0
    with torch.no_grad():
        for images, labels in testloader:
            predicted = net(images.to(device)).argmax(1).cpu()
            total += labels.size(0)
            correct += (predicted == labels).sum().item()
    return {"test_accuracy": correct / total, "train_seconds": train_seconds, "device": str(device)}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{os.cpu_count()} cores {cpu}{gpu}, torch {torch.__version__}, Python {platform.python_version()}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archive", type=Path, required=True)
    ap.add_argument("--md5", required=True)
    ap.add_argument("--epochs", type=int, help="override both runs' epochs (default: params.yaml's)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    epochs = args.epochs or yaml.safe_load((ROOT / "params.yaml").read_text())["train"]["epochs"]

    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        work = Path(tmp)
        pipeline = run_pipeline(args.archive.resolve(), args.md5, args.epochs, work)
        device = torch.device(pipeline["device"])
        tutorial = run_tutorial(work / "data", epochs, device)  # CIFAR10 looks for cifar-10-batches-py here
    result = {"machine": machine(), "epochs": epochs, "pipeline": pipeline, "tutorial": tutorial,
              "speedup": tutorial["train_seconds"] / pipeline["train_seconds"],
              "accuracy_difference_points": 100 * (pipeline["test_accuracy"] - tutorial["test_accuracy"])}
    print(json.dumps(result, indent=2))
    print(f"\npipeline: {pipeline['test_accuracy']:.2%} in {pipeline['train_seconds']:.0f}s training; "
          f"tutorial loop: {tutorial['test_accuracy']:.2%} in {tutorial['train_seconds']:.0f}s; "
          f"speed-up {result['speedup']:.2f}x on {result['machine']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
