"""Experiment 1's SVM: scaling (+ optional PCA) and an RBF SVC on the flattened pixels.

Probabilities come from a temperature softmax over the one-vs-rest decision scores, the temperature fitted
on the validation split (`CalibratedSVM.calibrate`). This replaces `SVC(probability=True)`, whose internal
5-fold cross-validation multiplies the fit time.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.decomposition import PCA
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler
from sklearn.svm import SVC

from cnn_ocr.calibration import fit_temperature, log_softmax
from cnn_ocr.families import SvmParams

# Classes a skops-serialized CalibratedSVM may instantiate when loaded back.
SKOPS_TRUSTED_TYPES = ["cnn_ocr.models.svm.CalibratedSVM"]


class CalibratedSVM(ClassifierMixin, BaseEstimator):
    """A fitted scikit-learn pipeline ending in an SVC, plus the temperature that calibrates its scores.

    Input: flattened normalized images, float32 (N, 784) = `to_model_input(x).reshape(N, -1)`.
    """

    def __init__(self, pipeline: Pipeline | None = None, temperature: float = 1.0) -> None:
        self.pipeline = pipeline
        self.temperature = temperature

    def fit(self, x: np.ndarray, y: np.ndarray) -> CalibratedSVM:
        """Fit the pipeline (scaler, PCA, SVC) on training data."""
        self.pipeline.fit(x, y)
        self.classes_ = self.pipeline.classes_
        return self

    def calibrate(self, x: np.ndarray, y: np.ndarray) -> float:
        """Fit the temperature on held-out data (the validation split); returns it."""
        self.temperature = fit_temperature(self.decision_function(x), np.searchsorted(self.classes_, y))
        return self.temperature

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        """One-vs-rest scores (N, n_classes)."""
        return self.pipeline.decision_function(x)

    def predict_log_proba(self, x: np.ndarray) -> np.ndarray:
        """Calibrated log-probabilities (N, n_classes)."""
        return log_softmax(self.decision_function(x), self.temperature)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (N, n_classes); rows sum to 1."""
        return np.exp(self.predict_log_proba(x))

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Most probable class per row (consistent with `predict_proba`)."""
        return self.classes_[np.argmax(self.decision_function(x), axis=1)]


def build(p: SvmParams) -> CalibratedSVM:
    """Build an unfitted CalibratedSVM from `params.models.svm`."""
    steps: list[tuple[str, object]] = []
    if p.scaling == "standard":
        steps.append(("scale", StandardScaler()))
    elif p.scaling == "minmax":
        steps.append(("scale", MinMaxScaler()))
    if p.pca_components:
        steps.append(("pca", PCA(n_components=p.pca_components, whiten=p.pca_whiten, random_state=0)))
    svc = SVC(kernel=p.kernel, C=p.C, gamma=p.gamma, cache_size=p.cache_size_mb)
    steps.append(("svc", svc))
    return CalibratedSVM(Pipeline(steps))
