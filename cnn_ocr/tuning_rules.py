"""What a tuning study runs and how its result is judged, without Optuna.

A trial's fidelity is `tune.fixed.<family>` (e.g. a 4-epoch schedule on the full data); trial 0 of a study
runs the family's configured values. The tuning stage ends with one of two results: the tuned params (their
final run at full settings has a higher validation accuracy than the default run) or the defaults (otherwise,
or when the defaults won the study: they were its best trial, or the best trial beat them by no more than
`tune.min_trial_gain` points, a gain within the noise of one trial). Either way the stage's best validation
accuracy is at least the default run's. The default run is the newest finished training run of the family
whose logged params equal the configured ones.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from cnn_ocr.config import Params, flatten

TUNED = "tuned"
DEFAULTS = "defaults"
NOT_COMPARED = "not_compared"


@dataclass(frozen=True)
class Outcome:
    """The tuning stage's result against the default run (accuracies as fractions, gain in points)."""

    outcome: str
    default_run_id: str | None
    default_val_accuracy: float | None
    final_val_accuracy: float | None
    val_gain_pp: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def as_logged(value: Any) -> str:
    """A param value the way the tracking store keeps it (lists, dicts and None as JSON text)."""
    return json.dumps(value) if isinstance(value, list | dict) or value is None else str(value)


def is_default_run(run: Any, family: str, wanted: dict[str, str]) -> bool:
    """A finished, non-tuning, non-reproduction training run of `family` trained with exactly `wanted` params."""
    return (run.status == "FINISHED" and run.tags.get("family") == family and "tune.role" not in run.tags
            and "reproduces" not in run.tags and "val_accuracy" in run.metrics
            and all(run.params.get(k) == v for k, v in wanted.items()))


def find_default_run(family: str, params: Params, runs: list[Any]) -> Any | None:
    """The newest of `runs` (newest first) trained with the family's configured params, or None."""
    wanted = {k: as_logged(v) for k, v in flatten(getattr(params.models, family)).items()}
    return next((r for r in runs if is_default_run(r, family, wanted)), None)


def gain_pp(value: float, base: float) -> float:
    """`value - base` for accuracies as fractions, in points (rounded off float noise)."""
    return round((value - base) * 100, 6)


def judge(default: Any | None, final_metrics: dict[str, float] | None, defaults_won_study: bool) -> Outcome:
    """Compare the final tuned run (None when none was trained) with the default run, on validation."""
    base = default.metrics["val_accuracy"] if default is not None else None
    default_id = default.run_id if default is not None else None
    if final_metrics is None:
        outcome = DEFAULTS if defaults_won_study and default is not None else NOT_COMPARED
        return Outcome(outcome, default_id, base, None, 0.0 if outcome == DEFAULTS else None)
    final = final_metrics["val_accuracy"]
    if base is None:  # nothing to compare with: the final run stands for whichever params the study chose
        return Outcome(DEFAULTS if defaults_won_study else TUNED, None, None, final, None)
    gain = gain_pp(final, base)
    return Outcome(TUNED if gain > 0 else DEFAULTS, default_id, base, final, gain)


def trial_gain_pp(best_value: float, defaults_value: float | None) -> float | None:
    """Points of validation accuracy by which the best trial beat trial 0 (None when trial 0 did not complete:
    pruned at a smaller budget, its value is not comparable)."""
    return None if defaults_value is None else gain_pp(best_value, defaults_value)


def defaults_won(best_is_defaults: bool, gain_pp: float | None, min_gain_pp: float) -> bool:
    """Whether the defaults won the study: they were its best trial, or the best trial beat them (both
    completed) by no more than `min_gain_pp` points, too little to pay for a training at full settings."""
    return best_is_defaults or (gain_pp is not None and gain_pp <= min_gain_pp)


def default_values(params: Params, family: str) -> dict[str, Any]:
    """The family's configured value of every searched key: what trial 0 runs."""
    fp = getattr(params.models, family)
    return {key: getattr(fp, key) for key in params.tune.space[family]}


def trial_epochs(params: Params, family: str) -> int:
    """The epochs one trial trains (its fidelity, Hyperband's largest budget); 1 for families without epochs."""
    fixed = params.tune.fixed.get(family, {})
    return int(fixed.get("epochs", getattr(getattr(params.models, family), "epochs", 1)))


def fidelity(params: Params, family: str) -> dict[str, Any]:
    """What one trial is, in words and numbers, for the run, the best-params file and the report."""
    fixed = params.tune.fixed.get(family, {})
    fp = getattr(params.models, family)
    samples = fixed.get("max_train_samples", getattr(fp, "max_train_samples", None))
    tune, epochs = params.tune, trial_epochs(params, family)
    pruner = (f"hyperband (epochs {min(tune.min_epochs, epochs)}..{epochs}, reduction factor {tune.reduction_factor})"
              if tune.pruner == "hyperband" else f"median (after {tune.warmup_epochs} warm-up epochs)")
    return {"epochs": epochs, "train_samples": samples or "all",
            "data_version": fixed.get("data_version", fp.data_version), "pruner": pruner}


def outside_space(values: dict[str, Any], space: dict[str, Any]) -> list[str]:
    """`key=value` for each value that its search dimension (`SearchDim`) cannot propose."""
    bad = []
    for key, value in values.items():
        dim = space[key]
        inside = value in dim.choices if dim.choices is not None else (
            isinstance(value, int | float) and not isinstance(value, bool) and dim.low <= value <= dim.high)
        if not inside:
            bad.append(f"{key}={value}")
    return bad
