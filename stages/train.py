"""Stage 3: train the model named in params.yaml on the prepared tensors.

The training split is moved to the device once. Each epoch shuffles it with a
seeded permutation, augments the whole shuffled copy on the device in a few
batched tensor ops (random crop from a reflect-padded image, horizontal flip),
and slices batches off it: what a shuffled DataLoader with per-sample
transforms does, minus the per-sample Python work. Writes the weights as a
plain state_dict (`--model`), what inference needs beside them (`--model-meta`:
model name and width, classes, normalization, the effective train params), a
small metrics file (`--metrics`), and after every epoch a CSV row for DVC plots (`--history`)
and a DVCLive step (`--live`), so a running experiment is visible (stages/tracking.py).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import logging
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from .common import (StageError, atomic_path, check_normalization, choose_device, progress, require_file,
                     run_stage, write_json)
from .distributed import SINGLE, Dist, all_max, all_sum, launch_command, setup, teardown
from .models import build_model, predict_logits
from .params import Params, TrainParams, load_params
from .precision import choose_precision
from .tracking import epoch_log

log = logging.getLogger("stages")
AUGMENT_CHUNK = 8192  # images augmented at once: bounds the padded copy's memory


def load_split(path: Path, device: torch.device) -> dict:
    """A prepared split with images and labels moved to `device` once."""
    split = torch.load(require_file(path, "prepared split"), weights_only=True)
    split["images"] = split["images"].to(device)
    split["labels"] = split["labels"].to(device)
    return split


def make_optimizer(p: TrainParams, model: nn.Module) -> torch.optim.Optimizer:
    if p.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=p.lr, momentum=p.momentum, nesterov=p.nesterov,
                               weight_decay=p.weight_decay)
    if p.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=p.lr, weight_decay=p.weight_decay)
    raise ValueError(f"Invalid optimizer {p.optimizer!r}. Only sgd, adamw are supported.")


def lr_factor(step: int, total: int, warmup: float, schedule: str) -> float:
    """Multiplier of the peak lr at `step` (0-based) of `total`: linear warm-up, then the schedule."""
    warm = int(warmup * total)
    if step < warm:
        return (step + 1) / warm
    if schedule == "constant":
        return 1.0
    done = (step - warm) / max(1, total - warm)  # 0 -> 1 over the decay phase
    if schedule == "onecycle":
        return 1.0 - done
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * done))
    raise ValueError(f"Invalid schedule {schedule!r}. Only constant, onecycle, cosine are supported.")


def augment(images: torch.Tensor, crop_pad: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random crops (from a reflect-padded copy) and horizontal flips of (N, C, H, W) images, batched.

    Random numbers come from the CPU generator, so runs are seeded the same on any device.
    """
    n, _, h, w = images.shape
    flips = torch.rand(n, generator=generator) < 0.5 if flip else None
    shifts = torch.randint(0, 2 * crop_pad + 1, (n, 2), generator=generator) if crop_pad else None
    out = []
    for start in range(0, n, AUGMENT_CHUNK):
        x = images[start:start + AUGMENT_CHUNK]
        if shifts is not None:
            s = shifts[start:start + AUGMENT_CHUNK].to(x.device)
            padded = F.pad(x, (crop_pad,) * 4, mode="reflect")  # (n, C, H+2p, W+2p)
            rows = (s[:, 0, None] + torch.arange(h, device=x.device))[:, None, :, None]
            x = padded.gather(2, rows.expand(-1, x.shape[1], -1, padded.shape[3]))  # (n, C, H, W+2p)
            cols = (s[:, 1, None] + torch.arange(w, device=x.device))[:, None, None, :]
            x = x.gather(3, cols.expand(-1, x.shape[1], h, -1))  # (n, C, H, W)
        if flips is not None:
            x = torch.where(flips[start:start + AUGMENT_CHUNK].to(x.device)[:, None, None, None], x.flip(3), x)
        out.append(x)
    return torch.cat(out)


class NonFiniteLoss(StageError):
    def __init__(self, step: int, steps: int):
        super().__init__(f"loss became NaN or infinite at step {step + 1} of {steps}")
        self.step, self.steps = step, steps


