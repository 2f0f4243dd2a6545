"""Stage 3: train the model named in params.yaml on the prepared tensors.

The training split is moved to the device once. Each epoch shuffles it with a
seeded permutation and slices batches off the shuffled copy, which is what a
shuffled DataLoader does, minus the per-sample Python work. Writes the weights
as a plain state_dict (`--model`), what inference needs beside them
(`--model-meta`: model name, classes, normalization, the train params used) and
a small metrics file (`--metrics`).
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .common import atomic_path, choose_device, progress, require_file, run_stage, write_json
from .models import build_model, predict_logits
from .params import TrainParams, load_params

log = logging.getLogger("stages")


def load_split(path: Path, device: torch.device) -> dict:
    """A prepared split with images and labels moved to `device` once."""
    split = torch.load(require_file(path, "prepared split"), weights_only=True)
    split["images"] = split["images"].to(device)
    split["labels"] = split["labels"].to(device)
    return split


def make_optimizer(p: TrainParams, model: nn.Module) -> torch.optim.Optimizer:
    if p.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay)
    if p.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=p.lr, weight_decay=p.weight_decay)
    raise ValueError(f"Invalid optimizer {p.optimizer!r}. Only sgd, adamw are supported.")


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor,
                labels: torch.Tensor, batch_size: int, generator: torch.Generator,
                desc: str = "") -> tuple[float, float]:
    """One pass over a seeded shuffle of the data; return (mean loss, accuracy)."""
    model.train()
    order = torch.randperm(len(labels), generator=generator).to(images.device)
    images, labels = images[order], labels[order]  # one gather per epoch; batches below are views
    loss_sum = torch.zeros((), device=images.device)
    correct = torch.zeros((), dtype=torch.long, device=images.device)
    starts = range(0, len(labels), batch_size)
    for start in progress(starts, total=len(starts), desc=desc, unit="step"):
        x, y = images[start:start + batch_size], labels[start:start + batch_size]
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        # Summed on the device: no host sync per step.
        loss_sum += loss.detach() * len(y)
        correct += (logits.detach().argmax(1) == y).sum()
    return loss_sum.item() / len(labels), correct.item() / len(labels)


def score(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> tuple[float, float]:
    """(mean loss, accuracy) of the model on a split."""
    logits = predict_logits(model, images, batch_size)
    return F.cross_entropy(logits, labels).item(), (logits.argmax(1) == labels).float().mean().item()


def fit(model: nn.Module, optimizer: torch.optim.Optimizer, train: dict, val: dict,
        p: TrainParams) -> list[dict]:
    """Train for p.epochs, logging one line per epoch; return the per-epoch history."""
    generator = torch.Generator().manual_seed(p.seed)
    history = []
    for epoch in range(1, p.epochs + 1):
        start = time.perf_counter()
        loss, acc = train_epoch(model, optimizer, train["images"], train["labels"], p.batch_size, generator,
                                desc=f"epoch {epoch}/{p.epochs}")
        seconds = time.perf_counter() - start
        row = {"epoch": epoch, "train_loss": loss, "train_accuracy": acc, "seconds": seconds,
               "images_per_second": len(train["labels"]) / seconds}
        line = f"epoch {epoch}/{p.epochs} loss {loss:.4f} acc {acc:.2%}"
        if len(val["labels"]):
            row["val_loss"], row["val_accuracy"] = score(model, val["images"], val["labels"], 1000)
            line += f" val_loss {row['val_loss']:.4f} val_acc {row['val_accuracy']:.2%}"
        log.info("%s %.1fs %.0f img/s", line, seconds, row["images_per_second"])
        history.append(row)
    return history


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--prepared", type=Path, required=True, help="folder with train.pt and val.pt")
    ap.add_argument("--model", type=Path, required=True, help="output: state_dict .pth")
    ap.add_argument("--model-meta", type=Path, required=True, help="output: JSON with what inference needs")
    ap.add_argument("--metrics", type=Path, required=True, help="output: JSON with training figures")
    args = ap.parse_args(argv)
    p = load_params(args.params).train

    device = choose_device(p.device)
    train, val = load_split(args.prepared / "train.pt", device), load_split(args.prepared / "val.pt", device)
    torch.manual_seed(p.seed)
    model = build_model(p.model, num_classes=len(train["classes"])).to(device)
    log.info("training %s (%d parameters) on %d images, device %s",
             p.model, sum(t.numel() for t in model.parameters()), len(train["labels"]), device)
    history = fit(model, make_optimizer(p, model), train, val, p)

    with atomic_path(args.model) as tmp:
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)
    write_json(args.model_meta, {"model": p.model, "num_classes": len(train["classes"]),
                                 "classes": train["classes"], "mean": train["mean"], "std": train["std"],
                                 "train_params": dataclasses.asdict(p)})
    total = sum(row["seconds"] for row in history)
    final = {k: v for k, v in history[-1].items() if k not in ("epoch", "seconds", "images_per_second")}
    write_json(args.metrics, {**final, "epochs": p.epochs, "train_seconds": total, "device": str(device),
                              "images_per_second": len(train["labels"]) * p.epochs / total})
    log.info("wrote %s, %s, %s (%.1fs training)", args.model, args.model_meta, args.metrics, total)


if __name__ == "__main__":
    run_stage("train", main)
