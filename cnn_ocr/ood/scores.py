"""Out-of-distribution scores. Every score is "digit-ness": higher means more like a digit, and an input
is refused as not a digit when its score is below the fitted threshold.

- `msp`: the maximum softmax probability (Hendrycks & Gimpel, 2017).
- `energy`: the negative free energy, T * logsumexp(logits / T) (Liu et al., 2020).
- `mahalanobis`: minus the smallest Mahalanobis distance of the penultimate features to a class mean,
  class-conditional Gaussians with one shared covariance fitted on training features (Lee et al., 2018).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cnn_ocr.calibration import softmax

DETECTORS = ("msp", "energy", "mahalanobis")
AUTO = "auto"  # `ood.detector`: the detector that refuses the most validation negatives, chosen per model


def most_refusing(refused: dict[str, float]) -> str:
    """The detector (of `refused`: name -> share of validation negatives refused at the threshold fitted on the
    validation digits) that refuses the most; a tie goes to the first in DETECTORS order."""
    return max(sorted(refused, key=DETECTORS.index), key=lambda name: refused[name])


def msp(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """The largest softmax probability of each row of logits (N, 10)."""
    return softmax(np.asarray(logits, np.float64), temperature).max(1)


def energy(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """T * logsumexp(logits / T) per row, computed stably."""
    z = np.asarray(logits, np.float64) / temperature
    top = z.max(1, keepdims=True)
    return temperature * (top[:, 0] + np.log(np.exp(z - top).sum(1)))


@dataclass(frozen=True)
class Mahalanobis:
    """Class means and the inverse of the shared (tied) covariance of penultimate features."""

    means: np.ndarray  # (classes, features)
    precision: np.ndarray  # (features, features)

    @classmethod
    def fit(cls, features: np.ndarray, labels: np.ndarray, ridge: float = 1e-6) -> Mahalanobis:
        """Fit on training features (N, D) and their labels; `ridge` keeps the covariance invertible."""
        f = np.asarray(features, np.float64)
        classes = np.unique(labels)
        means = np.stack([f[labels == c].mean(0) for c in classes])
        centred = f - means[np.searchsorted(classes, labels)]
        cov = centred.T @ centred / max(len(f), 1)
        cov += ridge * max(float(np.trace(cov)) / len(cov), 1e-12) * np.eye(len(cov))
        return cls(means, np.linalg.pinv(cov, hermitian=True))

    def score(self, features: np.ndarray) -> np.ndarray:
        """Minus the smallest squared Mahalanobis distance to a class mean, per row."""
        f = np.asarray(features, np.float64)
        diff = f[:, None, :] - self.means[None]
        dist = np.einsum("ncd,de,nce->nc", diff, self.precision, diff)
        return -dist.min(1)
