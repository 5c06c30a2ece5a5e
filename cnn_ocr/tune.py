"""Hyperparameter tuning with Optuna: the only module that imports optuna.

Each trial proposes values from `params.tune.space.<family>`, applies `params.tune.fixed.<family>` (the
trials' fidelity: a short schedule on the full data) and calls the one training function, `train_model`, as a
nested MLflow run of this worker's parent run in experiment `hyperparameter-tuning`. Validation accuracy is
the objective and is reported after every epoch to a Hyperband pruner (epochs are the resource) or a median
pruner. Trial 0 of a new study is the family's default params, and the final candidate (best params at full
settings) is compared on validation with the default run: the result is never below the defaults. The study
lives in an Optuna storage URL (default: the sqlite file
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

from cnn_ocr import families
from cnn_ocr.atomic_files import atomic_write_bytes
from cnn_ocr.config import ConfigError, Params, SearchDim, TuneParams
from cnn_ocr.database import sqlalchemy_url
from cnn_ocr.families import FAMILIES
from cnn_ocr.project import project_root
from cnn_ocr.tracking.git import git_tags
from cnn_ocr.tracking.reading import search_runs
from cnn_ocr.tracking.runs import tracked_run
from cnn_ocr.tracking.store import TUNING_EXPERIMENT, ensure_experiment
from cnn_ocr.tracking.writing import log_figure, log_metrics, log_params, set_tags
from cnn_ocr.tuning_rules import (
    DEFAULTS,
    Outcome,
    default_values,
    defaults_won,
    fidelity,
    find_default_run,
    judge,
    outside_space,
    trial_epochs,
    trial_gain_pp,
)

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
    versus_defaults: Outcome | None = None


def default_storage() -> str:
    """The local study store: a sqlite file at the project root."""
    return f"sqlite:///{project_root() / STORAGE_FILE}"


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


def _sampler(seed: int, startup_trials: int, first: dict[str, Any] | None = None) -> Any:
    from optuna.samplers import BaseSampler, TPESampler

    class TrialSeededTPE(BaseSampler):
        """TPE whose randomness for trial n is seeded with `seed + n`: reproducible, and distinct per worker.

        With `first`, trial 0 of the study (one per study, whichever worker gets it) takes exactly those values.
        """

        def __init__(self) -> None:
            self._cache: tuple[int, TPESampler] | None = None

        def _tpe(self, trial: Any) -> TPESampler:
            if self._cache is None or self._cache[0] != trial.number:
                tpe = TPESampler(seed=seed + trial.number, n_startup_trials=startup_trials, constant_liar=True)
                self._cache = (trial.number, tpe)
            return self._cache[1]

        def infer_relative_search_space(self, study: Any, trial: Any) -> dict:
            if first is not None and trial.number == 0:
                return {}
            return self._tpe(trial).infer_relative_search_space(study, trial)

        def sample_relative(self, study: Any, trial: Any, search_space: dict) -> dict:
            if first is not None and trial.number == 0:
                return {}
            return self._tpe(trial).sample_relative(study, trial, search_space)

        def sample_independent(self, study: Any, trial: Any, name: str, dist: Any) -> Any:
            if first is not None and trial.number == 0 and name in first:
                return first[name]
            return self._tpe(trial).sample_independent(study, trial, name, dist)

        def before_trial(self, study: Any, trial: Any) -> None:
            self._tpe(trial).before_trial(study, trial)

        def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
            self._tpe(trial).after_trial(study, trial, state, values)

    return TrialSeededTPE()


def make_pruner(tune: TuneParams, max_epochs: int) -> Any:
    """Hyperband over epochs (1 .. the trials' epochs) or the median pruner, as `tune.pruner` says."""
    import optuna

    if tune.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=min(tune.min_epochs, max_epochs), max_resource=max_epochs,
                                              reduction_factor=tune.reduction_factor)
    # epochs are 1-based: trials always get `warmup_epochs` epochs before they can be pruned
    return optuna.pruners.MedianPruner(n_startup_trials=tune.startup_trials, n_warmup_steps=tune.warmup_epochs + 1)


