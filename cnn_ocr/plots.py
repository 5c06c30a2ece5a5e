"""Training figures logged with every run: learning curve, confusion matrix, misclassified digits.

Uses matplotlib's Agg backend (no display); each function returns a Figure the caller saves and closes.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def learning_curve(history: list[dict[str, float]], best_epoch: int | None = None, title: str = "") -> Any:
    """Loss and accuracy per epoch for train and validation, the best epoch marked."""
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    marker = "o" if len(epochs) < 3 else None
    for ax, key, label in ((ax_loss, "loss", "loss"), (ax_acc, "accuracy", "accuracy")):
        ax.plot(epochs, [h[f"train_{key}"] for h in history], marker=marker, label=f"train {label}")
        ax.plot(epochs, [h[f"val_{key}"] for h in history], marker=marker, label=f"validation {label}")
        if best_epoch:
            ax.axvline(best_epoch, color="grey", linestyle="--", linewidth=1, label=f"best epoch ({best_epoch})")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title or "learning curve")
    return fig


def confusion_matrix_figure(cm: np.ndarray, title: str = "") -> Any:
    """Heat map of a confusion matrix with the counts written in each cell."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 5.5), constrained_layout=True)
    im = ax.imshow(np.log1p(cm), cmap="Blues")
    n = cm.shape[0]
    threshold = np.log1p(cm).max() / 2 if cm.size else 0
    for i in range(n):
        for j in range(n):
            color = "white" if np.log1p(cm[i, j]) > threshold else "black"
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7, color=color)
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xlabel("predicted digit")
    ax.set_ylabel("true digit")
    ax.set_title(title or "confusion matrix (test)")
    fig.colorbar(im, ax=ax, label="log(1 + count)")
    return fig


def misclassified_grid(images: np.ndarray, true: np.ndarray, pred: np.ndarray, limit: int = 36) -> Any:
    """Up to `limit` misclassified test digits (uint8 28x28) titled with true and predicted labels."""
    plt = _pyplot()
    wrong = np.flatnonzero(np.asarray(true) != np.asarray(pred))[:limit]
    cols = max(1, min(9, len(wrong)))
    rows = max(1, int(np.ceil(len(wrong) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.5 * rows), squeeze=False, constrained_layout=True)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, i in zip(axes.ravel(), wrong, strict=False):
        ax.imshow(images[i], cmap="gray", vmin=0, vmax=255)
        ax.set_title(f"true {true[i]} / pred {pred[i]}", fontsize=7)
    if not len(wrong):
        axes[0, 0].text(0.5, 0.5, "no misclassified digits", ha="center", va="center")
    fig.suptitle(f"misclassified test digits ({len(wrong)} shown)", fontsize=9)
    return fig


def close(fig: Any) -> None:
    """Release a figure's memory."""
    _pyplot().close(fig)
