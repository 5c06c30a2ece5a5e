"""Scoring a trained model: class scores, accuracy, per-digit precision/recall/F1, latency, size.

Works for both kinds of model: a torch module (logits from normalized (N, 1, 28, 28) input) and the SVM
estimator (calibrated log-probabilities from the same input flattened to (N, 784)). Softmax of either
score gives the model's probabilities.
"""

from __future__ import annotations

import io
import pickle
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

NUM_CLASSES = 10


def _is_torch(model: Any) -> bool:
    return hasattr(model, "state_dict") and hasattr(model, "parameters")


def class_scores(model: Any, x: np.ndarray, batch_size: int = 2048, device: str = "cpu") -> np.ndarray:
    """Scores (N, 10) for normalized input x (N, 1, 28, 28): logits (CNN) or log-probabilities (SVM)."""
    if not _is_torch(model):
        return np.asarray(model.predict_log_proba(x.reshape(len(x), -1)), dtype=np.float32)
    import torch

    model.eval()
    chunks = []
    with torch.inference_mode():
        xt = torch.from_numpy(np.ascontiguousarray(x))
        for start in range(0, len(xt), batch_size):
            chunks.append(model(xt[start : start + batch_size].to(device, non_blocking=True)))
        out = torch.cat(chunks) if chunks else torch.empty(0, NUM_CLASSES)
    return out.float().cpu().numpy()


def accuracy(pred: np.ndarray, y: np.ndarray) -> float:
    """Fraction of predictions equal to the labels."""
    return float(np.mean(np.asarray(pred) == np.asarray(y))) if len(y) else float("nan")


def confusion_matrix(y: np.ndarray, pred: np.ndarray, n: int = NUM_CLASSES) -> np.ndarray:
    """Counts (n, n): row = true class, column = predicted class."""
    cm = np.zeros((n, n), dtype=np.int64)
    np.add.at(cm, (np.asarray(y, dtype=np.int64), np.asarray(pred, dtype=np.int64)), 1)
    return cm


def per_digit_metrics(cm: np.ndarray) -> list[dict[str, float]]:
    """Precision, recall, F1 and support per class from a confusion matrix (0 where undefined)."""
    rows = []
    for d in range(cm.shape[0]):
        tp = float(cm[d, d])
        predicted, actual = float(cm[:, d].sum()), float(cm[d, :].sum())
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append({"digit": d, "precision": precision, "recall": recall, "f1": f1, "support": int(actual)})
    return rows


def per_digit_csv(rows: list[dict[str, float]]) -> str:
    """The per-digit table as CSV text."""
    lines = ["digit,precision,recall,f1,support"]
    lines += [f"{r['digit']},{r['precision']:.4f},{r['recall']:.4f},{r['f1']:.4f},{r['support']}" for r in rows]
    return "\n".join(lines) + "\n"


def latency_ms(model: Any, x_one: np.ndarray, runs: int = 200, warmup: int = 10) -> float:
    """Median wall time in ms of one batch-1 prediction on CPU (x_one: (1, 1, 28, 28) normalized)."""
    if _is_torch(model):
        import torch

        model = model.cpu().eval()
        xt = torch.from_numpy(np.ascontiguousarray(x_one))

        def call() -> None:
            with torch.inference_mode():
                model(xt)
    else:
        flat = x_one.reshape(1, -1)

        def call() -> None:
            model.predict_proba(flat)

    # One intra-op thread, as the service runs each request: batch-1 work is too small to share, and a
    # multi-threaded measurement swings by 10-100x whenever another process holds a core.
    with _single_thread():
        return statistics.median(time_calls(call, runs, warmup))


def time_calls(fn: Callable[[], Any], calls: int, warmup: int = 5) -> list[float]:
    """Wall time in ms of each of `calls` calls of `fn` after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000.0)
    return out


@contextmanager
def _single_thread() -> Iterator[None]:
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(before)


def n_parameters(model: Any) -> int:
    """Trainable parameters (CNN) or fitted numeric coefficients (SVM pipeline: support vectors etc.)."""
    if _is_torch(model):
        return int(sum(p.numel() for p in model.parameters()))
    steps = [s for _, s in model.pipeline.steps] if hasattr(model, "pipeline") else [model]
    total = 0
    for step in steps:
        for name, value in vars(step).items():
            if name.endswith("_") and not name.startswith("_") and isinstance(value, np.ndarray):
                if np.issubdtype(value.dtype, np.floating):
                    total += value.size
    return int(total)


def model_size_bytes(model: Any) -> int:
    """Serialized size: the state dict (CNN) or the pickled estimator (SVM)."""
    if _is_torch(model):
        import torch

        buf = io.BytesIO()
        torch.save(model.state_dict(), buf)
        return buf.getbuffer().nbytes
    return len(pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL))