def open_study(name: str, storage: str, seed: int, tune: TuneParams, max_epochs: int,
               first: dict[str, Any] | None = None) -> Any:
    """Create or join study `name` (maximising validation accuracy); tolerant of workers starting together.

    `first`: the values of trial 0 (the defaults), whichever worker runs it.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    kwargs = {"engine_kwargs": {"connect_args": {"timeout": 60}}} if storage.startswith("sqlite") else {}
    for attempt in range(8):
        try:
            store = optuna.storages.RDBStorage(sqlalchemy_url(storage), **kwargs)  # postgresql:// -> psycopg 3
            return optuna.create_study(study_name=name, storage=store, sampler=_sampler(seed, tune.startup_trials, first),
                                       pruner=make_pruner(tune, max_epochs), direction="maximize", load_if_exists=True)
        except Exception as exc:  # concurrent creation of the same tables / study: retry
            if attempt == 7:
                raise TuningError(f"cannot open study {name!r} in {redact(storage)}: {exc}") from None
            log.debug("retrying study creation after %s", exc)
            time.sleep(0.5 + attempt)
    raise AssertionError("unreachable")


def checked_defaults(params: Params, family: str) -> dict[str, Any]:
    """The defaults trial 0 runs; `TuningError` if one lies outside the search space (it could not be compared)."""
    values = default_values(params, family)
    outside = outside_space(values, params.tune.space[family])
    if outside:
        raise TuningError(f"tune.space.{family} must contain the defaults (trial 0): {', '.join(outside)}; "
                          "widen the space or set tune.enqueue_defaults=false")
    return values


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
        last = trial_epochs(params, family)

        def report(epoch: int, row: dict[str, float]) -> None:
            trial.report(float(row[OBJECTIVE]), epoch)
            if epoch < last and trial.should_prune():  # after the last epoch there is nothing left to save
                raise optuna.TrialPruned(f"pruned after epoch {epoch} ({OBJECTIVE} {row[OBJECTIVE]:.4f})")

        tags = {"tune.role": "trial", "optuna.study": study_name, "optuna.trial": str(trial.number),
                "optuna.storage": redact(storage), "tune.values": repr(values)}
        if trial.number == 0 and params.tune.enqueue_defaults:
            trial.set_user_attr("defaults", True)
            tags["tune.defaults"] = "true"
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
            f"# (or try them: ocr train --model {family} " + " ".join(f"--set {s}" for s in doc["set"]) + ").\n"
            if (summary.get("versus_defaults") or {}).get("outcome") != DEFAULTS else
            f"# `ocr tune` kept the defaults of {family}: the tuned params did not beat them on validation accuracy\n"
            f"# (at full settings, or by more than tune.min_trial_gain at trial fidelity).\n")
    atomic_write_bytes(Path(path), (head + yaml.safe_dump(doc, sort_keys=False)).encode())
    return Path(path)


def _final(family: str, params: Params, best: dict[str, Any], study: str) -> tuple[str, dict[str, float]]:
    from cnn_ocr.train import train_model

    values = {**params.tune.final_fixed.get(family, {}), **best}
    res = train_model(family, with_family_values(params, family, values), experiment=TUNING_EXPERIMENT,
                      nested=True, run_name=f"{family}-tuned",
                      tags={"tune.role": "final", "optuna.study": study, "tune.values": repr(best)})
    return res.run_id, res.metrics


def _parent_params(family: str, params: Params, trials: int, timeout_s: float | None) -> dict[str, Any]:
    tune = params.tune
    return {"family": family, "trials": trials, "timeout_s": timeout_s, "seed": params.seed,
            "startup_trials": tune.startup_trials, "warmup_epochs": tune.warmup_epochs, "pruner": tune.pruner,
            "enqueue_defaults": tune.enqueue_defaults, "min_trial_gain": tune.min_trial_gain,
            **{f"fidelity.{k}": v for k, v in fidelity(params, family).items()},
            **{f"fixed.{k}": v for k, v in tune.fixed.get(family, {}).items()},
            **{f"space.{k}": d.model_dump(exclude_none=True) for k, d in tune.space[family].items()}}


def _defaults_value(study: Any) -> float | None:
    """Trial 0's validation accuracy when it ran the defaults and completed, else None."""
    import optuna

    first = next((t for t in study.trials if t.user_attrs.get("defaults")), None)
    return first.value if first is not None and first.state == optuna.trial.TrialState.COMPLETE else None


