"""Several trained CNNs as one network: the average of their probabilities.

The output is log(mean softmax), so softmax of it gives the averaged probabilities; exported to ONNX it is
one graph with the usual contract ("input" -> "logits", temperature 1).
"""

from __future__ import annotations

import torch
from torch import nn


class Ensemble(nn.Module):
    """Averages the softmax probabilities of `members`; returns their log (N, 10)."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, 28, 28) normalized images -> (N, 10) log of the mean probabilities."""
        probs = torch.stack([m(x).softmax(dim=1) for m in self.members]).mean(dim=0)
        return torch.log(probs.clamp_min(1e-12))
