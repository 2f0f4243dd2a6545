"""Stage 3: train the model named in params.yaml on the prepared tensors.

Orchestration only; the machinery lives in modules named for it: the loop and
checkpoints in stages/trainer.py, augmentation in augment.py, lr schedules in
schedules.py, optimizers (parameter groups, airbench's units, Muon) in
optimizers.py, EMA and lookahead in averaging.py, airbench's whitening init in
whitening.py, the networks in models.py. Writes the weights as a plain
state_dict (`--model`), what inference needs beside them (`--model-meta`: the
model params, classes, normalization, the effective train params), a small
metrics file (`--metrics`, with the run's training FLOPs), and after every epoch a
CSV row for DVC plots (`--history`) and a DVCLive step (`--live`), so a running
experiment is visible (stages/tracking.py). `--effective-params`, written before the
first epoch, holds the train values in use, a params file that `dvc exp show` and
`dvc params diff` read: in params.yaml, train.* is null wherever the recipe decides.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
import sys
from pathlib import Path

import torch
import yaml
from torch.nn.parallel import DistributedDataParallel

from .common import (StageError, atomic_path, check_normalization, choose_device, file_md5, run_stage, save_tensors,
                     write_json)
from .distributed import Dist, launch_command, run_workers, setup, teardown
from .flops import run_flops
from .models import Airbench, build_model
from .params import Params, TrainParams, load_params
from .precision import choose_precision
from .prepared import load_split
from .tracking import epoch_log
from .trainer import fit, frozen_in, make_trainer, warm_up
from .whitening import init_whitening

log = logging.getLogger("stages")


def write_effective_params(path: Path, p: TrainParams) -> None:
    """The train values in use, grouped as in params.yaml, without `recipe` (params.yaml's
    train.recipe shows it): recipe values and overrides alike, and the precision `auto` chose."""
    values = {k: v for k, v in dataclasses.asdict(p).items() if k != "recipe"}
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(f"# Written by the train stage: recipes.{p.recipe} with the train.* overrides of params.yaml.\n")
        yaml.safe_dump(values, f, sort_keys=False)


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
    ap.add_argument("--effective-params", type=Path, help="output: YAML params file of the train values in use")
    args = ap.parse_args(argv)
    params = load_params(args.params)
    p = params.train

    device = choose_device(p.numerics.device)
    try:
        command = launch_command("stages.train", sys.argv[1:] if argv is None else argv)
    except ValueError as err:
        raise StageError(str(err)) from None
    if command:
        log.info("launching %s", " ".join(command))
        if run_workers(command):
            raise StageError("a training process failed; see its messages above")
        return
    dist, device = setup(device)
    if not dist.is_main:
        log.setLevel(logging.WARNING)
    precision, why = choose_precision(p.numerics.precision, device.type)
    log.info("precision %s (train.numerics.precision %s: %s)", precision, p.numerics.precision, why)
    # From here on the effective value: it is what model.json, train.json and the checkpoint record.
    numerics = dataclasses.replace(p.numerics, precision=precision)
    params = dataclasses.replace(params, train=dataclasses.replace(p, numerics=numerics))
    try:
        train_on(args, params, device, dist)
    finally:
        teardown(dist)


def train_on(args: argparse.Namespace, params: Params, device: torch.device, dist: Dist) -> None:
    """Load the data, train, and (on rank 0) write every output."""
    p, n = params.train, params.train.numerics
    if n.deterministic:
        # cuBLAS needs a fixed workspace to be deterministic; set before its first use.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = n.cudnn_benchmark and not n.deterministic
    train, val = load_split(args.prepared / "train.pt", device), load_split(args.prepared / "val.pt", device)
    check_normalization(train, params.prepare, args.prepared / "train.pt")
    torch.manual_seed(n.seed)
    image_size = train["images"].shape[-1]  # prepare.image_size, as the prepared data holds it
    if p.augment.early_crop >= image_size:
        raise StageError(f"train.augment.early_crop {p.augment.early_crop}: must be smaller than the prepared "
                         f"images ({image_size}x{image_size} pixels, prepare.image_size) to crop them, or 0 (off)")
    try:
        model = build_model(p.model, num_classes=len(train["classes"]), image_size=image_size).to(device)
    except ValueError as err:
        raise StageError(str(err)) from None
    if isinstance(model, Airbench) and p.model.whiten:
        init_whitening(model.whiten, train["images"], p.model.whiten_eps)
    log.info("recipe %s on %d images, device %s, %d process(es): %s", p.recipe, len(train["labels"]), device,
             dist.world, dataclasses.asdict(p))
    log.info("model %s, %d parameters:\n%s", p.model.name, sum(t.numel() for t in model.parameters()), model)
    steps = math.ceil(len(train["labels"]) / p.optim.batch_size)
    flops = run_flops(model, train["images"][:2], len(train["labels"]), p.optim.epochs,
                      lambda epoch: frozen_in(model, p, epoch), p.augment.early_crop, p.augment.early_crop_epochs)
    if n.channels_last:
        model.to(memory_format=torch.channels_last)
    forward = torch.compile(model) if n.compile else model
    if dist.world > 1:
        forward = DistributedDataParallel(forward, device_ids=[device.index] if device.index is not None else None)
    trainer = make_trainer(p, model, steps, len(train["labels"]), forward)
    warmup_seconds = warm_up(trainer, train["images"], train["labels"], p.optim.batch_size) if n.compile else 0.0
    # A checkpoint resumes only into the same params (the device aside) and the same prepared data.
    identity = None if args.checkpoint is None else {
        "train_params": {k: v for k, v in dataclasses.asdict(p).items() if k != "numerics"}
        | {"numerics": {k: v for k, v in dataclasses.asdict(n).items() if k != "device"}},
        "data": {name: file_md5(args.prepared / name) for name in ("train.pt", "val.pt")}}
    if dist.is_main and args.effective_params is not None:
        write_effective_params(args.effective_params, p)
    with epoch_log(args.history, args.live, enabled=dist.is_main) as on_epoch:
        history = fit(trainer, train, val, p, args.checkpoint, identity, dist, on_epoch)
    if not dist.is_main:
        return

    final_model = trainer.final
    save_tensors({k: v.detach().cpu() for k, v in final_model.state_dict().items()}, args.model, "the model weights")
    write_json(args.model_meta, {"model": p.model.name, "width": p.model.width, "num_classes": len(train["classes"]),
                                 "classes": train["classes"], "mean": train["mean"], "std": train["std"],
                                 "image_size": image_size, "resample": train.get("resample", "bicubic"),
                                 "train_params": dataclasses.asdict(p)})
    total = sum(row["seconds"] for row in history)
    final = {k: v for k, v in history[-1].items()
             if v is not None and k not in ("epoch", "seconds", "images_per_second", "lr")}
    write_json(args.metrics, {**final, "recipe": p.recipe, "epochs": p.optim.epochs, "precision": n.precision,
                              "train_seconds": total, "warmup_seconds": warmup_seconds, "device": str(device),
                              "processes": dist.world, "train_flops": flops,
                              "images_per_second": len(train["labels"]) * p.optim.epochs / total})
    if args.checkpoint is not None:
        args.checkpoint.unlink(missing_ok=True)  # the run is finished: -f or a new run trains from scratch
    log.info("wrote %s, %s, %s (%.1fs training, %.3g FLOP)", args.model, args.model_meta, args.metrics, total, flops)


if __name__ == "__main__":
    run_stage("train", main)
