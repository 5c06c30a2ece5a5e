"""The detector a registered model carries, and the refusal figures its promotion is judged on.

Every family that can be registered gets one: the CNNs the shipped detector (`ood.detector`, with the energy
temperature, or the Mahalanobis state fitted on training features), the ensemble the members' mean energy
(or the MSP of its averaged probabilities), the SVM the MSP of its calibrated probabilities. Under
`ood.detector: auto`, each model gets the one of those it can carry that refuses the most validation negatives.
The threshold is fitted on the exported graph's scores of the validation digits (`export.export_model`, `ood.max_digit_refusal`).
The refusal figures are measured with that graph and threshold on the validation digits and on the
validation negatives (`negatives.version`, split `val`): the gate in `cnn_ocr.select` reads them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from cnn_ocr.config import Params, SelectParams
from cnn_ocr.data.versions import Splits
from cnn_ocr.families import ENSEMBLE, names
from cnn_ocr.ood.graph import Detector, framework_scores, onnx_scores
from cnn_ocr.ood.metrics import fit_threshold, refusal_rate
from cnn_ocr.ood.run import TRAIN_FEATURE_SAMPLES
from cnn_ocr.ood.scores import AUTO, DETECTORS, Mahalanobis, most_refusing

log = logging.getLogger(__name__)

# Version tags of the refusal figures (shares in [0, 1]) and of the detector itself.
DIGITS_REFUSED = "ood_val_digits_refused"
NEGATIVES_REFUSED = "ood_val_negatives_refused"


def candidates(family: str, params: Params) -> tuple[str, ...]:
    """The detectors a model of `family` may be registered with: `ood.detector`, or all it can carry under `auto`."""
    if family in names("sklearn"):
        return ("msp",)  # its probabilities are all it has
    allowed = ("msp", "energy") if family == ENSEMBLE else DETECTORS  # the members' features live in different spaces
    if params.ood.detector == AUTO:
        return allowed
    return (params.ood.detector,) if params.ood.detector in allowed else ("energy",)


def _detector(name: str, model: Any, params: Params, splits: Splits) -> Detector:
    maha = None
    if name == "mahalanobis":
        from cnn_ocr.ood.report import model_outputs

        rng = np.random.default_rng(params.seed)
        n = len(splits.train_y)
        take = np.sort(rng.choice(n, min(TRAIN_FEATURE_SAMPLES, n), replace=False))
        maha = Mahalanobis.fit(model_outputs(model, splits.train_x[take]).features, splits.train_y[take])
    return Detector(name, 0.0, params.ood.energy_temperature, maha)


def build_detector(model: Any, family: str, params: Params, splits: Splits) -> Detector:
    """The detector for `model` (threshold 0.0: `export_model` fits it on the graph's validation scores). Among
    several candidates (`ood.detector: auto`), the one refusing the most validation negatives at the threshold
    that refuses `ood.max_digit_refusal` of the validation digits."""
    options = {name: _detector(name, model, params, splits) for name in candidates(family, params)}
    if len(options) == 1:
        return next(iter(options.values()))
    negatives, refused = validation_negatives(params), {}
    for name, detector in options.items():
        threshold = fit_threshold(framework_scores(model, family, detector, splits.val_x), params.ood.max_digit_refusal)
        refused[name] = refusal_rate(framework_scores(model, family, detector, negatives), threshold)
    chosen = most_refusing(refused)
    log.info("ood.detector auto: %s (validation negatives refused: %s)", chosen,
             ", ".join(f"{k} {100 * v:.2f}%" for k, v in refused.items()))
    return options[chosen]


def validation_negatives(params: Params) -> np.ndarray:
    """The validation negatives (uint8, N x 28 x 28) of `negatives.version`, generated first when missing."""
    from cnn_ocr.data.negatives import ensure_negatives

    return ensure_negatives(params.negatives, params.data)["val"].x


def refusal_figures(onnx_path: Path, threshold: float, val_digits: np.ndarray,
                    val_negatives: np.ndarray) -> dict[str, float]:
    """Shares of the validation digits and of the validation negatives the exported graph refuses."""
    figures = {DIGITS_REFUSED: refusal_rate(onnx_scores(onnx_path, val_digits), threshold),
               NEGATIVES_REFUSED: refusal_rate(onnx_scores(onnx_path, val_negatives), threshold)}
    log.info("refused at threshold %.4g: %.2f%% of validation digits, %.2f%% of validation negatives", threshold,
             100 * figures[DIGITS_REFUSED], 100 * figures[NEGATIVES_REFUSED])
    return figures


def refusal_failure(candidate: dict[str, float], sel: SelectParams) -> str | None:
    """Why a version with metrics `candidate` misses the refusal targets, or None when it meets them."""
    if not (DIGITS_REFUSED in candidate and NEGATIVES_REFUSED in candidate):
        if sel.unscored == "allow":
            return None
        return ("no not-a-digit refusal figures (registered without a detector); register it again with "
                "`ocr select`, or set select.unscored=allow")
    neg, digits = candidate[NEGATIVES_REFUSED], candidate[DIGITS_REFUSED]
    if neg < sel.min_negative_refusal:
        return (f"refuses {neg:.2%} of the validation negatives, below select.min_negative_refusal "
                f"{sel.min_negative_refusal:.2%}")
    if digits > sel.max_digit_refusal:
        return (f"refuses {digits:.2%} of the validation digits, above select.max_digit_refusal "
                f"{sel.max_digit_refusal:.2%}")
    return None
