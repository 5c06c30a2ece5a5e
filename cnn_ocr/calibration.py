"""Temperature scaling: one scalar T, fitted on held-out data, turns scores into calibrated probabilities.

`softmax` and `log_softmax` here are the only softmax-with-temperature of the project: training, evaluation,
export parity and serving (through `cnn_ocr.spec`) all call them.
"""

from __future__ import annotations

import numpy as np


def log_softmax(scores: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise log-softmax of `scores / temperature` (float64, numerically stable)."""
    z = np.asarray(scores, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def softmax(scores: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of `scores / temperature`."""
    return np.exp(log_softmax(scores, temperature))


def nll(scores: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of integer `labels` under softmax(scores / temperature)."""
    logp = log_softmax(scores, temperature)
    return float(-logp[np.arange(len(labels)), labels].mean())


def fit_temperature(scores: np.ndarray, labels: np.ndarray) -> float:
    """The temperature in [0.01, 100] minimizing the NLL of `labels` (a bounded 1-D search over log T)."""
    from scipy.optimize import minimize_scalar

    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    res = minimize_scalar(
        lambda log_t: nll(scores, labels, float(np.exp(log_t))),
        bounds=(np.log(0.01), np.log(100.0)),
        method="bounded",
        options={"xatol": 1e-4},
    )
    return float(np.exp(res.x))
