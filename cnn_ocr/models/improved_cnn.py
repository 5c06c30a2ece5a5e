"""Experiment 2's improved CNN: conv pairs with batch norm, max-pooling and dropout, then dense layers."""

from __future__ import annotations

import torch
from torch import nn

from cnn_ocr.families import ImprovedCnnParams
from cnn_ocr.preprocess import IMAGE_SIZE


def _conv_block(c_in: int, c_out: int, kernel_size: int, padding: int) -> list[nn.Module]:
    # Bias is redundant before batch norm.
    return [nn.Conv2d(c_in, c_out, kernel_size, padding=padding, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


class ImprovedCNN(nn.Module):
    """[conv-BN-ReLU x2, max-pool, dropout] per filter pair -> [dense-ReLU-dropout]* -> logits."""

    def __init__(
        self,
        conv_filters: tuple[int, ...],
        kernel_size: int,
        padding: int,
        dense_units: tuple[int, ...],
        conv_dropout: float,
        dense_dropout: float,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in, side = 1, IMAGE_SIZE
        for i in range(0, len(conv_filters), 2):
            c_mid, c_out = conv_filters[i], conv_filters[i + 1]
            layers += _conv_block(c_in, c_mid, kernel_size, padding)
            layers += _conv_block(c_mid, c_out, kernel_size, padding)
            layers += [nn.MaxPool2d(2), nn.Dropout(conv_dropout)]
            side = (side + 2 * (2 * padding - kernel_size + 1)) // 2
            c_in = c_out
        if side < 1:
            raise ValueError("conv layers leave no spatial extent for 28x28 input; use padding or fewer pairs")
        dense: list[nn.Module] = [nn.Flatten()]
        width = c_in * side * side
        for units in dense_units:
            dense += [nn.Linear(width, units), nn.ReLU(), nn.Dropout(dense_dropout)]
            width = units
        dense.append(nn.Linear(width, num_classes))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(*dense)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, 28, 28) normalized images -> (N, 10) logits."""
        return self.classifier(self.features(x))

    def penultimate(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, 28, 28) normalized images -> the features the last linear layer reads (for Mahalanobis)."""
        return self.classifier[:-1](self.features(x))


def build(p: ImprovedCnnParams) -> ImprovedCNN:
    """Build the improved CNN from `params.models.improved_cnn`."""
    return ImprovedCNN(
        tuple(p.conv_filters), p.kernel_size, p.padding, tuple(p.dense_units), p.conv_dropout, p.dense_dropout
    )
