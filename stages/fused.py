"""Plain SGD fused into the backward pass of Linear layers: each layer's update is one in-place GEMM.

At the tutorial's batch of 4 a step is memory-bound (BENCHMARKS.md section 2): the backward
pass writes a gradient as large as the weights (14.7 MB for the MLP), and SGD then reads
the weights and that gradient and writes the weights back. Fused, the backward pass adds
-lr * g^T x straight into each weight (one `addmm_`: W read and written once) and
-lr * sum(g) into its bias, so no gradient is stored and `optimizer.step()` has nothing
left to do. The update rule is SGD's own, w <- w - lr * dL/dw, with no momentum or weight
decay; only the rounding of the last bits differs (lr multiplies inside the GEMM).

Each layer takes the lr of its parameter group at the moment its backward runs, so the
lr schedule (which sets the group's lr before every step) applies as it does unfused.
"""
from __future__ import annotations

import torch
from torch import nn

from .models import linear_by_columns
from .params import TrainParams


class _SGDLinear(torch.autograd.Function):
    """y = x W^T + b forward; backward returns dL/dx and applies SGD's step to W and b in place,
    with the lr of their groups in `groups` (the optimizer's param_groups) at `indices`."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: nn.Parameter, bias: nn.Parameter | None,
                groups: list[dict], indices: tuple[int, int | None]):
        # The weights are inputs so that the output needs a backward even where x does not (the
        # first layer); they are not saved tensors, since backward changes them in place.
        ctx.save_for_backward(x)  # (batch, in)
        ctx.weight, ctx.bias, ctx.groups, ctx.indices = weight, bias, groups, indices
        return linear_by_columns(x, weight, bias)  # the product ColumnLinear takes unfused

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # g: (batch, out) = dL/dy
        (x,) = ctx.saved_tensors
        weight, bias, (wi, bi) = ctx.weight, ctx.bias, ctx.indices
        grad_x = g @ weight if ctx.needs_input_grad[0] else None  # with W as it was in forward
        with torch.no_grad():
            weight.addmm_(g.t(), x, alpha=-ctx.groups[wi]["lr"])  # W (out, in) -= lr * g^T x
            if bias is not None:
                bias.add_(g.sum(0), alpha=-ctx.groups[bi]["lr"])
        return grad_x, None, None, None, None  # no gradients kept: the step is done


def why_not_fused(p: TrainParams, model: nn.Module, optimizers: list[torch.optim.Optimizer],
                  world: int = 1) -> str | None:
    """Why SGD cannot be fused into this run's backward pass, or None when it can."""
    o, n = p.optim, p.numerics
    linear = {id(t) for m in model.modules() if isinstance(m, nn.Linear) for t in m.parameters()}
    reasons = [
        (o.optimizer != "sgd" or o.muon or len(optimizers) != 1, "the optimizer is not plain SGD"),
        (o.momentum > 0 or o.weight_decay > 0, "SGD has momentum or weight decay"),
        (any(id(t) not in linear for t in model.parameters() if t.requires_grad), "the model has non-Linear layers"),
        (n.precision != "fp32", f"precision is {n.precision}"),
        (n.compile, "the model is compiled"),
        (world > 1, "training runs in several processes"),
    ]
    return next((why for bad, why in reasons if bad), None)


def fuse_sgd(model: nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Route each Linear layer's forward through _SGDLinear; return how many layers.

    Groups are looked up by index when backward runs: loading a checkpoint replaces the
    optimizer's group dicts, and the schedule sets the lr on the current ones.
    """
    index = {id(t): i for i, group in enumerate(optimizer.param_groups) for t in group["params"]}
    layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
    for layer in layers:
        indices = (index[id(layer.weight)], index[id(layer.bias)] if layer.bias is not None else None)

        def forward(x, layer=layer, indices=indices):
            if not torch.is_grad_enabled():  # validation, evaluation: nothing to update
                return linear_by_columns(x, layer.weight, layer.bias)
            return _SGDLinear.apply(x, layer.weight, layer.bias, optimizer.param_groups, indices)

        layer.forward = forward  # an instance attribute: state_dict and the saved model are unchanged
    return len(layers)
