"""Benchmark: the default pipeline against the PyTorch tutorial's own training loop.

Runs, on the same machine in one process tree:
  (a) the pipeline: every stage command of dvc.yaml, in order, in a scratch copy of
      the project whose params.yaml is the default one with data.url/data.md5
      pointed at the given archive (DVC itself is not needed, so this also runs
      on machines without it);
  (b) the tutorial's loop: torchvision's CIFAR10 dataset (download=True, which verifies the
      official batch files and downloads nothing) with
      ToTensor() + Normalize((0.5,)*3, (0.5,)*3) per sample,
      DataLoader(batch_size=4, shuffle=True), the same MLP, SGD(lr=0.001),
      cross-entropy, the same number of epochs.
Prints test accuracy, training seconds and their ratio, and writes them as JSON.

Run one after the other, the two full runs' ratio is at the mercy of the machine's drift
(a shared CPU's speed can change by 1.5x within half an hour). So the same invocation then
times `--rounds` one-epoch runs of each, interleaved, the order swapped every round
(pipeline, tutorial; tutorial, pipeline; ...): a change of speed hits both alike. The ratio
of their median seconds per epoch is `speedup_interleaved`. Each epoch does the same work,
so it measures the same per-epoch time; the full runs give the accuracies.

    python benchmarks/pipeline_vs_tutorial.py --archive /path/cifar-10-python.tar.gz \
        --md5 182e9d6f9f54ceeea150cb85e6c574de [--epochs 10] [--rounds 4] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torchvision
import yaml
from torch import nn
from torchvision import transforms
from torchvision.datasets.utils import check_integrity

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.runner import ROOT, commit, copy_project, machine, results, run_stages, scratch  # noqa: E402
from stages.params import load_params, set_dotted  # noqa: E402


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


def official_files(batches_root: Path) -> bool:
    """Whether the batch files under batches_root are the official ones, by torchvision's own md5 list."""
    cls = torchvision.datasets.CIFAR10
    return all(check_integrity(str(batches_root / cls.base_folder / name), md5)
               for name, md5 in cls.train_list + cls.test_list + [[cls.meta["filename"], cls.meta["md5"]]])


def run_tutorial(batches_root: Path, epochs: int, device: torch.device) -> dict:
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
    # The tutorial's own CIFAR10(root, download=True): on the official files it verifies their md5s and
    # downloads nothing. A mirror whose files differ would fail that check, so it gets the same class without it.
    official = official_files(batches_root)
    dataset = torchvision.datasets.CIFAR10 if official else MirrorCIFAR10
    trainset = dataset(root=str(batches_root), train=True, download=official, transform=transform)
    testset = dataset(root=str(batches_root), train=False, download=official, transform=transform)
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
    return {"test_accuracy": correct / total, "train_seconds": train_seconds, "device": str(device),
            "dataset": "torchvision CIFAR10(download=True), official files verified" if official
            else "torchvision CIFAR10 without its md5 checks (the batch files differ from the official ones)"}


def interleaved_rounds(work: Path, rounds: int, device: torch.device) -> dict:
    """Seconds per epoch of `rounds` one-epoch runs each of the pipeline's train stage (its own
    train_seconds) and the tutorial's loop, interleaved, the order swapped every round."""
    params = set_dotted(yaml.safe_load((work / "params.yaml").read_text()), {"train.optim.epochs": 1})
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    seconds: dict[str, list[float]] = {"pipeline": [], "tutorial": []}
    for round_ in range(rounds):
        for who in ("pipeline", "tutorial")[::1 if round_ % 2 == 0 else -1]:
            if who == "pipeline":
                run_stages(work, only=("train",))
                seconds[who].append(json.loads((work / "metrics/train.json").read_text())["train_seconds"])
            else:
                seconds[who].append(run_tutorial(work / "data", 1, device)["train_seconds"])
            print(f"=== round {round_ + 1}/{rounds} {who}: {seconds[who][-1]:.1f} s/epoch", flush=True)
    medians = {who: statistics.median(values) for who, values in seconds.items()}
    return {"rounds": rounds, "seconds_per_epoch": seconds, "median_seconds_per_epoch": medians,
            "speedup": medians["tutorial"] / medians["pipeline"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archive", type=Path, required=True)
    ap.add_argument("--md5", required=True)
    ap.add_argument("--epochs", type=int, help="override both runs' epochs (default: params.yaml's)")
    ap.add_argument("--rounds", type=int, default=4, help="interleaved one-epoch timing rounds after the full runs "
                    "(0: none)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    epochs = args.epochs or load_params(ROOT / "params.yaml").train.optim.epochs
    overrides = {"data.url": str(args.archive.resolve()), "data.md5": args.md5, "train.optim.epochs": epochs}

    with scratch("bench-") as work:
        copy_project(work, overrides)
        stages = run_stages(work)
        pipeline = {**results(work), "stages": stages}
        device = torch.device(pipeline["device"])
        tutorial = run_tutorial(work / "data", epochs, device)  # CIFAR10 looks for cifar-10-batches-py here
        interleaved = interleaved_rounds(work, args.rounds, device) if args.rounds else None
    result = {"machine": machine(), "commit": commit(), "epochs": epochs, "pipeline": pipeline, "tutorial": tutorial,
              "speedup": tutorial["train_seconds"] / pipeline["train_seconds"],
              "accuracy_difference_points": 100 * (pipeline["test_accuracy"] - tutorial["test_accuracy"])}
    if interleaved:
        result |= {"interleaved": interleaved, "speedup_interleaved": interleaved["speedup"]}
    print(json.dumps(result, indent=2))
    print(f"\npipeline: {pipeline['test_accuracy']:.2%} in {pipeline['train_seconds']:.0f}s training; "
          f"tutorial loop: {tutorial['test_accuracy']:.2%} in {tutorial['train_seconds']:.0f}s; "
          f"speed-up {result['speedup']:.2f}x on {result['machine']}")
    if interleaved:
        m = interleaved["median_seconds_per_epoch"]
        print(f"interleaved, {args.rounds} one-epoch rounds each: pipeline {m['pipeline']:.1f} s/epoch, "
              f"tutorial {m['tutorial']:.1f} s/epoch (medians), speed-up {interleaved['speedup']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
