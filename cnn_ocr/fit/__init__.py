"""Fitting a built model: one loop for the CNN families (`torch_loop`), one fit for the SVM (`svm`).

Both return a `FitResult`: the per-epoch (per-fit for the SVM) history and which epoch was kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

# Called after each epoch (once per fit for the SVM) with that epoch's metrics; may raise to stop training.
EpochCallback = Callable[[int, dict[str, float]], None]
# (epoch, batches done, batches in the epoch, running train loss) every few batches, for progress display.
StepCallback = Callable[[int, int, int, float], None]


@dataclass
class FitResult:
    """Per-epoch history and the outcome of early stopping."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    epochs_run: int = 0
    stopped_early: bool = False
    restored_best: bool = False
    head_epochs: int = 0  # of `epochs_run`, those of outlier exposure's head phase (`outlier_exposure.mode: head`)
    train_time_s: float = 0.0
