"""The training loop: a Trainer built once from train params, one epoch at a time, checkpoints.

The training split stays on the device. Each epoch shuffles it with a seeded
permutation, augments the whole shuffled copy there in a few batched tensor ops
(stages/augment.py), and slices batches off it: what a shuffled DataLoader with
per-sample transforms does, minus the per-sample Python work.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel

from .augment import augment, crop, flip_mask
from .averaging import Lookahead, make_ema
from .common import (Interrupted, StageError, first_line, out_of_memory_hint, progress, save_tensors,
                     signals_deferred)
from .distributed import SINGLE, Dist, all_max, all_sum
from .fused import fuse_sgd, why_not_fused
from .models import Airbench, predict_logits
from .optimizers import make_optimizers, set_lr
from .params import OptimParams, TrainParams
from .schedules import lr_factor

log = logging.getLogger("stages")
FLIP_BASE_SEED = 0x5EED  # offset of the generator that draws alternate flips' per-image coins


class NonFiniteLoss(StageError):
    def __init__(self, step: int, steps: int):
        super().__init__(f"loss became NaN or infinite at step {step + 1} of {steps}")
        self.step, self.steps = step, steps


@dataclasses.dataclass
class Trainer:
    """What an optimizer step needs besides the batch; built once from the train params by make_trainer."""

    model: nn.Module  # what runs forward (a torch.compile wrapper when compiling, DDP with several ranks)
    optimizers: list[torch.optim.Optimizer]
    lr_at: Callable[[int], float] | None = None  # step (0-based over the run) -> factor of the peak lr
    ema: AveragedModel | None = None
    lookahead: Lookahead | None = None
    label_smoothing: float = 0.0
    autocast_dtype: torch.dtype | None = None
    crop_pad: int = 0
    flip: str = "none"
    flip_base: torch.Tensor | None = None  # alternate flips: one coin per training image, drawn once
    channels_last: bool = False
    early_crop: int = 0  # train.augment.early_crop: pixels of the random windows epochs 1..early_crop_epochs train on
    early_crop_epochs: int = 0
    module: nn.Module | None = None  # the plain model under a compile/DDP wrapper; None = `model` itself
    whiten_bias: nn.Parameter | None = None  # trains in epochs 1..whiten_bias_epochs only
    whiten_bias_epochs: int = 0
    # train.optim.freeze_last: (first epoch frozen, the group's trained parameters) per airbench conv group
    freezes: list[tuple[int, list[nn.Parameter]]] = dataclasses.field(default_factory=list)
    steps_after_backward: bool = True  # False when fused SGD already stepped inside backward (no gradients kept)

    @property
    def weights(self) -> nn.Module:
        return self.module if self.module is not None else self.model

    @property
    def final(self) -> nn.Module:
        """The model that is validated and saved: the EMA copy when there is one."""
        return self.ema.module if self.ema is not None else self.weights

    def autocast(self, device: torch.device):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        # BatchNorm's weights and statistics stay fp32: autocast leaves module parameters alone.
        return torch.autocast(device.type, dtype=self.autocast_dtype)


def make_trainer(p: TrainParams, model: nn.Module, steps_per_epoch: int, train_images: int = 0,
                 forward: nn.Module | None = None) -> Trainer:
    """Optimizers, lr schedule, averaging, precision and layout as the params ask, around `model`.

    `forward` is what runs the batches (a torch.compile wrapper of model); default: model itself.
    """
    o, n = p.optim, p.numerics
    if n.precision == "auto":
        raise ValueError("train.numerics.precision 'auto' must be resolved first (stages.precision)")
    total = o.epochs * steps_per_epoch
    freezes = group_freezes(model, o.freeze_last, o.epochs)
    optimizers = make_optimizers(o, model, annealed_scales(freezes, o.epochs) if o.freeze_anneal else None)
    lr_at = None
    if o.schedule != "constant" or o.warmup > 0:
        lr_at = lambda step: lr_factor(step, total, o.warmup, o.schedule, o.warmup_from, o.decay_to)  # noqa: E731
        set_lr(optimizers, lr_at, 0)
    ema = make_ema(model, p.average.ema) if p.average.ema else None
    lookahead = Lookahead(model, p.average.lookahead, p.average.lookahead_every, total) if p.average.lookahead else None
    flip_base = None
    if p.augment.flip == "alternate":
        flip_base = torch.rand(train_images, generator=torch.Generator().manual_seed(n.seed + FLIP_BASE_SEED)) < 0.5
    whiten_bias = whitening_bias(model, p)
    fused = False
    if n.fused_sgd:
        world = 2 if isinstance(forward, DistributedDataParallel) else 1
        why = why_not_fused(p, model, optimizers, world)
        if fused := why is None:
            log.info("SGD runs inside the backward pass of %d Linear layers (train.numerics.fused_sgd)",
                     fuse_sgd(model, optimizers[0]))
        else:
            log.info("train.numerics.fused_sgd: not applied, %s; SGD steps after backward", why)
    return Trainer(forward if forward is not None else model, optimizers, lr_at, ema, lookahead,
                   o.label_smoothing, torch.bfloat16 if n.precision == "bf16" else None, p.augment.crop_pad,
                   p.augment.flip, flip_base, n.channels_last, module=model, whiten_bias=whiten_bias,
                   whiten_bias_epochs=o.whiten_bias_epochs, freezes=freezes,
                   early_crop=p.augment.early_crop, early_crop_epochs=p.augment.early_crop_epochs,
                   steps_after_backward=not fused)


def group_freezes(model: nn.Module, freeze_last: list[int], epochs: int) -> list[tuple[int, list[nn.Parameter]]]:
    """(first frozen epoch, 1-based; the parameters it trains until then) of each airbench conv group that
    train.optim.freeze_last freezes in its last epochs."""
    if not isinstance(model, Airbench):
        return []
    return [(epochs - last + 1, [q for q in group.parameters() if q.requires_grad])
            for group, last in zip(model.groups, freeze_last) if last]


def whitening_bias(model: nn.Module, p: TrainParams) -> nn.Parameter | None:
    """The airbench whitening layer's bias, which trains in the first whiten_bias_epochs only."""
    return model.whiten.bias if isinstance(model, Airbench) and p.model.whiten else None


