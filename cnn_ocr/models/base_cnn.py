"""Experiment 1's base CNN: two 3x3 conv layers with ReLU and max-pooling, one dense ReLU layer, 10 logits."""

from __future__ import annotations

import torch
from torch import nn

from cnn_ocr.families import BaseCnnParams
from cnn_ocr.preprocess import IMAGE_SIZE


class BaseCNN(nn.Module):
    """conv-ReLU(-pool)-conv-ReLU-pool -> dense-ReLU -> logits; softmax is applied outside the network."""

    def __init__(
        self,
        conv_filters: int,
        kernel_size: int,
        pool_after_each_conv: bool,
        dense_units: int,
        dropout: float,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(1, conv_filters, kernel_size), nn.ReLU()]
        side = IMAGE_SIZE - kernel_size + 1
        if pool_after_each_conv:
            layers.append(nn.MaxPool2d(2))
            side //= 2
        layers += [nn.Conv2d(conv_filters, conv_filters, kernel_size), nn.ReLU(), nn.MaxPool2d(2)]
        side = (side - kernel_size + 1) // 2
        if side < 1:
            raise ValueError(f"kernel_size {kernel_size} leaves no spatial extent for 28x28 input")
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(conv_filters * side * side, dense_units),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(dense_units, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, 28, 28) normalized images -> (N, 10) logits."""
        return self.classifier(self.features(x))

    def penultimate(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, 28, 28) normalized images -> the features the last linear layer reads (for Mahalanobis)."""
        return self.classifier[:-1](self.features(x))


def build(p: BaseCnnParams) -> BaseCNN:
    """Build the base CNN from `params.models.base_cnn`."""
    return BaseCNN(p.conv_filters, p.kernel_size, p.pool_after_each_conv, p.dense_units, p.dropout)
