"""Scoring a trained CNN's not-a-digit detection: every detector side by side on the same data.

Thresholds are fitted on validation digits only (at most `ood.max_digit_refusal` of them refused); the
validation negatives, the MNIST test digits and the held-out families are then scored at that threshold.
ECE is measured on the MNIST test digits the detector accepts, with the run's calibrated probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cnn_ocr.calibration import softmax
from cnn_ocr.config import OodParams
from cnn_ocr.data.heldout import Family
from cnn_ocr.data.negatives import FAMILIES, Negatives
from cnn_ocr.ood import metrics
from cnn_ocr.ood.scores import AUTO, DETECTORS, Mahalanobis, energy, most_refusing, msp
from cnn_ocr.preprocess import to_model_input

# The headline shares refused by the shipped detector (metric `ood_<name>`): what a recipe run reports
REFUSAL_FIGURES = ("mnist_test_refused", "refused_val_negatives", "refused_fashion", "refused_handwriting",
                   "refused_pictograms")


@dataclass(frozen=True)
class Outputs:
    """Logits (N, 10) and penultimate features (N, D) of a batch of images."""

    logits: np.ndarray
    features: np.ndarray


def model_outputs(model: Any, images: np.ndarray, batch_size: int = 2048) -> Outputs:
    """Run a CNN (with `penultimate`) on uint8 images (N, 28, 28) on the CPU."""
    import torch

    model.eval()
    logits, feats = [], []
    with torch.inference_mode():
        x = torch.from_numpy(to_model_input(images)) if len(images) else torch.empty(0, 1, 28, 28)
        for start in range(0, len(x), batch_size):
            f = model.penultimate(x[start : start + batch_size])
            feats.append(f.float().numpy())
            logits.append(model.classifier[-1](f).float().numpy())
    if not logits:
        return Outputs(np.zeros((0, 10), np.float32), np.zeros((0, 0), np.float32))
    return Outputs(np.concatenate(logits), np.concatenate(feats))


@dataclass
class OodResult:
    """Flat metrics (for tracking), per detector the reliability bins of its accepted test digits, and the
    shipped detector (`ood.detector`, or under `auto` the one refusing the most validation negatives)."""

    metrics: dict[str, float] = field(default_factory=dict)
    reliability: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    detector: str = ""


def _scorers(train: Outputs, train_y: np.ndarray, ood: OodParams) -> dict[str, Any]:
    maha = Mahalanobis.fit(train.features, train_y)
    return {"msp": lambda o: msp(o.logits), "energy": lambda o: energy(o.logits, ood.energy_temperature),
            "mahalanobis": lambda o: maha.score(o.features)}


def _detector_figures(name: str, score, sets: dict[str, Outputs], neg_val: Negatives, heldout: dict[str, Family],
                      test_y: np.ndarray, temperature: float, ood: OodParams, out: OodResult) -> None:
    val_d, test_d, negs = score(sets["val_digits"]), score(sets["test_digits"]), score(sets["val_negatives"])
    threshold = metrics.fit_threshold(val_d, ood.max_digit_refusal)
    m = {"threshold": threshold, "mnist_test_refused": metrics.refusal_rate(test_d, threshold),
         "auroc_val_negatives": metrics.auroc(val_d, negs), "fpr95_val_negatives": metrics.fpr_at_tpr(val_d, negs),
         "refused_val_negatives": metrics.refusal_rate(negs, threshold)}
    for k, fam in enumerate(FAMILIES):
        if (neg_val.family == k).any():
            m[f"refused_neg_{fam}"] = metrics.refusal_rate(negs[neg_val.family == k], threshold)
    for fam, data in heldout.items():
        s = score(sets[f"heldout_{fam}"])
        m[f"refused_{fam}"] = metrics.refusal_rate(s, threshold, data.refused_before_model)
        if len(s):
            m[f"auroc_{fam}"], m[f"fpr95_{fam}"] = metrics.auroc(test_d, s), metrics.fpr_at_tpr(test_d, s)
    kept = test_d >= threshold
    probs = softmax(sets["test_digits"].logits[kept], temperature)
    m["ece_accepted"] = metrics.ece(probs, test_y[kept], ood.ece_bins)
    out.reliability[name] = metrics.reliability(probs, test_y[kept], ood.ece_bins)
    out.metrics.update({f"ood_{name}_{k}": float(v) for k, v in m.items()})


def evaluate_detectors(model: Any, train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray],
                       test: tuple[np.ndarray, np.ndarray], neg_val: Negatives, heldout: dict[str, Family],
                       temperature: float, ood: OodParams) -> OodResult:
    """All DETECTORS on the same data; the shipped one (`ood.detector`; under `auto`, the one refusing the most
    validation negatives) also under plain `ood_*` names."""
    sets = {"val_digits": model_outputs(model, val[0]), "test_digits": model_outputs(model, test[0]),
            "val_negatives": model_outputs(model, neg_val.x),
            **{f"heldout_{k}": model_outputs(model, v.x) for k, v in heldout.items()}}
    scorers = _scorers(model_outputs(model, train[0]), train[1], ood)
    out = OodResult()
    for name in DETECTORS:
        _detector_figures(name, scorers[name], sets, neg_val, heldout, test[1], temperature, ood, out)
    out.detector = ood.detector if ood.detector != AUTO else most_refusing(
        {name: out.metrics[f"ood_{name}_refused_val_negatives"] for name in DETECTORS})
    prefix = f"ood_{out.detector}_"
    out.metrics.update({"ood_" + k[len(prefix):]: v for k, v in list(out.metrics.items()) if k.startswith(prefix)})
    return out


def reliability_figure(bins: list[dict[str, float]], title: str) -> Any:
    """Reliability diagram: accuracy against confidence per bin, the diagonal for perfect calibration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5), constrained_layout=True)
    used = [b for b in bins if b["count"]]
    ax.bar([(b["low"] + b["high"]) / 2 for b in used], [b["accuracy"] for b in used],
           width=1 / max(len(bins), 1), edgecolor="black", alpha=0.7, label="accuracy")
    ax.plot([0, 1], [0, 1], "k--", label="perfect calibration")
    ax.set(xlabel="confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1), title=title)
    ax.legend(loc="upper left")
    return fig