def freeze_plan(epoch: int, whiten_bias: nn.Parameter | None, whiten_bias_epochs: int,
                freezes: list[tuple[int, list[nn.Parameter]]]) -> list[tuple[nn.Parameter, bool]]:
    """(parameter, frozen in `epoch`, 1-based) for each parameter that stops training during a run."""
    plan = [(whiten_bias, epoch > whiten_bias_epochs)] if whiten_bias is not None else []
    return plan + [(q, epoch >= first) for first, params in freezes for q in params]


def frozen_in(model: nn.Module, p: TrainParams, epoch: int) -> list[nn.Parameter]:
    """The parameters of `model` that a run of `p` keeps frozen in `epoch`, known before training (for
    counting its FLOPs): the whitening bias after whiten_bias_epochs, train.optim.freeze_last's groups."""
    freezes = group_freezes(model, p.optim.freeze_last, p.optim.epochs)
    return [q for q, off in freeze_plan(epoch, whitening_bias(model, p), p.optim.whiten_bias_epochs, freezes) if off]


def annealed_scales(freezes: list[tuple[int, list[nn.Parameter]]], epochs: int) -> dict[int, float]:
    """train.optim.freeze_anneal (FreezeOut's scaled schedule, Brock et al. 2017): id(parameter) -> how
    many times faster its group goes through the lr schedule, so that the whole schedule, warm-up to
    decay_to, fits the epochs before the group freezes. A group frozen from the first epoch never trains."""
    return {id(q): epochs / (first - 1) for first, params in freezes if first > 1 for q in params}