@dataclasses.dataclass
class Trainer:
    """What an optimizer step needs besides the batch; built once from the train params."""

    model: nn.Module  # what runs forward (a torch.compile wrapper when compiling)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    ema: AveragedModel | None = None
    label_smoothing: float = 0.0
    autocast_dtype: torch.dtype | None = None
    crop_pad: int = 0
    flip: bool = False
    channels_last: bool = False
    module: nn.Module | None = None  # the plain model under a compile wrapper; None = `model` itself

    @property
    def weights(self) -> nn.Module:
        return self.module if self.module is not None else self.model

    def autocast(self, device: torch.device):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.autocast_dtype)


def train_epoch(t: Trainer, images: torch.Tensor, labels: torch.Tensor, batch_size: int,
                generator: torch.Generator, desc: str = "", dist: Dist = SINGLE) -> tuple[float, float]:
    """One pass over a seeded shuffle of the (augmented) data; return (mean loss, accuracy).

    With several ranks, every rank draws the same shuffle and takes its share of each global batch.
    """
    t.model.train()
    order = torch.randperm(len(labels), generator=generator).to(images.device)
    images, labels = images[order], labels[order]  # one gather per epoch; batches below are views
    if t.crop_pad or t.flip:
        images = augment(images, t.crop_pad, t.flip, generator)
    if t.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    loss_sum = torch.zeros((), device=images.device)
    correct = torch.zeros((), dtype=torch.long, device=images.device)
    first_bad = torch.full((), -1, dtype=torch.long, device=images.device)  # first step with a non-finite loss
    seen = 0
    starts = range(0, len(labels), batch_size)
    for step, start in enumerate(progress(starts, total=len(starts), desc=desc, unit="step")):
        x, y = images[start:start + batch_size], labels[start:start + batch_size]
        if dist.world > 1:
            if len(y) < dist.world:
                continue  # a last batch too small to give every rank an image: all ranks skip it
            x, y = x.tensor_split(dist.world)[dist.rank], y.tensor_split(dist.world)[dist.rank]
        with t.autocast(images.device):
            logits = t.model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=t.label_smoothing)
        t.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        t.optimizer.step()
        if t.scheduler is not None:
            t.scheduler.step()
        if t.ema is not None:
            t.ema.update_parameters(t.weights)
        # Summed on the device: no host sync per step.
        seen += len(y)
        loss_sum += loss.detach().float() * len(y)
        correct += (logits.detach().argmax(1) == y).sum()
        first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss.detach()), step, first_bad)
    if all_max(first_bad, dist).item() >= 0:
        raise NonFiniteLoss(first_bad.item(), len(starts))
    # Sums over all ranks of (loss * images, correct, images trained on).
    totals = all_sum(torch.stack([loss_sum.double(), correct.double(),
                                  torch.tensor(float(seen), dtype=torch.float64, device=images.device)]), dist)
    return (totals[0] / totals[2]).item(), (totals[1] / totals[2]).item()


def score(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> tuple[float, float]:
    """(mean loss, accuracy) of the model on a split."""
    logits = predict_logits(model, images, batch_size)
    return F.cross_entropy(logits, labels).item(), (logits.argmax(1) == labels).float().mean().item()


def make_trainer(p: TrainParams, model: nn.Module, steps_per_epoch: int) -> Trainer:
    """Optimizer, lr schedule, EMA, precision and layout as the params ask, around `model`."""
    if p.precision == "auto":
        raise ValueError("train.precision 'auto' must be resolved first (stages.precision.choose_precision)")
    optimizer = make_optimizer(p, model)
    scheduler = None
    if p.schedule != "constant" or p.warmup > 0:
        total = p.epochs * steps_per_epoch
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_factor(step, total, p.warmup, p.schedule))
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(p.ema), use_buffers=True) if p.ema else None
    if p.channels_last:
        model.to(memory_format=torch.channels_last)
    forward = torch.compile(model) if p.compile else model
    autocast = torch.bfloat16 if p.precision == "bf16" else None
    return Trainer(forward, optimizer, scheduler, ema, p.label_smoothing, autocast, p.crop_pad, p.flip,
                   p.channels_last, module=model)


