"""Learning-rate and averaging schedules, as multipliers of a peak value at a given step."""
from __future__ import annotations

import math


def lr_factor(step: float, total: int, warmup: float, schedule: str, warmup_from: float = 0.0,
              decay_to: float = 0.0) -> float:
    """Multiplier of the peak lr at `step` (0-based) of `total`.

    Warm-up: linear from warmup_from to 1 over the first `warmup` fraction of steps. Then
    constant, or down to decay_to at the last step, linearly or along a half cosine, and
    decay_to from there on (a group on a faster schedule of its own, optimizers.set_lr).
    airbench94's shape is warmup 0.23, warmup_from 0.2, linear, decay_to 0.07.
    """
    warm = int(warmup * total)
    if step < warm:
        return warmup_from + (1.0 - warmup_from) * (step + 1) / warm
    if schedule == "constant":
        return 1.0
    done = min(1.0, (step - warm) / max(1, total - warm))  # 0 -> 1 over the decay phase
    if schedule == "linear":
        return 1.0 - (1.0 - decay_to) * done
    if schedule == "cosine":
        return decay_to + (1.0 - decay_to) * 0.5 * (1.0 + math.cos(math.pi * done))
    raise ValueError(f"Invalid schedule {schedule!r}. Only constant, linear, cosine are supported.")


def lookahead_decay(step: int, total: int, peak: float) -> float:
    """airbench's lookahead decay at `step` of `total`: peak x (step / total)^3, near 0 early
    (the fast weights move freely) and growing to `peak` at the end."""
    return peak * (step / total) ** 3
