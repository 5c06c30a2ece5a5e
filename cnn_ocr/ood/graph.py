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
    """A torch module returning (logits, score) for (N, 1, 28, 28) inputs; `model` needs `penultimate`, or is
    an ensemble (`members`: scored with msp or energy, the members' energies averaged)."""
    if hasattr(model, "members") and detector.name == "mahalanobis":
        raise ValueError("an ensemble is scored with msp or energy, not mahalanobis")
    import torch
    from torch import nn

    def _energy(logits: torch.Tensor) -> torch.Tensor:
        return detector.temperature * torch.logsumexp(logits / detector.temperature, 1)

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
            if hasattr(self.net, "members"):
                return self._ensemble(x)
            feats = self.net.penultimate(x)
            logits = self.net.classifier[-1](feats)
            if detector.name == "msp":
                score = torch.softmax(logits, 1).max(1).values
            elif detector.name == "energy":
                score = _energy(logits)
            else:  # minus the smallest squared Mahalanobis distance, expanded: f'Pf - 2 f'P mu + mu'P mu
                fp = feats @ self.precision
                dist = ((fp * feats).sum(1, keepdim=True) - 2 * fp @ self.means.T
                        + ((self.means @ self.precision) * self.means).sum(1)[None])
                score = -dist.min(1).values
            return logits, score

        def _ensemble(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """An ensemble's log mean probabilities (as `Ensemble.forward`) and the members' mean energy, or
            the MSP of the averaged probabilities."""
            member_logits = self.net.member_logits(x)
            probs = member_logits.softmax(dim=2).mean(dim=0)
            logits = torch.log(probs.clamp_min(1e-12))
            if detector.name == "msp":
                return logits, probs.max(1).values
            return logits, torch.stack([_energy(lg) for lg in member_logits.unbind(0)]).mean(dim=0)

    return ScoredNet().eval()


def torch_scores(model: Any, detector: Detector, images: np.ndarray) -> np.ndarray:
    """The not-a-digit scores PyTorch computes for uint8 images (N, 28, 28), through the exported wrapper."""
    import copy

    import torch

    from cnn_ocr.preprocess import to_model_input

    net = scored_net(copy.deepcopy(model).cpu().eval(), detector)
    with torch.inference_mode():
        return net(torch.from_numpy(to_model_input(images)))[1].numpy()


def sklearn_scores(model: Any, images: np.ndarray) -> np.ndarray:
    """The SVM's MSP score: the largest of its calibrated probabilities, for uint8 images (N, 28, 28)."""
    from cnn_ocr.preprocess import to_model_input

    x = to_model_input(images)
    return np.asarray(model.predict_proba(x.reshape(len(x), -1)), np.float64).max(1)


def framework_scores(model: Any, family: str, detector: Detector, images: np.ndarray) -> np.ndarray:
    """The not-a-digit scores the training framework computes (PyTorch, or scikit-learn for the SVM)."""
    from cnn_ocr.families import names

    if family in names("sklearn"):
        if detector.name != "msp":
            raise ValueError(f"the {family} model is scored with msp, not {detector.name}")
        return sklearn_scores(model, images)
    return torch_scores(model, detector, images)


def with_msp_output(onnx_model: Any, logits_name: str, score_name: str) -> Any:
    """Add the MSP score to a graph whose `logits_name` output holds log-probabilities (the SVM's):
    max(exp(logits)) per row as the (N,) output `score_name`."""
    from onnx import TensorProto, helper

    graph = onnx_model.graph
    graph.node.append(helper.make_node("Exp", [logits_name], ["msp_probabilities"], name="msp_exp"))
    graph.node.append(helper.make_node("ReduceMax", ["msp_probabilities"], [score_name], name="msp_max",
                                       axes=[1], keepdims=0))
    graph.output.append(helper.make_tensor_value_info(score_name, TensorProto.FLOAT, ["batch"]))
    return onnx_model


def onnx_scores(onnx_path: Any, images: np.ndarray) -> np.ndarray:
    """The graph's "ood_score" output from ONNX Runtime for uint8 images (N, 28, 28)."""
    from cnn_ocr.onnx_session import make_session
    from cnn_ocr.spec import OOD_OUTPUT_NAME, graph_outputs

    return graph_outputs(make_session(onnx_path), images, output_name=OOD_OUTPUT_NAME)


def score_parity(onnx_path: Any, model: Any, detector: Detector, images: np.ndarray, family: str = "base_cnn") -> float:
    """Largest relative |score_onnx - score_framework| over `images` (relative to max(1, |score_framework|))."""
    ours, theirs = onnx_scores(onnx_path, images), framework_scores(model, family, detector, images)
    return float((np.abs(ours - theirs) / np.maximum(1.0, np.abs(theirs))).max())