def fit(t: Trainer, final_model: nn.Module, train: dict, val: dict, p: TrainParams,
        checkpoint: Path | None = None, identity: dict | None = None, dist: Dist = SINGLE,
        on_epoch: Callable[[list[dict]], None] | None = None) -> list[dict]:
    """Train for p.epochs, logging one line per epoch; return the per-epoch history.

    With `checkpoint`, the full training state is saved there after every epoch, and a
    checkpoint of the same `identity` (params and data) found at the start is resumed.
    `on_epoch(history)` runs after every epoch's checkpoint, and once for a resumed history.
    """
    generator = torch.Generator().manual_seed(p.seed)
    history = resume(checkpoint, identity, t, generator, p.epochs) if checkpoint else []
    if history and on_epoch:
        on_epoch(history)
    steps = math.ceil(len(train["labels"]) / p.batch_size)
    for epoch in range(len(history) + 1, p.epochs + 1):
        start = time.perf_counter()
        try:
            loss, acc = train_epoch(t, train["images"], train["labels"], p.batch_size, generator,
                                    desc=f"epoch {epoch}/{p.epochs}", dist=dist)
        except NonFiniteLoss as err:
            step = (epoch - 1) * steps + err.step
            lr = p.lr * (lr_factor(step, p.epochs * steps, p.warmup, p.schedule) if t.scheduler else 1.0)
            raise StageError(f"{err} of epoch {epoch} (lr {lr:.4g}); no model written. Lower train.lr, "
                             "add train.warmup, or check the data") from None
        seconds = time.perf_counter() - start
        row = {"epoch": epoch, "train_loss": loss, "train_accuracy": acc, "seconds": seconds,
               "images_per_second": len(train["labels"]) / seconds,
               "lr": t.optimizer.param_groups[0]["lr"]}
        line = f"epoch {epoch}/{p.epochs} loss {loss:.4f} acc {acc:.2%}"
        row["val_loss"] = row["val_accuracy"] = None  # empty in the CSV: the plots keep their columns
        if len(val["labels"]):
            row["val_loss"], row["val_accuracy"] = score(final_model, val["images"], val["labels"], 1000)
            line += f" val_loss {row['val_loss']:.4f} val_acc {row['val_accuracy']:.2%}"
        log.info("%s %.1fs %.0f img/s", line, seconds, row["images_per_second"])
        history.append(row)
        if checkpoint and dist.is_main:
            save_checkpoint(checkpoint, identity, t, generator, history)
        if on_epoch:
            on_epoch(history)
    return history


def save_checkpoint(path: Path, identity: dict | None, t: Trainer, generator: torch.Generator,
                    history: list[dict]) -> None:
    state = {"identity": identity, "history": history, "generator": generator.get_state(),
             "model": t.weights.state_dict(), "optimizer": t.optimizer.state_dict(),
             "scheduler": t.scheduler.state_dict() if t.scheduler else None,
             "ema": t.ema.state_dict() if t.ema else None}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def resume(path: Path, identity: dict | None, t: Trainer, generator: torch.Generator, epochs: int) -> list[dict]:
    """Load a checkpoint of an unfinished run (fewer than `epochs` epochs) made with the same identity
    into t and generator; return its history."""
    if not path.is_file():
        return []
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - a damaged checkpoint is reported and ignored, never trusted
        log.warning("%s: unreadable checkpoint ignored (%s: %s); training from the start", path,
                    type(err).__name__, err)
        return []
    if state.get("identity") != identity:
        log.info("%s: checkpoint of other params or data ignored; training from the start", path)
        return []
    if len(state["history"]) >= epochs:
        # Left by a run killed between writing its outputs and removing the checkpoint:
        # a new (or forced) run trains afresh rather than rewriting the old result.
        log.info("%s: checkpoint of a finished run ignored; training from the start", path)
        return []
    t.weights.load_state_dict(state["model"])
    t.optimizer.load_state_dict(state["optimizer"])
    if t.scheduler:
        t.scheduler.load_state_dict(state["scheduler"])
    if t.ema:
        t.ema.load_state_dict(state["ema"])
    generator.set_state(state["generator"])
    log.info("%s: resuming after epoch %d", path, len(state["history"]))
    return state["history"]