def frozen_for_epoch(t: Trainer, epoch: int) -> list[nn.Parameter]:
    """Set what trains in `epoch` (1-based); return the parameters whose grads backward must drop.

    The whitening bias trains in epochs 1..whiten_bias_epochs only, and each conv group of
    train.optim.freeze_last stops in its last epochs. Run eagerly, they are frozen with requires_grad,
    as airbench does for the bias, so that backward skips their gradients and every input gradient
    below them (the bias: 0.89x a `cpu` step, BENCHMARKS.md 3k; the first group too: 0.61x an epoch, 3m); under
    torch.compile or DDP their grads are dropped after backward instead, so that the compiled graph
    and DDP's reducer stay valid. Either way the optimizers skip them: no step, no weight decay.
    """
    frozen = freeze_plan(epoch, t.whiten_bias, t.whiten_bias_epochs, t.freezes)
    if t.model is t.weights:
        for q, off in frozen:
            q.requires_grad_(not off)
        return []
    return [q for q, off in frozen if off]


def train_epoch(t: Trainer, images: torch.Tensor, labels: torch.Tensor, batch_size: int,
                generator: torch.Generator, epoch: int = 1, first_step: int = 0, desc: str = "",
                dist: Dist = SINGLE) -> tuple[float, float]:
    """One pass over a seeded shuffle of the (augmented) data; return (mean loss, accuracy).

    `epoch` (1-based) picks alternate flips and whether the whitening bias trains; `first_step`
    is this epoch's first step over the whole run, for the lr schedule and lookahead. With several
    ranks, every rank draws the same shuffle and takes its share of each global batch.
    """
    t.model.train()
    order = torch.randperm(len(labels), generator=generator)
    if t.flip == "alternate":
        flips = flip_mask(len(labels), "alternate", epoch, t.flip_base, generator)[order]
    else:
        flips = flip_mask(len(labels), t.flip, epoch, None, generator)
    order = order.to(images.device)
    images, labels = images[order], labels[order]  # one gather per epoch; batches below are views
    if t.crop_pad or flips is not None:
        images = augment(images, t.crop_pad, flips, generator)
    if epoch <= t.early_crop_epochs:
        images = crop(images, t.early_crop, generator)
    if t.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    dropped = frozen_for_epoch(t, epoch)
    # Per step, one op each, on the device (no host sync per step); summed after the epoch.
    losses, predictions, targets = [], [], []
    starts = range(0, len(labels), batch_size)
    for step, start in enumerate(progress(starts, total=len(starts), desc=desc, unit="step")):
        x, y = images[start:start + batch_size], labels[start:start + batch_size]
        if dist.world > 1:
            if len(y) < dist.world:
                continue  # a last batch too small to give every rank an image: all ranks skip it
            x, y = x.tensor_split(dist.world)[dist.rank], y.tensor_split(dist.world)[dist.rank]
        # A compiled model gets one shape: a short last batch runs uncompiled instead of recompiling.
        forward = t.model if len(y) * dist.world >= min(batch_size, len(labels)) else t.weights
        with t.autocast(images.device):
            logits = forward(x)
            loss = F.cross_entropy(logits, y, label_smoothing=t.label_smoothing)
        if t.steps_after_backward:
            for optimizer in t.optimizers:
                optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for q in dropped:
            q.grad = None
        if t.steps_after_backward:
            for optimizer in t.optimizers:
                optimizer.step()
        if t.lr_at is not None:
            set_lr(t.optimizers, t.lr_at, first_step + step + 1)
        if t.ema is not None:
            t.ema.update_parameters(t.weights)
        if t.lookahead is not None:
            t.lookahead.step(first_step + step)
        losses.append(loss.detach())
        predictions.append(logits.detach().argmax(1))
        targets.append(y)
    loss_sum, correct, first_bad, seen = epoch_totals(losses, predictions, targets, images.device)
    if all_max(first_bad, dist).item() >= 0:
        raise NonFiniteLoss(first_bad.item(), len(starts))
    # Sums over all ranks of (loss * images, correct, images trained on).
    totals = all_sum(torch.stack([loss_sum.double(), correct.double(),
                                  torch.tensor(float(seen), dtype=torch.float64, device=images.device)]), dist)
    return (totals[0] / totals[2]).item(), (totals[1] / totals[2]).item()


