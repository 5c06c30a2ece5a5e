"""The not-a-digit score inside the exported graph: a CNN wrapped so one forward pass returns its logits and
the detector's score, computed exactly as `cnn_ocr.ood.scores` computes it (so one ONNX file carries both)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cnn_ocr.ood.scores import DETECTORS, Mahalanobis


@dataclass(frozen=True)
class Detector:
    """What the exported graph scores with: the detector's name, its fitted threshold and its state."""

    name: str
    threshold: float
    temperature: float = 1.0  # energy's T
    mahalanobis: Mahalanobis | None = None

    def __post_init__(self) -> None:
        if self.name not in DETECTORS:
            raise ValueError(f"unknown detector {self.name!r}; choose one of: {', '.join(DETECTORS)}")
        if self.name == "mahalanobis" and self.mahalanobis is None:
            raise ValueError("the mahalanobis detector needs its fitted class means and precision")


def scored_net(model: Any, detector: Detector) -> Any:
    """A torch module returning (logits, score) for (N, 1, 28, 28) inputs; `model` needs `penultimate`."""
    import torch
    from torch import nn

    class ScoredNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = model
            maha = detector.mahalanobis
            means = np.zeros((1, 1)) if maha is None else maha.means
            precision = np.zeros((1, 1)) if maha is None else maha.precision
            self.register_buffer("means", torch.tensor(means, dtype=torch.float32))
            self.register_buffer("precision", torch.tensor(precision, dtype=torch.float32))

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            feats = self.net.penultimate(x)
            logits = self.net.classifier[-1](feats)
            if detector.name == "msp":
                score = torch.softmax(logits, 1).max(1).values
            elif detector.name == "energy":
                score = detector.temperature * torch.logsumexp(logits / detector.temperature, 1)
            else:  # minus the smallest squared Mahalanobis distance, expanded: f'Pf - 2 f'P mu + mu'P mu
                fp = feats @ self.precision
                dist = ((fp * feats).sum(1, keepdim=True) - 2 * fp @ self.means.T
                        + ((self.means @ self.precision) * self.means).sum(1)[None])
                score = -dist.min(1).values
            return logits, score

    return ScoredNet().eval()


def torch_scores(model: Any, detector: Detector, images: np.ndarray) -> np.ndarray:
    """The not-a-digit scores PyTorch computes for uint8 images (N, 28, 28), through the exported wrapper."""
    import copy

    import torch

    from cnn_ocr.preprocess import to_model_input

    net = scored_net(copy.deepcopy(model).cpu().eval(), detector)
    with torch.inference_mode():
        return net(torch.from_numpy(to_model_input(images)))[1].numpy()


def onnx_scores(onnx_path: Any, images: np.ndarray) -> np.ndarray:
    """The graph's "ood_score" output from ONNX Runtime for uint8 images (N, 28, 28)."""
    from cnn_ocr.onnx_session import make_session
    from cnn_ocr.spec import OOD_OUTPUT_NAME, graph_outputs

    return graph_outputs(make_session(onnx_path), images, output_name=OOD_OUTPUT_NAME)


def score_parity(onnx_path: Any, model: Any, detector: Detector, images: np.ndarray) -> float:
    """Largest relative |score_onnx - score_torch| over `images` (relative to max(1, |score_torch|))."""
    ours, theirs = onnx_scores(onnx_path, images), torch_scores(model, detector, images)
    return float((np.abs(ours - theirs) / np.maximum(1.0, np.abs(theirs))).max())
