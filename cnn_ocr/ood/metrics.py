"""Figures of a not-a-digit detector: digits are the positives (kept), non-digits the negatives (refused).

AUROC and FPR at 95 % TPR need no threshold; the threshold itself is fitted on validation data so that
at most a given share of validation digits is refused, then applied unchanged to every other set.
"""

from __future__ import annotations

import numpy as np


def auroc(digit_scores: np.ndarray, other_scores: np.ndarray) -> float:
    """Probability that a random digit scores above a random non-digit (ties count half)."""
    d, o = np.asarray(digit_scores, np.float64), np.asarray(other_scores, np.float64)
    if len(d) == 0 or len(o) == 0:
        raise ValueError("AUROC needs at least one digit and one non-digit score")
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([d, o]))  # ties get their average rank
    return float((ranks[: len(d)].sum() - len(d) * (len(d) + 1) / 2) / (len(d) * len(o)))


def fpr_at_tpr(digit_scores: np.ndarray, other_scores: np.ndarray, tpr: float = 0.95) -> float:
    """Share of non-digits kept at the threshold that keeps `tpr` of the digits."""
    threshold = np.quantile(np.asarray(digit_scores, np.float64), 1 - tpr, method="lower")
    return float(np.mean(np.asarray(other_scores) >= threshold))


def fit_threshold(val_digit_scores: np.ndarray, max_refusal: float) -> float:
    """The highest threshold that refuses (score < threshold) at most `max_refusal` of validation digits."""
    s = np.sort(np.asarray(val_digit_scores, np.float64))
    k = int(np.floor(max_refusal * len(s)))  # this many may fall below
    return float(s[min(k, len(s) - 1)])


def refusal_rate(scores: np.ndarray, threshold: float, refused_before: int = 0) -> float:
    """Share refused at `threshold`, counting `refused_before` inputs the preprocessing refused already."""
    total = len(scores) + refused_before
    return float((np.sum(np.asarray(scores) < threshold) + refused_before) / total) if total else 0.0


def ece(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error of the top probability over `bins` equal-width confidence bins."""
    p = np.asarray(probs, np.float64)
    if len(p) == 0:
        return 0.0
    conf, correct = p.max(1), (p.argmax(1) == np.asarray(labels)).astype(np.float64)
    which = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)
    total = 0.0
    for b in range(bins):
        sel = which == b
        if sel.any():
            total += sel.sum() * abs(conf[sel].mean() - correct[sel].mean())
    return float(total / len(p))


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> list[dict[str, float]]:
    """Per confidence bin: its range, count, mean confidence and accuracy (for the reliability diagram)."""
    p = np.asarray(probs, np.float64)
    conf, correct = p.max(1), p.argmax(1) == np.asarray(labels)
    which = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)
    return [{"low": b / bins, "high": (b + 1) / bins, "count": int((which == b).sum()),
             "confidence": float(conf[which == b].mean()) if (which == b).any() else float("nan"),
             "accuracy": float(correct[which == b].mean()) if (which == b).any() else float("nan")}
            for b in range(bins)]
