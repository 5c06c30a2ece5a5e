"""Model families by name: one module per family, each exposing `build(family_params) -> model`.

CNN families return a `torch.nn.Module` mapping normalized float32 (N, 1, 28, 28) input to logits (N, 10).
The SVM family returns a scikit-learn estimator over flattened (N, 784) input with calibrated `predict_proba`.
Family modules import torch / scikit-learn, so they are imported only when a model is built.
"""

from __future__ import annotations

import importlib
from typing import Any

FAMILIES: tuple[str, ...] = ("base_cnn", "svm", "improved_cnn")
TORCH_FAMILIES: frozenset[str] = frozenset({"base_cnn", "improved_cnn"})
# Not a trainable family: finished CNN runs averaged by `ocr ensemble` (cnn_ocr/models/ensemble.py).
ENSEMBLE = "ensemble"


def check_family(family: str) -> str:
    """Return `family` if it is known, else raise ValueError naming the choices."""
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; choose one of: {', '.join(FAMILIES)}")
    return family


def is_torch(family: str) -> bool:
    """True when the family is a PyTorch network (trained by the epoch loop, or an ensemble of such)."""
    return family == ENSEMBLE or check_family(family) in TORCH_FAMILIES


def build(family: str, family_params: Any) -> Any:
    """Build an untrained model of `family` from its params block (`params.models.<family>`)."""
    module = importlib.import_module(f"cnn_ocr.models.{check_family(family)}")
    return module.build(family_params)
