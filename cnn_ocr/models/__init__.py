"""The networks and estimators of the model families, one module per family, each exposing `build(params)`.

CNN families return a `torch.nn.Module` mapping normalized float32 (N, 1, 28, 28) input to logits (N, 10).
The SVM family returns a scikit-learn estimator over flattened (N, 784) input with calibrated `predict_proba`.
Which module builds which family is written once, in `cnn_ocr.families`; the names below are its own.
"""

from __future__ import annotations

from typing import Any

from cnn_ocr.families import ENSEMBLE, FAMILIES, TORCH_FAMILIES, check_family, get, is_torch

__all__ = ["ENSEMBLE", "FAMILIES", "TORCH_FAMILIES", "build", "check_family", "is_torch"]


def build(family: str, family_params: Any) -> Any:
    """Build an untrained model of `family` from its params block (`params.models.<family>`)."""
    return get(family).build(family_params)