def epoch_totals(losses: list[torch.Tensor], predictions: list[torch.Tensor], targets: list[torch.Tensor],
                 device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """(sum of loss x batch images, correct predictions, first step with a non-finite loss or -1, images)
    of an epoch's per-step mean losses, predicted classes and labels, as tensors on `device`."""
    if not losses:  # every batch skipped
        zero = torch.zeros((), device=device)
        return zero, zero.long(), torch.full((), -1, dtype=torch.long, device=device), 0
    sizes = [len(y) for y in targets]
    loss = torch.stack(losses).float()
    bad = ~torch.isfinite(loss)
    first_bad = torch.where(bad.any(), bad.long().argmax(), -1)
    loss_sum = (loss.double() * torch.tensor(sizes, dtype=torch.float64, device=device)).sum()
    correct = (torch.cat(predictions) == torch.cat(targets)).sum()
    return loss_sum, correct, first_bad, sum(sizes)


def sync_buffers(t: Trainer, dist: Dist) -> None:
    """Average BatchNorm statistics over the ranks, in the model, its lookahead copy and its EMA.

    DDP keeps the weights in sync, and hands rank 0's buffers to every rank at each forward; but
    each rank's last forward updates its statistics from its own share of the batch, so after an
    epoch they differ (and with lookahead, its slow copy of them too). Averaging after every epoch
    leaves every rank with the same state, using every rank's images.
    """
    names = [k for k, v in t.weights.named_buffers() if v.is_floating_point()]
    tensors = [dict(t.weights.named_buffers())[k] for k in names]
    if t.lookahead is not None:
        tensors += [t.lookahead.slow[k] for k in names if k in t.lookahead.slow]
    if t.ema is not None:
        tensors += [v for v in t.ema.module.buffers() if v.is_floating_point()]
    for tensor in tensors:
        all_sum(tensor, dist).div_(dist.world)


def warm_up(t: Trainer, images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> float:
    """Run one forward and backward pass of a full batch, and one on early_crop's windows when the first
    epochs train on them, and undo their effects (BatchNorm statistics, gradients): a compiled model
    pays its compile for each shape here, outside the timed epochs. Returns seconds."""
    start = time.perf_counter()
    saved = {k: v.clone() for k, v in t.weights.state_dict().items()}
    t.model.train()
    sizes = [images.shape[-1]] + ([t.early_crop] if t.early_crop_epochs else [])
    for size in sizes:
        x = images[:batch_size, :, :size, :size]
        if t.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with t.autocast(images.device):
            loss = F.cross_entropy(t.model(x), labels[:batch_size])
        loss.backward()
    for optimizer in t.optimizers:
        optimizer.zero_grad(set_to_none=True)
    t.weights.load_state_dict(saved)
    if images.device.type == "cuda":
        torch.cuda.synchronize(images.device)
    return time.perf_counter() - start


def score(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> tuple[float, float]:
    """(mean loss, accuracy) of the model on a split."""
    logits = predict_logits(model, images, batch_size)
    return F.cross_entropy(logits, labels).item(), (logits.argmax(1) == labels).float().mean().item()


def fit(t: Trainer, train: dict, val: dict, p: TrainParams, checkpoint: Path | None = None,
        identity: dict | None = None, dist: Dist = SINGLE,
        on_epoch: Callable[[list[dict]], None] | None = None) -> list[dict]:
    """Train for p.optim.epochs, logging one line per epoch; return the per-epoch history.

    With `checkpoint`, the full training state is saved there after every epoch, and a
    checkpoint of the same `identity` (params and data) found at the start is resumed.
    `on_epoch(history)` runs after every epoch's checkpoint, and once for a resumed history.
    Lookahead's slow weights become the model's at the end.
    """
    o = p.optim
    generator = torch.Generator().manual_seed(p.numerics.seed)
    steps = math.ceil(len(train["labels"]) / o.batch_size)
    # Optimizer steps an epoch takes: with several ranks, a last batch too small to share is skipped.
    done_per_epoch = sum(min(o.batch_size, len(train["labels"]) - s) >= dist.world
                         for s in range(0, len(train["labels"]), o.batch_size))
    history = resume(checkpoint, identity, t, generator, o.epochs, done_per_epoch) if checkpoint else []
    saved, epoch = len(history), len(history)
    try:
        if history and on_epoch:
            with signals_deferred():
                on_epoch(history)
        for epoch in range(len(history) + 1, o.epochs + 1):
            history.append(run_epoch(t, train, val, o, generator, epoch, steps, dist))
            if checkpoint and dist.is_main:
                try:
                    save_checkpoint(checkpoint, identity, t, generator, history)
                except Interrupted as err:
                    saved = epoch if err.after_done else saved  # held back until the checkpoint was written
                    raise
                saved = epoch
            if on_epoch:
                # DVCLive, stopped halfway through a step, can hang at its end (its Studio queue waits
                # for a worker that never started): a stop signal waits until the records are written.
                with signals_deferred():
                    on_epoch(history)
    except Interrupted as err:
        where = f"after epoch {epoch}/{o.epochs}" if saved >= epoch else f"in epoch {epoch}/{o.epochs}"
        err.note(during=where, kept=kept_note(checkpoint, saved, o.epochs))
        raise
    return history


def kept_note(checkpoint: Path | None, saved: int, epochs: int) -> str:
    """What an interrupted run leaves to resume from, for run_stage's one line."""
    if checkpoint is None:
        return "nothing kept: no --checkpoint was given"
    if not saved:
        return f"no epoch had finished, nothing kept; {checkpoint} is left as it was"
    if saved == epochs:
        return f"all {epochs} epochs had finished but no output was written: the next run trains from the start"
    return f"kept {checkpoint} (epoch {saved} of {epochs} done): the next run resumes after epoch {saved}"


def run_epoch(t: Trainer, train: dict, val: dict, o: OptimParams, generator: torch.Generator, epoch: int,
              steps: int, dist: Dist) -> dict:
    """Train epoch `epoch` (1-based), validate, log one line; return its history row."""
    start = time.perf_counter()
    try:
        with out_of_memory_hint(f"in epoch {epoch} on {train['images'].device}", o.batch_size,
                                "train.optim.batch_size"):
            loss, acc = train_epoch(t, train["images"], train["labels"], o.batch_size, generator, epoch,
                                    (epoch - 1) * steps, desc=f"epoch {epoch}/{o.epochs}", dist=dist)
    except NonFiniteLoss as err:
        step = (epoch - 1) * steps + err.step
        group = t.optimizers[0].param_groups[0]
        lr = group.get("peak_lr", group["lr"]) * (t.lr_at(step) if t.lr_at else 1.0)
        raise StageError(f"{err} of epoch {epoch} (lr {lr:.4g}); no model written. Lower train.optim.lr, "
                         "add train.optim.warmup, or check the data") from None
    if dist.world > 1:
        sync_buffers(t, dist)
    if epoch == o.epochs and t.lookahead is not None:
        t.lookahead.finish()
    if train["images"].device.type == "cuda":
        torch.cuda.synchronize(train["images"].device)
    seconds = time.perf_counter() - start
    row = {"epoch": epoch, "train_loss": loss, "train_accuracy": acc, "seconds": seconds,
           "images_per_second": len(train["labels"]) / seconds,
           "lr": t.optimizers[0].param_groups[0]["lr"]}
    line = f"epoch {epoch}/{o.epochs} loss {loss:.4f} acc {acc:.2%}"
    row["val_loss"] = row["val_accuracy"] = None  # empty in the CSV: the plots keep their columns
    if len(val["labels"]):
        row["val_loss"], row["val_accuracy"] = score(t.final, val["images"], val["labels"], 1000)
        line += f" val_loss {row['val_loss']:.4f} val_acc {row['val_accuracy']:.2%}"
    log.info("%s %.1fs %.0f img/s", line, seconds, row["images_per_second"])
    return row


HISTORY_KEYS = {"epoch", "train_loss", "train_accuracy", "seconds", "images_per_second", "lr", "val_loss",
                "val_accuracy"}  # the keys of run_epoch's rows
STATE_KEYS = {"identity", "history", "generator", "model", "optimizers", "ema", "lookahead"}


def training_state(t: Trainer, generator: torch.Generator, identity: dict | None, history: list[dict]) -> dict:
    """What a checkpoint holds: everything that the next epoch's result depends on."""
    return {"identity": identity, "history": history, "generator": generator.get_state(),
            "model": t.weights.state_dict(), "optimizers": [o.state_dict() for o in t.optimizers],
            "ema": t.ema.state_dict() if t.ema else None,
            "lookahead": t.lookahead.state_dict() if t.lookahead else None}


def apply_state(t: Trainer, generator: torch.Generator, state: dict) -> None:
    t.weights.load_state_dict(state["model"])
    for optimizer, saved in zip(t.optimizers, state["optimizers"]):
        optimizer.load_state_dict(saved)
    if t.ema:
        t.ema.load_state_dict(state["ema"])
    if t.lookahead:
        t.lookahead.load_state_dict(state["lookahead"])
    generator.set_state(state["generator"])


def save_checkpoint(path: Path, identity: dict | None, t: Trainer, generator: torch.Generator,
                    history: list[dict]) -> None:
    save_tensors(training_state(t, generator, identity, history), path,
                 f"the training checkpoint after epoch {len(history)}")


def resume(path: Path, identity: dict | None, t: Trainer, generator: torch.Generator, epochs: int,
           steps_per_epoch: int | None = None) -> list[dict]:
    """Load a checkpoint of an unfinished run (fewer than `epochs` epochs) made with the same identity
    into t and generator; return its history.

    A checkpoint that cannot be read, or that reads but does not fit this run (keys, shapes, types,
    a history its step counters do not match), is set aside as `<name>.bad` with one warning, and
    training starts from scratch: it is never applied in part.
    """
    if not path.is_file():
        return []
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - a damaged checkpoint is reported and set aside, never trusted
        return set_aside(path, f"unreadable checkpoint ({first_line(err)})")
    if not isinstance(state, dict) or set(state) != STATE_KEYS:
        found = sorted(state) if isinstance(state, dict) else type(state).__name__
        return set_aside(path, f"not a checkpoint of this code: holds {found}, expected {sorted(STATE_KEYS)}")
    if state["identity"] != identity:
        log.info("%s: checkpoint of other params or data ignored; training from the start", path)
        return []
    history = state["history"]
    if isinstance(history, list) and len(history) >= epochs:
        # Left by a run killed between writing its outputs and removing the checkpoint:
        # a new (or forced) run trains afresh rather than rewriting the old result.
        log.info("%s: checkpoint of a finished run ignored; training from the start", path)
        return []
    pristine = copy.deepcopy(training_state(t, generator, identity, []))
    problem = (history_problem(history) or structure_problem(state, pristine, t)
               or counter_problem(state, len(history) * steps_per_epoch if steps_per_epoch else None))
    if problem is None:
        try:
            apply_state(t, generator, state)
        except Exception as err:  # noqa: BLE001 - whatever the checks above missed: undo, never half-applied
            apply_state(t, generator, pristine)
            problem = f"it does not load: {first_line(err)}"
    if problem is not None:
        return set_aside(path, f"checkpoint that does not fit this run ({problem})")
    log.info("%s: resuming after epoch %d", path, len(history))
    return history


def set_aside(path: Path, what: str) -> list[dict]:
    """Rename a checkpoint that must not be resumed to <name>.bad (replacing an older one), warn once."""
    bad = path.with_name(path.name + ".bad")
    os.replace(path, bad)
    log.warning("%s: %s; set aside as %s, training from the start", path, what, bad.name)
    return []


def history_problem(history: Any) -> str | None:
    if not isinstance(history, list):
        return f"history is a {type(history).__name__}, not a list"
    for i, row in enumerate(history):
        if not isinstance(row, dict) or set(row) != HISTORY_KEYS:
            return f"history row {i + 1} is not an epoch record"
        if row["epoch"] != i + 1:
            return f"history row {i + 1} is for epoch {row['epoch']!r}"
    return None


def structure_problem(state: dict, live: dict, t: Trainer) -> str | None:
    """Where a checkpoint differs from this run's own state `live` (training_state) in keys, lengths,
    tensor shapes and dtypes, or types. Optimizer state, empty before the first step, is checked
    against the parameters' shapes instead."""
    for key in ("generator", "model", "ema", "lookahead"):
        if problem := shape_problem(state[key], live[key], key):
            return problem
    saved = state["optimizers"]
    if not isinstance(saved, list) or len(saved) != len(live["optimizers"]):
        return f"optimizers is not a list of {len(live['optimizers'])}"
    for i, (entry, own) in enumerate(zip(saved, live["optimizers"])):
        where = f"optimizers[{i}]"
        if not isinstance(entry, dict) or set(entry) != set(own):
            return f"{where} is not an optimizer state_dict"
        params = [p for group in t.optimizers[i].param_groups for p in group["params"]]
        if problem := (shape_problem(entry["param_groups"], own["param_groups"], f"{where} param_groups")
                       or optimizer_state_problem(entry["state"], params, f"{where} state")):
            return problem
    return None


def shape_problem(saved: Any, live: Any, where: str) -> str | None:
    """The first place where `saved` differs from `live` in structure: dict keys, list lengths, tensor
    shapes and dtypes, value types."""
    if isinstance(live, torch.Tensor):
        if not isinstance(saved, torch.Tensor):
            return f"{where} is a {type(saved).__name__}, not a tensor"
        if saved.shape != live.shape or saved.dtype != live.dtype:
            return f"{where} is {tuple(saved.shape)} {saved.dtype}, this run's {tuple(live.shape)} {live.dtype}"
        return None
    if isinstance(live, dict):
        if not isinstance(saved, dict):
            return f"{where} is a {type(saved).__name__}, not a dict"
        missing, extra = [str(k) for k in live if k not in saved], [str(k) for k in saved if k not in live]
        if missing or extra:
            return f"{where} lacks {missing[:3]}" if missing else f"{where} has unexpected {extra[:3]}"
        return next(filter(None, (shape_problem(saved[k], v, f"{where}[{k!r}]") for k, v in live.items())), None)
    if isinstance(live, (list, tuple)):
        if not isinstance(saved, (list, tuple)) or len(saved) != len(live):
            return f"{where} is not a list of {len(live)}"
        return next(filter(None, (shape_problem(s, v, f"{where}[{i}]")
                                  for i, (s, v) in enumerate(zip(saved, live)))), None)
    if isinstance(live, (int, float)) and not isinstance(live, bool):
        ok = isinstance(saved, (int, float)) and not isinstance(saved, bool)
        return None if ok else f"{where} is {saved!r:.40}, expected a number"
    return None if type(saved) is type(live) else f"{where} is {saved!r:.40}, expected a {type(live).__name__}"


def optimizer_state_problem(state: Any, params: list[torch.Tensor], where: str) -> str | None:
    """Per-parameter optimizer state: each tensor the parameter's shape, or a scalar (a step count)."""
    if not isinstance(state, dict):
        return f"{where} is a {type(state).__name__}, not a dict"
    for key, entry in state.items():
        if not isinstance(key, int) or not 0 <= key < len(params) or not isinstance(entry, dict):
            return f"{where} has an entry {key!r} for no parameter"
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                if value.dim() and value.shape != params[key].shape:
                    return f"{where}[{key}][{name!r}] is {tuple(value.shape)}, its parameter {tuple(params[key].shape)}"
            elif value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                return f"{where}[{key}][{name!r}] is a {type(value).__name__}"
    return None


def counter_problem(state: dict, steps: int | None) -> str | None:
    """A history longer or shorter than the training it records: the EMA's and Adam's step counters
    (where the run has them) must count the optimizer steps of the history's epochs."""
    if steps is None:
        return None
    counters = {}
    if state["ema"] is not None:
        counters["the EMA"] = int(state["ema"]["n_averaged"])
    adam_steps = [float(entry["step"]) for saved in state["optimizers"] for entry in saved["state"].values()
                  if isinstance(entry.get("step"), (torch.Tensor, int, float))]
    if adam_steps:
        counters["the optimizer"] = int(max(adam_steps))
    for name, count in counters.items():
        if count != steps:
            epochs = len(state["history"])
            return f"its history records {epochs} epoch(s) ({steps} steps), {name} counted {count} steps"
    return None
