"""Weight averaging during training: an exponential moving average, or airbench's lookahead."""
from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from .schedules import lookahead_decay


def make_ema(model: nn.Module, decay: float) -> AveragedModel:
    """A copy of `model` whose weights and buffers follow w_avg = decay * w_avg + (1 - decay) * w per step."""
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


class Lookahead:
    """airbench's lookahead: every `every` steps, slow <- slow + (1 - d) * (fast - slow), then fast <- slow,
    with d = peak * (step / total)^3; at the end the fast weights become the slow ones.

    Acts on the model's float state (weights and BatchNorm statistics), in place; integer buffers
    (BatchNorm's batch counter) are left alone.
    """

    def __init__(self, model: nn.Module, peak: float, every: int, total_steps: int):
        self.model, self.peak, self.every, self.total = model, peak, every, total_steps
        self.slow = {k: v.detach().clone() for k, v in self._state().items()}

    def _state(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.model.state_dict().items() if v.is_floating_point()}

    def step(self, step: int) -> None:
        """Call after optimizer step `step` (0-based over the whole run)."""
        if step % self.every == 0:
            self._pull(lookahead_decay(step, self.total, self.peak))

    def finish(self) -> None:
        """The slow weights become the model's: what is evaluated and saved."""
        self._pull(1.0)

    @torch.no_grad()
    def _pull(self, decay: float) -> None:
        for key, fast in self._state().items():
            slow = self.slow[key]
            slow.lerp_(fast, 1.0 - decay)
            fast.copy_(slow)

    def state_dict(self) -> dict:
        return {k: v.clone() for k, v in self.slow.items()}

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            self.slow[key].copy_(value)
