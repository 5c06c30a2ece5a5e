"""Not-a-digit detection in a training run: the negatives outlier exposure trains on (generated ones and users'
"not a digit" corrections), and the detector figures logged with every CNN run (`cnn_ocr.train` calls these)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from cnn_ocr.config import DataParams, Params
from cnn_ocr.data.heldout import LOADERS, Family, HeldoutError
from cnn_ocr.data.layout import META, version_dir
from cnn_ocr.data.negatives import ensure_negatives, load_negatives
from cnn_ocr.data.versions import Splits
from cnn_ocr.tracking.writing import log_dict, log_figure, log_metrics, set_tags

log = logging.getLogger(__name__)
TRAIN_FEATURE_SAMPLES = 10000  # training images whose features fit the Mahalanobis detector


def training_negatives(params: Params, family_params: Any) -> tuple[np.ndarray, int] | None:
    """The training negatives (uint8, N x 28 x 28) when outlier exposure is on, else None: `outlier_exposure.version`'s
    (generated first when it is `negatives.version` and missing), then the "not a digit" corrections of the
    feedback versions in `data.extra_train_versions`. Returns (negatives, how many came from feedback)."""
    oe = family_params.outlier_exposure
    if not oe.enabled:
        return None
    if oe.version == params.negatives.version:
        generated = ensure_negatives(params.negatives, params.data)["train"].x
    else:
        generated = load_negatives(oe.version, params.data)["train"].x
    feedback = feedback_negatives(params.data)
    if len(feedback):
        log.info("outlier exposure: %d generated negatives and %d not-a-digit corrections from %s", len(generated),
                 len(feedback), ", ".join(params.data.extra_train_versions))
    return np.concatenate([generated, feedback]), len(feedback)


def feedback_negatives(data: DataParams) -> np.ndarray:
    """The "not a digit" corrections (uint8, N x 28 x 28) of the versions in `data.extra_train_versions`, each
    folder checked against its manifest first; versions without negatives add none."""
    from cnn_ocr.data.raw_store import verify_folder
    from cnn_ocr.feedback import load_feedback_negatives

    parts = [np.zeros((0, 28, 28), np.uint8)]
    for name in data.extra_train_versions:
        folder = version_dir(name, data)
        verify_folder(folder, META)
        parts.append(load_feedback_negatives(folder))
    return np.concatenate(parts)


def heldout_families(n: int, seed: int) -> dict[str, Family]:
    """Every held-out family whose Debian package is installed (a missing one is logged and left out)."""
    out = {}
    for name, load in LOADERS.items():
        try:
            out[name] = load(n, seed)
        except HeldoutError as exc:
            log.warning("held-out family %s not scored: %s", name, exc)
    return out


def score_detectors(model: Any, params: Params, splits: Splits, temperature: float, neg_val: Any) -> Any:
    """Every detector on a trained CNN (`evaluate_detectors`): the Mahalanobis state fitted on up to
    TRAIN_FEATURE_SAMPLES training digits, thresholds on the validation digits, then the validation negatives
    `neg_val`, the test digits and `ood.heldout_samples` images of each held-out family."""
    from cnn_ocr.ood.report import evaluate_detectors

    rng = np.random.default_rng(params.seed)
    take = np.sort(rng.choice(len(splits.train_y), min(TRAIN_FEATURE_SAMPLES, len(splits.train_y)), replace=False))
    return evaluate_detectors(model, (splits.train_x[take], splits.train_y[take]), (splits.val_x, splits.val_y),
                              (splits.test_x, splits.test_y), neg_val,
                              heldout_families(params.ood.heldout_samples, params.seed), temperature, params.ood)


def log_detectors(model: Any, params: Params, splits: Splits, temperature: float, family_params: Any) -> dict[str, float]:
    """Score every detector on the run's model and log the figures and reliability diagram; returns the
    metrics ({} when the validation negatives are not on disk: `ocr data negatives` writes them)."""
    from cnn_ocr import plots
    from cnn_ocr.ood.report import reliability_figure

    version = family_params.outlier_exposure.version
    if not (version_dir(version, params.data) / META).is_file():
        log.warning("not-a-digit figures skipped: %s is missing; run `ocr data negatives`", version)
        set_tags({"ood_figures": f"skipped: {version} missing"})
        return {}
    result = score_detectors(model, params, splits, temperature, load_negatives(version, params.data)["val"])
    log_metrics(result.metrics)
    set_tags({"ood_detector": result.detector})  # the shipped one: `ood.detector`, or auto's choice
    log_dict({"detector": result.detector, "reliability": result.reliability}, "ood.json")
    fig = reliability_figure(result.reliability[result.detector], f"accepted test digits ({result.detector} detector)")
    log_figure(fig, "plots/reliability.png")
    plots.close(fig)
    return result.metrics