def file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--prepared", type=Path, required=True, help="folder with train.pt and val.pt")
    ap.add_argument("--model", type=Path, required=True, help="output: state_dict .pth")
    ap.add_argument("--model-meta", type=Path, required=True, help="output: JSON with what inference needs")
    ap.add_argument("--metrics", type=Path, required=True, help="output: JSON with training figures")
    ap.add_argument("--history", type=Path, required=True, help="output: CSV with one row per epoch (DVC plots)")
    ap.add_argument("--live", type=Path, help="output: DVCLive folder, updated after every epoch")
    ap.add_argument("--checkpoint", type=Path, help="training state saved every epoch and resumed from")
    args = ap.parse_args(argv)
    params = load_params(args.params)
    p = params.train

    device = choose_device(p.device)
    try:
        command = launch_command("stages.train", sys.argv[1:] if argv is None else argv)
    except ValueError as err:
        raise StageError(str(err)) from None
    if command:
        log.info("launching %s", " ".join(command))
        if subprocess.run(command).returncode:
            raise StageError("a training process failed; see its messages above")
        return
    dist, device = setup(device)
    if not dist.is_main:
        log.setLevel(logging.WARNING)
    precision, why = choose_precision(p.precision, device.type)
    log.info("precision %s (train.precision %s: %s)", precision, p.precision, why)
    # From here on the effective value: it is what model.json, train.json and the checkpoint record.
    params = dataclasses.replace(params, train=dataclasses.replace(p, precision=precision))
    try:
        train_on(args, params, device, dist)
    finally:
        teardown(dist)


def train_on(args: argparse.Namespace, params: Params, device: torch.device, dist: Dist) -> None:
    """Load the data, train, and (on rank 0) write every output."""
    p = params.train
    if p.deterministic:
        # cuBLAS needs a fixed workspace to be deterministic; set before its first use.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    train, val = load_split(args.prepared / "train.pt", device), load_split(args.prepared / "val.pt", device)
    check_normalization(train, params.prepare, args.prepared / "train.pt")
    torch.manual_seed(p.seed)
    model = build_model(p.model, num_classes=len(train["classes"]), width=p.width).to(device)
    log.info("recipe %s on %d images, device %s, %d process(es): %s", p.recipe, len(train["labels"]), device,
             dist.world, dataclasses.asdict(p))
    log.info("model %s, %d parameters:\n%s", p.model, sum(t.numel() for t in model.parameters()), model)
    trainer = make_trainer(p, model, math.ceil(len(train["labels"]) / p.batch_size))
    if dist.world > 1:
        trainer.model = DistributedDataParallel(trainer.model, device_ids=[device.index] if device.index is not None
                                                else None)
    final_model = trainer.ema.module if trainer.ema is not None else model
    # A checkpoint resumes only into the same params (the device aside) and the same prepared data.
    identity = None if args.checkpoint is None else {
        "train_params": {k: v for k, v in dataclasses.asdict(p).items() if k != "device"},
        "data": {name: file_md5(args.prepared / name) for name in ("train.pt", "val.pt")}}
    with epoch_log(args.history, args.live, enabled=dist.is_main) as on_epoch:
        history = fit(trainer, final_model, train, val, p, args.checkpoint, identity, dist, on_epoch)
    if not dist.is_main:
        return

    with atomic_path(args.model) as tmp:
        torch.save({k: v.detach().cpu() for k, v in final_model.state_dict().items()}, tmp)
    write_json(args.model_meta, {"model": p.model, "width": p.width, "num_classes": len(train["classes"]),
                                 "classes": train["classes"], "mean": train["mean"], "std": train["std"],
                                 "train_params": dataclasses.asdict(p)})
    total = sum(row["seconds"] for row in history)
    final = {k: v for k, v in history[-1].items()
             if v is not None and k not in ("epoch", "seconds", "images_per_second", "lr")}
    write_json(args.metrics, {**final, "recipe": p.recipe, "epochs": p.epochs, "precision": p.precision,
                              "train_seconds": total, "device": str(device), "processes": dist.world,
                              "images_per_second": len(train["labels"]) * p.epochs / total})
    if args.checkpoint is not None:
        args.checkpoint.unlink(missing_ok=True)  # the run is finished: -f or a new run trains from scratch
    log.info("wrote %s, %s, %s (%.1fs training)", args.model, args.model_meta, args.metrics, total)


if __name__ == "__main__":
    run_stage("train", main)
