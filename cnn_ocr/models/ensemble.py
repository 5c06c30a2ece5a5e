"""Several trained CNNs as one network: the average of their probabilities.

The output is log(mean softmax), so softmax of it gives the averaged probabilities; exported to ONNX it is
one graph with the usual contract ("input" -> "logits", temperature 1). A member may be a `View` of a network:
the network on a fixed shift or rotation of the input, so that an ensemble of one network and its views is
test-time augmentation (ONNX: GridSample).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from cnn_ocr.preprocess import BACKGROUND, IMAGE_SIZE


class View(nn.Module):
    """`model` on its input shifted by (dx, dy) pixels (right, down) and rotated by `degrees` about the centre,
    one bilinear resample with a black background."""

    def __init__(self, model: nn.Module, dx: float, dy: float, degrees: float) -> None:
        super().__init__()
        self.model = model
        self.view = (float(dx), float(dy), float(degrees))
        a = math.radians(degrees)
        # the grid maps output to input coordinates (normalized to [-1, 1]): content moves by +dx, +dy
        theta = torch.tensor([[[math.cos(a), -math.sin(a), -2 * dx / IMAGE_SIZE],
                               [math.sin(a), math.cos(a), -2 * dy / IMAGE_SIZE]]], dtype=torch.float32)
        self.register_buffer("grid", F.affine_grid(theta, [1, 1, IMAGE_SIZE, IMAGE_SIZE], align_corners=False))

    def resample(self, x: torch.Tensor) -> torch.Tensor:
        """The view of (N, 1, 28, 28) normalized images."""
        grid = self.grid.expand(x.shape[0], -1, -1, -1)
        moved = F.grid_sample(x - BACKGROUND, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return moved + BACKGROUND

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.resample(x))


def with_views(models: list[nn.Module], views: list[tuple[float, float, float]]) -> list[nn.Module]:
    """Each model as itself and under each (dx, dy, degrees) view: the members of a test-time-augmented ensemble."""
    return [member for m in models for member in (m, *(View(m, *view) for view in views))]


class Ensemble(nn.Module):
    """Averages the softmax probabilities of `members`; returns their log (N, 10)."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)

    def member_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(members, N, 10): each member's logits. The views of one network go through it as one batch (one
        forward pass instead of one per view: what keeps test-time augmentation's batch-1 latency low)."""
        groups: dict[int, tuple[nn.Module, list[tuple[int, torch.Tensor]]]] = {}
        for i, member in enumerate(self.members):
            base, inputs = (member.model, member.resample(x)) if isinstance(member, View) else (member, x)
            groups.setdefault(id(base), (base, []))[1].append((i, inputs))
        out: list[torch.Tensor | None] = [None] * len(self.members)
        for base, items in groups.values():
            logits = base(torch.cat([inputs for _, inputs in items])) if len(items) > 1 else base(items[0][1])
            logits = logits.reshape(len(items), -1, logits.shape[-1])  # batch axis left free for ONNX
            for k, (i, _) in enumerate(items):
                out[i] = logits[k]
        return torch.stack(out)  # type: ignore[arg-type]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, 28, 28) normalized images -> (N, 10) log of the mean probabilities."""
        probs = self.member_logits(x).softmax(dim=2).mean(dim=0)
        return torch.log(probs.clamp_min(1e-12))
