"""Hyperparameter tuning with Optuna: the only module that imports optuna.

Each trial proposes values from `params.tune.space.<family>`, applies `params.tune.fixed.<family>` (short,
small trials) and calls the one training function, `train_model`, as a nested MLflow run of this worker's
parent run in experiment `hyperparameter-tuning`. Validation accuracy is the objective and is reported after
every epoch to a median pruner. The study lives in an Optuna storage URL (default: the sqlite file
`optuna.db` at the project root), so several `ocr tune` processes, on one machine or many (e.g. with a
PostgreSQL URL), cooperate on one study: trial numbers come from the storage, and each trial's sampling is
seeded by `seed + trial number`, so workers never draw the same proposals.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from cnn_ocr.config import ConfigError, Params, SearchDim
from cnn_ocr.data.atomic import atomic_write_bytes
from cnn_ocr.tracking.git import git_tags
from cnn_ocr.tracking.runs import tracked_run
from cnn_ocr.tracking.store import TUNING_EXPERIMENT, ensure_experiment
from cnn_ocr.tracking.writing import log_figure, log_metrics, log_params, set_tags

log = logging.getLogger(__name__)

OBJECTIVE = "val_accuracy"
STORAGE_FILE = "optuna.db"


class TuningError(RuntimeError):
    """Tuning cannot start or produced nothing usable; the message says why."""


@dataclass(frozen=True)
class TuneResult:
    """What one `ocr tune` worker did, and the study-wide best at its end."""

    study: str
    storage: str
    parent_run_id: str
    best_trial: int
    best_value: float
    best_params: dict[str, Any]
    counts: dict[str, int]
    final_run_id: str | None
    final_metrics: dict[str, float]
    best_params_file: Path


def default_storage() -> str:
    """The local study store: a sqlite file at the project root."""
    return f"sqlite:///{Path.cwd().resolve() / STORAGE_FILE}"


def redact(url: str) -> str:
    """A storage URL without its password (safe to log and tag)."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in creds:
        return url
    return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"


def default_study_name(family: str) -> str:
    """A fresh study per run unless workers name a shared one."""
    return f"{family}-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}"


def with_family_values(params: Params, family: str, values: dict[str, Any]) -> Params:
    """`params` with `models.<family>` updated by `values`, validated again."""
    raw = params.model_dump(mode="python")
    raw["models"][family].update(values)
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(f"models.{family} with {values}: {'.'.join(map(str, err['loc']))}: {err['msg']}") from None


def suggest(trial: Any, space: dict[str, SearchDim]) -> dict[str, Any]:
    """Draw one value per search dimension."""
    out: dict[str, Any] = {}
    for key, dim in space.items():
        if dim.choices is not None:
            out[key] = trial.suggest_categorical(key, dim.choices)
        elif dim.integer:
            out[key] = trial.suggest_int(key, int(dim.low), int(dim.high), step=int(dim.step or 1), log=dim.log)
        else:
            out[key] = trial.suggest_float(key, dim.low, dim.high, step=dim.step, log=dim.log)
    return out


def _sampler(seed: int, startup_trials: int) -> Any:
    from optuna.samplers import BaseSampler, TPESampler

    class TrialSeededTPE(BaseSampler):
        """TPE whose randomness for trial n is seeded with `seed + n`: reproducible, and distinct per worker."""

        def __init__(self) -> None:
            self._cache: tuple[int, TPESampler] | None = None

        def _tpe(self, trial: Any) -> TPESampler:
            if self._cache is None or self._cache[0] != trial.number:
                tpe = TPESampler(seed=seed + trial.number, n_startup_trials=startup_trials, constant_liar=True)
                self._cache = (trial.number, tpe)
            return self._cache[1]

        def infer_relative_search_space(self, study: Any, trial: Any) -> dict:
            return self._tpe(trial).infer_relative_search_space(study, trial)

        def sample_relative(self, study: Any, trial: Any, search_space: dict) -> dict:
            return self._tpe(trial).sample_relative(study, trial, search_space)

        def sample_independent(self, study: Any, trial: Any, name: str, dist: Any) -> Any:
            return self._tpe(trial).sample_independent(study, trial, name, dist)

        def before_trial(self, study: Any, trial: Any) -> None:
            self._tpe(trial).before_trial(study, trial)

        def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
            self._tpe(trial).after_trial(study, trial, state, values)

    return TrialSeededTPE()


