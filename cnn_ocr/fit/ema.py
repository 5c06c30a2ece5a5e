"""Exponential moving average of a network's weights (Polyak averaging), for the CNN training loop.

The average covers the parameters and the batch-norm running statistics; `num_batches_tracked` and other
integer buffers are copied. Early in training the effective decay is `min(decay, (1 + t) / (10 + t))`, so the
average is not dragged towards the random initialization (the warm-up used by TensorFlow's
`ExponentialMovingAverage` with `num_updates`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


class WeightAverage:
    """A shadow copy of `model`'s state updated after each optimizer step; `swapped_in` evaluates with it."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"the weight-average decay must be in (0, 1), got {decay}")
        self.decay, self.updates = decay, 0
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average one step towards the model's current weights."""
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for key, value in model.state_dict().items():
            avg = self.shadow[key]
            if avg.dtype.is_floating_point:
                avg.mul_(d).add_(value.detach(), alpha=1.0 - d)
            else:
                avg.copy_(value)

    @contextlib.contextmanager
    def swapped_in(self, model: nn.Module) -> Iterator[None]:
        """Within the block the model carries the averaged weights; its own come back afterwards."""
        own = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.shadow)
        try:
            yield
        finally:
            model.load_state_dict(own)

    def state_dict(self) -> dict:
        """The average and its step count, for a resumable checkpoint."""
        return {"updates": self.updates, "shadow": {k: v.clone() for k, v in self.shadow.items()}}

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state_dict()`'s output."""
        self.updates = int(state["updates"])
        for key, value in state["shadow"].items():
            self.shadow[key].copy_(value)
