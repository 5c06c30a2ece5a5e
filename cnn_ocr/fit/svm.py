"""Fitting the SVM family: the pipeline on the training split, the temperature on the validation split."""

from __future__ import annotations

import logging
import time

import numpy as np

from cnn_ocr.calibration import nll
from cnn_ocr.fit import EpochCallback, FitResult
from cnn_ocr.models.svm import CalibratedSVM

log = logging.getLogger(__name__)


def _loss_acc(model: CalibratedSVM, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    logp = model.predict_log_proba(x)
    return nll(logp, y), float(np.mean(model.classes_[logp.argmax(1)] == y))


def fit(
    model: CalibratedSVM,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    train_eval: tuple[np.ndarray, np.ndarray],
    *,
    on_epoch: EpochCallback | None = None,
) -> FitResult:
    """Fit on flattened (N, 784) `train`, calibrate on `val`; one history row scored on `train_eval` and `val`.

    `training_time_s` covers the fit and the calibration (the scoring for the history row is not counted).
    """
    t0 = time.perf_counter()
    model.fit(*train)
    fit_s = time.perf_counter() - t0
    temperature = model.calibrate(*val)
    train_time = time.perf_counter() - t0
    n_sv = int(model.pipeline[-1].support_vectors_.shape[0])
    log.info("SVM fitted on %d images in %.1f s (%d support vectors), temperature %.3f",
             len(train[0]), fit_s, n_sv, temperature)
    tr_loss, tr_acc = _loss_acc(model, *train_eval)
    va_loss, va_acc = _loss_acc(model, *val)
    row = {"epoch": 1, "train_loss": tr_loss, "train_accuracy": tr_acc, "val_loss": va_loss, "val_accuracy": va_acc,
           "fit_time_s": fit_s, "n_support_vectors": n_sv, "score_temperature": temperature}
    result = FitResult(history=[row], best_epoch=1, epochs_run=1, train_time_s=train_time)
    if on_epoch is not None:
        on_epoch(1, dict(row))
    return result
