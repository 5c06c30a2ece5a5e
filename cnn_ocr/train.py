"""The one training path: data version -> model -> fit -> evaluation -> one tracked MLflow run.

`ocr train`, the DVC stages, the MLproject entry point and hyperparameter tuning all call `train_model`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from cnn_ocr import checkpoints, evaluate, families, plots
from cnn_ocr.config import Params, flatten
from cnn_ocr.data import Splits, load_training_data
from cnn_ocr.families import family_params, is_torch
from cnn_ocr.fit import EpochCallback, FitResult, StepCallback
from cnn_ocr.preprocess import to_model_input
from cnn_ocr.tracking.git import git_tags
from cnn_ocr.tracking.runs import current_run_id, tracked_run
from cnn_ocr.tracking.writing import (
    log_dataset,
    log_dict,
    log_figure,
    log_metrics,
    log_model,
    log_params,
    log_text,
    set_tags,
)

log = logging.getLogger(__name__)

EPOCH_METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "epoch_time_s",
                 "fit_time_s", "n_support_vectors", "score_temperature")


@dataclass
class TrainResult:
    """What a training run produced: its MLflow run id, final metrics and the trained model (on CPU)."""

    run_id: str
    family: str
    metrics: dict[str, float]
    model: object
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0


def _cap_train(splits: Splits, limit: int | None, seed: int) -> Splits:
    """Keep a seeded random subset of `limit` training images (all when None or larger)."""
    n = len(splits.train_y)
    if not limit or limit >= n:
        return splits
    idx = np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))
    return replace(splits, train_x=splits.train_x[idx], train_y=splits.train_y[idx])


def train_eval_indices(n_train: int, params: Params) -> np.ndarray:
    """The seeded training subset scored for train_accuracy / overfit_gap (`evaluation.train_eval_samples`)."""
    n_eval = min(params.models.evaluation.train_eval_samples, n_train)
    return np.sort(np.random.default_rng(params.seed).choice(n_train, n_eval, replace=False))


def _digest(x: np.ndarray, y: np.ndarray) -> str:
    h = hashlib.sha256()
    for arr in (x, y):
        h.update(np.ascontiguousarray(arr).data)
    return h.hexdigest()


def _log_inputs(params: Params, family: str, splits: Splits, device: str) -> None:
    flat = flatten(family_params(params, family))
    flat.update({f"evaluation.{k}": v for k, v in flatten(params.models.evaluation).items()})
    flat.update({"family": family, "seed": params.seed, "device": params.device, "device_used": device,
                 "dataset": splits.version.dataset, "data_version_used": splits.name,
                 "train_samples": len(splits.train_y)})
    if "precision" in flat:  # what `auto` came to on this machine
        from cnn_ocr.fit.torch_loop import resolve_precision

        flat["precision_used"] = resolve_precision(flat["precision"], device)
    log_params(flat)
    log_dict({"family": family, "params": params.model_dump(mode="json")}, "params.json")
    name = f"{splits.version.dataset}-{splits.name}"
    for context, x, y in (("training", splits.train_x, splits.train_y), ("validation", splits.val_x, splits.val_y),
                          ("testing", splits.test_x, splits.test_y)):
        log_dataset(x, y, f"{name}-{context}", str(splits.version.path), _digest(x, y), context)


def _epoch_logger(epoch_callback: EpochCallback | None) -> EpochCallback:
    def on_epoch(epoch: int, row: dict[str, float]) -> None:
        log_metrics({k: row[k] for k in EPOCH_METRICS if k in row}, step=epoch)
        if epoch_callback is not None:
            epoch_callback(epoch, row)

    return on_epoch


def load_teacher(family: str, params: Params, device: str) -> Any:
    """The `Ensemble` of `models.<family>.distill.teachers` on `device` (None without teachers): each entry a
    state-dict file (`.pt`) of the network this block builds, or the id of a finished CNN run of the tracking store.
    A missing file, an unknown run or weights of another shape is a one-line ConfigError."""
    teachers = family_params(params, family).distill.teachers
    if not teachers:
        return None
    import torch

    from cnn_ocr.config import ConfigError
    from cnn_ocr.models.ensemble import Ensemble
    from cnn_ocr.tracking.reading import load_model

    where = f"models.{family}.distill.teachers"
    members = []
    for entry in teachers:
        try:
            if entry.endswith(".pt"):
                model = families.get(family).build(family_params(params, family))
                model.load_state_dict(torch.load(entry, map_location="cpu", weights_only=True))
            else:
                model = load_model(entry)
        except Exception as exc:  # the file system, torch and the store raise several types
            first = (str(exc).splitlines() or [""])[0][:200]
            raise ConfigError(f"{where}: cannot load {entry!r} ({type(exc).__name__}: {first}); "
                              "give state-dict files of this block's network or ids of finished CNN runs") from None
        if not isinstance(model, torch.nn.Module):
            raise ConfigError(f"{where}: run {entry!r} holds no CNN; give ids of finished CNN runs")
        members.append(model)
    return Ensemble(members).to(device).eval()


def _fit_torch(family: str, params: Params, splits: Splits, device: str, on_epoch: EpochCallback,
               on_step: StepCallback | None, saver: Any = None, resume: dict | None = None,
               teacher: Any = None) -> tuple[Any, FitResult]:
    import torch

    from cnn_ocr.fit import torch_loop

    fp = family_params(params, family)

    def tensors(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(to_model_input(x)).to(device), torch.from_numpy(y.astype(np.int64)).to(device)

    from cnn_ocr.ood.run import training_negatives

    oe = training_negatives(params, fp)
    negatives_t = None
    if oe is not None:
        negatives_t = torch.from_numpy(to_model_input(oe[0])).to(device)
        log_params({"outlier_exposure.negatives_used": len(oe[0]), "outlier_exposure.feedback_negatives": oe[1]})
    with torch_loop.seeded(params.seed, device):
        model = families.get(family).build(fp).to(device)
        result = torch_loop.fit(model, tensors(splits.train_x, splits.train_y), tensors(splits.val_x, splits.val_y),
                                fp, seed=params.seed, eval_batch_size=params.models.evaluation.batch_size,
                                on_epoch=on_epoch, on_step=on_step, on_checkpoint=saver, resume=resume,
                                negatives=negatives_t, teacher=teacher)
    return model, result


def _fit_sklearn(family: str, params: Params, splits: Splits, train_idx: np.ndarray,
                 on_epoch: EpochCallback) -> tuple[Any, FitResult]:
    from cnn_ocr.fit import svm

    def flat(x: np.ndarray) -> np.ndarray:
        return to_model_input(x).reshape(len(x), -1)

    model = families.get(family).build(family_params(params, family))
    tx = flat(splits.train_x)
    result = svm.fit(model, (tx, splits.train_y), (flat(splits.val_x), splits.val_y),
                     (tx[train_idx], splits.train_y[train_idx]), on_epoch=on_epoch)
    return model, result


def _scores(model: Any, images: np.ndarray, params: Params, device: str) -> np.ndarray:
    return evaluate.class_scores(model, to_model_input(images), params.models.evaluation.batch_size, device)


def _val_train_metrics(model: Any, family: str, params: Params, splits: Splits, device: str,
                       train_idx: np.ndarray, fit: FitResult) -> dict[str, float]:
    """Validation and training-subset figures of the kept model, and the temperature calibrating its scores."""
    from cnn_ocr.calibration import fit_temperature, nll

    if not is_torch(family):
        # The SVM fit scored exactly these images already (scoring is its costly part); its scores are calibrated.
        row = fit.history[-1]
        return {k: row[k] for k in ("val_accuracy", "val_loss", "train_accuracy")} | {"temperature": 1.0}
    val_scores = _scores(model, splits.val_x, params, device)
    train_pred = _scores(model, splits.train_x[train_idx], params, device).argmax(1)
    return {
        "val_accuracy": evaluate.accuracy(val_scores.argmax(1), splits.val_y),
        "val_loss": nll(val_scores, splits.val_y),  # uncalibrated, comparable with the per-epoch losses
        "train_accuracy": evaluate.accuracy(train_pred, splits.train_y[train_idx]),
        "temperature": fit_temperature(val_scores, splits.val_y),
    }


def final_metrics(model: Any, family: str, params: Params, splits: Splits, device: str,
                   train_idx: np.ndarray, fit: FitResult) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """Score the kept model on test / validation / a training subset; returns metrics, test preds, confusion."""
    from cnn_ocr.calibration import nll

    test_scores = _scores(model, splits.test_x, params, device)
    test_pred = test_scores.argmax(1)
    cm = evaluate.confusion_matrix(splits.test_y, test_pred)
    rows = evaluate.per_digit_metrics(cm)
    m = {
        "test_accuracy": evaluate.accuracy(test_pred, splits.test_y),
        **_val_train_metrics(model, family, params, splits, device, train_idx, fit),
        "test_loss": nll(test_scores, splits.test_y),
        "macro_f1": float(np.mean([r["f1"] for r in rows])),
        "min_digit_recall": float(min(r["recall"] for r in rows)),
        "training_time_s": fit.train_time_s,
        "best_epoch": fit.best_epoch,
        "epochs_run": fit.epochs_run,
        "head_epochs": fit.head_epochs,  # of epochs_run, outlier exposure's head phase (mode head)
    }
    m["overfit_gap"] = 100.0 * (m["train_accuracy"] - m["test_accuracy"])
    if is_torch(family):
        model.cpu()
    x_one = to_model_input(splits.test_x[:1])
    m["inference_ms_per_image"] = evaluate.latency_ms(model, x_one, params.models.evaluation.latency_runs)
    m["n_parameters"] = evaluate.n_parameters(model)
    m["model_size_bytes"] = evaluate.model_size_bytes(model)
    return m, test_pred, cm


def log_outputs(model: Any, family: str, params: Params, splits: Splits, fit: FitResult,
                 metrics: dict[str, float], test_pred: np.ndarray, cm: np.ndarray) -> None:
    log_metrics(metrics, step=fit.epochs_run + 1)
    rows = evaluate.per_digit_metrics(cm)
    log_text(evaluate.per_digit_csv(rows), "per_digit_metrics.csv")
    log_dict({"confusion_matrix": cm.tolist(), "per_digit": rows}, "evaluation.json")
    log_dict({"history": fit.history, "best_epoch": fit.best_epoch}, "history.json")
    if family in families.TORCH_FAMILIES:  # not-a-digit detectors side by side (cnn_ocr/ood/); not the ensemble
        from cnn_ocr.ood.run import log_detectors

        log_detectors(model, params, splits, metrics["temperature"], family_params(params, family))
    title = f"{family} on {splits.name}"
    figures = [(lambda: plots.confusion_matrix_figure(cm, f"{title}: test confusion matrix"), "plots/confusion_matrix.png"),
               (lambda: plots.misclassified_grid(splits.test_x, splits.test_y, test_pred,
                                                 params.models.evaluation.misclassified_shown), "plots/misclassified.png")]
    if fit.history:  # an ensemble has no epochs of its own
        figures.insert(0, (lambda: plots.learning_curve(fit.history, fit.best_epoch, title), "plots/learning_curve.png"))
    for draw, path in figures:
        fig = draw()
        log_figure(fig, path)
        plots.close(fig)
    example = to_model_input(splits.test_x[:2])
    if is_torch(family):
        log_model(model.eval(), True, example, evaluate.class_scores(model, example))
    else:
        flat = example.reshape(len(example), -1)
        log_model(model, False, flat, model.predict_proba(flat))


def _summary(family: str, splits: Splits, device: str, fit: FitResult, m: dict[str, float]) -> str:
    stop = f", stopped early, best epoch {fit.best_epoch} restored" if fit.restored_best else ""
    return (f"{family} trained on {splits.version.dataset} {splits.name} ({len(splits.train_y)} training images, "
            f"{device}): test accuracy {m['test_accuracy']:.2%}, validation {m['val_accuracy']:.2%}, "
            f"train {m['train_accuracy']:.2%} (gap {m['overfit_gap']:.2f} points); {fit.epochs_run} epoch(s), "
            f"best epoch {fit.best_epoch}{stop}; trained in {m['training_time_s']:.0f} s; "
            f"{m['inference_ms_per_image']:.2f} ms per image at batch 1 on CPU.")


def train_model(
    family: str,
    params: Params,
    *,
    splits: Splits | None = None,
    experiment: str | None = None,
    run_name: str | None = None,
    tags: dict | None = None,
    nested: bool = False,
    epoch_callback: EpochCallback | None = None,
    step_callback: StepCallback | None = None,
    resume: dict | None = None,
) -> TrainResult:
    """Train one model of `family` with `params` inside one MLflow run, evaluate it, log everything.

    Loads `params.models.<family>.data_version` unless `splits` is given. The run ends FINISHED, FAILED
    (exception, tag `error`) or KILLED (Ctrl-C, or an exception named TrialPruned raised by
    `epoch_callback`: tag `pruned=true`). `step_callback` receives in-epoch progress (CNNs only).
    CNN runs save a checkpoint after every epoch (`checkpoints.py`) and log the last one when they end
    early; `resume` (a loaded checkpoint) continues from it.
    """
    fp = family_params(params, family)
    teacher = load_teacher(family, params, "cpu") if is_torch(family) else None  # a bad entry fails before anything
    splits = _cap_train(splits if splits is not None else load_training_data(fp.data_version, params.data),
                        fp.max_train_samples, params.seed)
    device = "cpu"
    if is_torch(family):
        from cnn_ocr.fit import torch_loop

        device = torch_loop.resolve_device(params.device)
        if device == "cpu":
            torch_loop.use_all_cores()
        if teacher is not None:
            teacher = teacher.to(device)
    train_idx = train_eval_indices(len(splits.train_y), params)
    run_tags = {**splits.version.as_tags(), **git_tags(), "family": family, "device": device, **(tags or {})}
    run_tags = {k: str(v) for k, v in run_tags.items()}
    with tracked_run(experiment or families.get(family).experiment, run_name or f"{family}-{splits.name}",
                     run_tags, nested) as run:
        _log_inputs(params, family, splits, device)
        on_epoch = _epoch_logger(epoch_callback)
        if is_torch(family):
            saver = checkpoints.Saver(run.info.run_id)
            for row in (resume or {}).get("history", []):
                log_metrics({k: row[k] for k in EPOCH_METRICS if k in row}, step=int(row["epoch"]))
            with saver.logged_on_failure():
                model, fit = _fit_torch(family, params, splits, device, on_epoch, step_callback, saver, resume,
                                        teacher)
        else:
            model, fit = _fit_sklearn(family, params, splits, train_idx, on_epoch)
        metrics, test_pred, cm = final_metrics(model, family, params, splits, device, train_idx, fit)
        log_outputs(model, family, params, splits, fit, metrics, test_pred, cm)
        set_tags({"best_epoch": fit.best_epoch, "stopped_early": str(fit.stopped_early).lower(),
                  "restored_best_weights": str(fit.restored_best).lower(),
                  "mlflow.note.content": _summary(family, splits, device, fit, metrics)})
        run_id = current_run_id() or run.info.run_id  # differs after a failover to the offline store
        log.info("run %s: %s", run_id, json.dumps({k: round(v, 5) for k, v in metrics.items()}))
    return TrainResult(run_id, family, metrics, model, fit.history, fit.best_epoch)
