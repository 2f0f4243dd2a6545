"""Optimizers from train.optim: parameter groups with their own lr, airbench's units, and Muon.

Parameter groups: BatchNorm biases get lr x bn_bias_lr and weight decay / bn_bias_lr (the
product, which sets how fast decay shrinks them, is unchanged); with `muon`, conv filters
(4-D weights) go to Muon and everything else to `optimizer`. Parameters frozen when the
model is built (airbench's whitening filters, BatchNorm scales with bn_weight frozen) are
left out. Parameters with a schedule of their own (train.optim.freeze_anneal) get groups of
their own, keyed "schedule_scale": how many times faster than the run's they go through the
lr schedule.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .params import OptimParams

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)  # Keller Jordan's quintic Newton-Schulz iteration


def step_values(p: OptimParams) -> tuple[float, float]:
    """(lr, weight_decay) per step for a mean-reduced loss, as torch.optim.SGD takes them.

    per-1024 (airbench94's units): with k = 1024 (1 + 1 / (1 - momentum)), a step moves the
    weights by lr * batch_size / k times the mean gradient (lr per 1,024 images of a summed loss,
    divided by Nesterov momentum's gain so that steps match gradients in scale whatever the
    momentum), and shrinks them by weight_decay * batch_size / k (decay per 1,024 images,
    independent of lr: SGD's coupled decay is set to that / the step lr). Per image, both stay
    the same when batch_size changes; the lr schedule scales both, as in airbench.
    """
    if p.units == "per-step":
        return p.lr, p.weight_decay
    k = 1024 * (1 + 1 / (1 - p.momentum))
    step_lr = p.lr * p.batch_size / k
    return step_lr, (p.weight_decay * p.batch_size / k) / step_lr


def param_groups(model: nn.Module, lr: float, weight_decay: float, bn_bias_lr: float,
                 split_filters: bool) -> tuple[list[dict], list[nn.Parameter]]:
    """(groups for the main optimizer, conv filters split off for Muon, empty unless split_filters)."""
    bn_biases = {id(m.bias) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    filters, biases, rest = [], [], []
    for param in model.parameters():
        if not param.requires_grad:
            continue
        if split_filters and param.ndim == 4:
            filters.append(param)
        elif id(param) in bn_biases:
            biases.append(param)
        else:
            rest.append(param)
    groups = [{"params": rest, "lr": lr, "weight_decay": weight_decay}]
    if biases:
        groups.append({"params": biases, "lr": lr * bn_bias_lr, "weight_decay": weight_decay / bn_bias_lr})
    return groups, filters


def split_by_scale(groups: list[dict], scales: dict[int, float]) -> list[dict]:
    """`groups` with the parameters that `scales` names (by id) moved to groups of their own, one per
    group and scale, with "schedule_scale" set; the rest keep theirs, first, so that group 0 follows
    the run's schedule. Empty groups are dropped."""
    kept, moved = [], []
    for group in groups:
        by_scale: dict[float, list[nn.Parameter]] = {}
        for param in group["params"]:
            by_scale.setdefault(scales.get(id(param), 1.0), []).append(param)
        for scale, params in sorted(by_scale.items()):
            entry = {**group, "params": params}
            if scale == 1.0:
                kept.append(entry)
            else:
                moved.append(entry | {"schedule_scale": scale})
    return kept + moved


def make_optimizers(p: OptimParams, model: nn.Module,
                    scales: dict[int, float] | None = None) -> list[torch.optim.Optimizer]:
    """The main optimizer, and Muon for the conv filters when p.muon; each group's peak lr in "peak_lr".

    `scales`: id(parameter) -> how many times faster it goes through the lr schedule (set_lr).
    """
    lr, decay = step_values(p)
    groups, filters = param_groups(model, lr, decay, p.bn_bias_lr, split_filters=p.muon)
    groups = split_by_scale(groups, scales or {})
    if p.optimizer == "sgd":
        optimizers = [torch.optim.SGD(groups, lr=lr, momentum=p.momentum, nesterov=p.nesterov)]
    elif p.optimizer == "adamw":
        optimizers = [torch.optim.AdamW(groups, lr=lr)]
    else:
        raise ValueError(f"Invalid optimizer {p.optimizer!r}. Only sgd, adamw are supported.")
    if filters:
        optimizers.append(Muon(split_by_scale([{"params": filters}], scales or {}),
                               lr=p.muon_lr, momentum=p.muon_momentum))
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            group["peak_lr"] = group["lr"]
    return optimizers


def set_lr(optimizers: list[torch.optim.Optimizer], factor_at: Callable[[float], float], step: int) -> None:
    """Every group's lr = its peak lr x the schedule's factor for the coming `step` of the run,
    taken at step x the group's "schedule_scale" (1 unless it has a shorter schedule of its own)."""
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            group["lr"] = group["peak_lr"] * factor_at(step * group.get("schedule_scale", 1.0))


def orthogonalize(g: torch.Tensor, steps: int = 5, eps: float = 1e-7) -> torch.Tensor:
    """About U V^T of g = U S V^T (2-D), by Newton-Schulz: singular values land near 1 (in about
    0.5..1.5, which trains as well), singular vectors are kept. bf16 on CUDA, fp32 elsewhere
    (CPUs without native bf16 emulate it slowly)."""
    a, b, c = NS_COEFFICIENTS
    x = g.bfloat16() if g.is_cuda else g.float()
    tall = x.size(0) > x.size(1)
    if tall:
        x = x.T
    x = x / (x.norm() + eps)  # spectral norm <= Frobenius norm <= 1: inside the iteration's range
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.T if tall else x).to(g.dtype)


class Muon(torch.optim.Optimizer):
    """Muon (Keller Jordan) as airbench94_muon uses it on conv filters (out, in, k, k):
    Nesterov momentum, each filter bank's update orthogonalized as a (out, in*k*k) matrix, weights
    renormalized to Frobenius norm sqrt(out) before each step. torch.optim.Muon (torch >= 2.9)
    takes only 2-D parameters, so conv filters need this one."""

    def __init__(self, params, lr: float, momentum: float, nesterov: bool = True):
        super().__init__(params, {"lr": lr, "momentum": momentum, "nesterov": nesterov})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p.grad)
                buf = state["momentum_buffer"]
                buf.mul_(group["momentum"]).add_(p.grad)
                g = p.grad.add(buf, alpha=group["momentum"]) if group["nesterov"] else buf
                p.mul_(len(p) ** 0.5 / p.norm())
                p.add_(orthogonalize(g.reshape(len(g), -1)).view_as(p), alpha=-group["lr"])
