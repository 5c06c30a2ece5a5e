"""The line recognizer: a small CRNN (convolutions -> bidirectional LSTM -> per-frame classes) for CTC.

Input (N, 1, 32, W) (a line from `cnn_ocr.lines.line_input`, MNIST-normalized); output logits
(N, W / 4, 11): one frame per 4 columns, classes 0-9 and the CTC blank (10). The first two conv blocks pool
2x2, the rest pool only the height, and a last conv collapses what is left of the height.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from cnn_ocr.lines import BLANK, LINE_HEIGHT

if TYPE_CHECKING:
    from cnn_ocr.photo_params import CrnnParams


class Crnn(nn.Module):
    """Conv features per column strip, read left to right by a BiLSTM."""

    def __init__(self, channels: list[int], hidden: int) -> None:
        super().__init__()
        if len(channels) < 2 or LINE_HEIGHT % 2 ** len(channels):
            raise ValueError("crnn.channels must list at least 2 conv blocks (and at most 5)")
        layers: list[nn.Module] = []
        prev = 1
        for i, c in enumerate(channels):
            layers += [nn.Conv2d(prev, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                       nn.MaxPool2d((2, 2) if i < 2 else (2, 1))]
            prev = c
        layers += [nn.Conv2d(prev, prev, (LINE_HEIGHT // 2 ** len(channels), 1)), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.rnn = nn.LSTM(prev, hidden, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * hidden, BLANK + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, 32, W) -> logits (N, W // 4, 11)."""
        f = self.features(x).squeeze(2).permute(0, 2, 1)  # (N, T, C)
        out, _ = self.rnn(f)
        return self.head(out)


def build(params: CrnnParams) -> Crnn:
    """An untrained line recognizer."""
    return Crnn(list(params.channels), params.hidden)