def _versus_defaults(family: str, params: Params, best: Any, study: Any) -> tuple[str | None, dict, Outcome]:
    """Train the best params at full settings unless the defaults won and have a run; judge against that run."""
    default = find_default_run(family, params, search_runs([families.get(family).experiment]))
    gain = trial_gain_pp(best.value, _defaults_value(study))
    won = defaults_won(bool(best.user_attrs.get("defaults")) or best.params == default_values(params, family), gain,
                       params.tune.min_trial_gain)
    if gain is not None:
        log_metrics({"trial_gain_pp": gain})
        log.info("best trial %+.2f points over trial 0 (the defaults) at trial fidelity; min_trial_gain %.2f: %s",
                 gain, params.tune.min_trial_gain, "the defaults won" if won else "the best params go on")
    if won and default is not None:
        return None, {}, judge(default, None, True)
    final_id, final_metrics = _final(family, params, best.params, study.study_name)
    return final_id, final_metrics, judge(default, final_metrics, won)


def _log_outcome(final_id: str | None, final_metrics: dict[str, float], verdict: Outcome) -> None:
    if final_id:
        log_metrics({f"final_{k}": final_metrics[k] for k in ("test_accuracy", "val_accuracy")})
        set_tags({"final_run_id": final_id})
    set_tags({"tune.outcome": verdict.outcome, "default_run_id": verdict.default_run_id or ""})
    log_metrics({k: v for k, v in (("default_val_accuracy", verdict.default_val_accuracy),
                                            ("val_gain_pp", verdict.val_gain_pp)) if v is not None})


def run_tuning(family: str, params: Params, *, trials: int, timeout_s: float | None, storage: str | None,
               study_name: str | None, final: bool) -> TuneResult:
    """Run this worker's trials on the (possibly shared) study, summarise it, then judge it against the defaults."""
    if family not in FAMILIES:
        raise TuningError(f"unknown model family {family!r}; choose one of: {', '.join(FAMILIES)}")
    if family not in params.tune.space or not params.tune.space[family]:
        raise TuningError(f"tune.space has no search space for {family}; add one to params.yaml")
    storage = storage or params.tune.storage or default_storage()
    name = study_name or default_study_name(family)
    first = checked_defaults(params, family) if params.tune.enqueue_defaults else None
    study = open_study(name, storage, params.seed, params.tune, trial_epochs(params, family), first)
    _ensure_tracking_store()
    worker = f"{socket.gethostname()}-{os.getpid()}"
    tags = {"tune.role": "parent", "optuna.study": name, "optuna.storage": redact(storage), "tune.family": family,
            "tune.worker": worker, **git_tags()}
    with tracked_run(TUNING_EXPERIMENT, f"{name}-{worker}", tags) as parent:
        log_params(_parent_params(family, params, trials, timeout_s))
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
        final_id, final_metrics, verdict = _versus_defaults(family, params, best, study) if final else (None, {}, None)
        if verdict is not None:
            _log_outcome(final_id, final_metrics, verdict)
        kept = default_values(params, family) if verdict and verdict.outcome == DEFAULTS else dict(best.params)
        summary = {"family": family, "study": name, "storage": redact(storage), "objective": f"{OBJECTIVE} (max)",
                   "fidelity": fidelity(params, family), "best_trial": best.number, "best_value": float(best.value),
                   "trials": counts, "parent_run_id": parent.info.run_id, "final_run_id": final_id,
                   "final_test_accuracy": final_metrics.get("test_accuracy"),
                   "versus_defaults": verdict.as_dict() if verdict else None}
        out = write_best_params(params.tune.best_params_file, family, summary, kept)
    return TuneResult(name, redact(storage), parent.info.run_id, best.number, float(best.value), dict(best.params),
                      counts, final_id, final_metrics, out, verdict)