def open_study(name: str, storage: str, seed: int, startup_trials: int, warmup_epochs: int) -> Any:
    """Create or join study `name` (maximising validation accuracy); tolerant of workers starting together."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    kwargs = {"engine_kwargs": {"connect_args": {"timeout": 60}}} if storage.startswith("sqlite") else {}
    # epochs are 1-based: trials always get `warmup_epochs` epochs before they can be pruned
    pruner = optuna.pruners.MedianPruner(n_startup_trials=startup_trials, n_warmup_steps=warmup_epochs + 1)
    for attempt in range(8):
        try:
            store = optuna.storages.RDBStorage(storage, **kwargs)
            return optuna.create_study(study_name=name, storage=store, sampler=_sampler(seed, startup_trials),
                                       pruner=pruner, direction="maximize", load_if_exists=True)
        except Exception as exc:  # concurrent creation of the same tables / study: retry
            if attempt == 7:
                raise TuningError(f"cannot open study {name!r} in {redact(storage)}: {exc}") from None
            log.debug("retrying study creation after %s", exc)
            time.sleep(0.5 + attempt)
    raise AssertionError("unreachable")


def _ensure_tracking_store(attempts: int = 8) -> None:
    """Create the tuning experiment, tolerating workers that initialise a fresh tracking store at once."""
    for attempt in range(attempts):
        try:
            ensure_experiment(TUNING_EXPERIMENT)
            return
        except Exception as exc:  # e.g. "table ... already exists" while another worker creates the store
            if attempt == attempts - 1:
                raise
            log.debug("retrying tracking store set-up after %s", exc)
            time.sleep(0.5 + attempt)


def _objective(family: str, params: Params, study_name: str, storage: str) -> Any:
    import optuna

    from cnn_ocr.train import train_model

    def objective(trial: optuna.Trial) -> float:
        values = suggest(trial, params.tune.space[family])
        trial_params = with_family_values(params, family, {**params.tune.fixed.get(family, {}), **values})

        def report(epoch: int, row: dict[str, float]) -> None:
            trial.report(float(row[OBJECTIVE]), epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {epoch} ({OBJECTIVE} {row[OBJECTIVE]:.4f})")

        tags = {"tune.role": "trial", "optuna.study": study_name, "optuna.trial": str(trial.number),
                "optuna.storage": redact(storage), "tune.values": repr(values)}
        result = train_model(family, trial_params, experiment=TUNING_EXPERIMENT, nested=True,
                             run_name=f"trial-{trial.number}", tags=tags, epoch_callback=report)
        trial.set_user_attr("mlflow_run_id", result.run_id)
        trial.set_user_attr("test_accuracy", result.metrics["test_accuracy"])
        return float(result.metrics[OBJECTIVE])

    return objective


def _counts(study: Any) -> dict[str, int]:
    from optuna.trial import TrialState

    states = [t.state for t in study.get_trials(deepcopy=False)]
    return {s.name.lower(): states.count(s) for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL,
                                                       TrialState.RUNNING)}


def _log_plots(study: Any) -> None:
    import optuna.visualization.matplotlib as ovm

    from cnn_ocr import plots

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the matplotlib backend is marked experimental
        for fn, path in ((ovm.plot_optimization_history, "plots/optimization_history.png"),
                         (ovm.plot_parallel_coordinate, "plots/parallel_coordinate.png")):
            try:
                fig = fn(study).figure
            except (ValueError, RuntimeError) as exc:  # e.g. too few completed trials to draw
                log.warning("skipping %s: %s", path, exc)
                continue
            fig.set_size_inches(9, 5)
            fig.tight_layout()
            log_figure(fig, path)
            plots.close(fig)


def write_best_params(path: Path, family: str, summary: dict[str, Any], best: dict[str, Any]) -> Path:
    """The reviewable result: best values as a params.yaml fragment and as `--set` overrides."""
    doc = {**summary, "params": {"models": {family: best}},
           "set": [f"models.{family}.{k}={v}" for k, v in best.items()]}
    head = (f"# Best hyperparameters for {family} from `ocr tune`. Review, then merge `params` into params.yaml\n"
            f"# (or try them: ocr train --model {family} " + " ".join(f"--set {s}" for s in doc["set"]) + ").\n")
    atomic_write_bytes(Path(path), (head + yaml.safe_dump(doc, sort_keys=False)).encode())
    return Path(path)


def _final(family: str, params: Params, best: dict[str, Any], study: str) -> tuple[str, dict[str, float]]:
    from cnn_ocr.train import train_model

    values = {**params.tune.final_fixed.get(family, {}), **best}
    res = train_model(family, with_family_values(params, family, values), experiment=TUNING_EXPERIMENT,
                      nested=True, run_name=f"{family}-tuned",
                      tags={"tune.role": "final", "optuna.study": study, "tune.values": repr(best)})
    return res.run_id, res.metrics


def run_tuning(family: str, params: Params, *, trials: int, timeout_s: float | None, storage: str | None,
               study_name: str | None, final: bool) -> TuneResult:
    """Run this worker's trials on the (possibly shared) study, summarise the study, optionally train the best."""
    if family not in params.tune.space or not params.tune.space[family]:
        raise TuningError(f"tune.space has no search space for {family}; add one to params.yaml")
    storage = storage or params.tune.storage or default_storage()
    name = study_name or default_study_name(family)
    study = open_study(name, storage, params.seed, params.tune.startup_trials, params.tune.warmup_epochs)
    _ensure_tracking_store()
    worker = f"{socket.gethostname()}-{os.getpid()}"
    tags = {"tune.role": "parent", "optuna.study": name, "optuna.storage": redact(storage), "tune.family": family,
            "tune.worker": worker, **git_tags()}
    with tracked_run(TUNING_EXPERIMENT, f"{name}-{worker}", tags) as parent:
        log_params({"family": family, "trials": trials, "timeout_s": timeout_s, "seed": params.seed,
                    "startup_trials": params.tune.startup_trials, "warmup_epochs": params.tune.warmup_epochs,
                    **{f"fixed.{k}": v for k, v in params.tune.fixed.get(family, {}).items()},
                    **{f"space.{k}": d.model_dump(exclude_none=True) for k, d in params.tune.space[family].items()}})
        if trials > 0:
            study.optimize(_objective(family, params, name, storage), n_trials=trials, timeout=timeout_s,
                           catch=(Exception,), gc_after_trial=True)
        counts = _counts(study)
        if counts["complete"] == 0:
            raise TuningError(f"study {name!r} has no completed trial ({counts}); nothing to report")
        best = study.best_trial
        log_params({f"best.{k}": v for k, v in best.params.items()})
        log_metrics({f"best_{OBJECTIVE}": best.value, "best_trial": best.number,
                     **{f"trials_{k}": v for k, v in counts.items()}})
        set_tags({"best_trial": best.number, "best_params": repr(best.params)})
        _log_plots(study)
        final_id, final_metrics = _final(family, params, best.params, name) if final else (None, {})
        if final_id:
            log_metrics({f"final_{k}": final_metrics[k] for k in ("test_accuracy", "val_accuracy")})
            set_tags({"final_run_id": final_id})
        summary = {"family": family, "study": name, "storage": redact(storage), "objective": f"{OBJECTIVE} (max)",
                   "best_trial": best.number, "best_value": float(best.value), "trials": counts,
                   "parent_run_id": parent.info.run_id, "final_run_id": final_id,
                   "final_test_accuracy": final_metrics.get("test_accuracy")}
        out = write_best_params(params.tune.best_params_file, family, summary, dict(best.params))
    return TuneResult(name, redact(storage), parent.info.run_id, best.number, float(best.value), dict(best.params),
                      counts, final_id, final_metrics, out)
