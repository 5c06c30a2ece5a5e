"""Typed, validated view of `params.yaml`: the only module that reads it.

Everything below the CLI receives these objects (or plain values taken from them), never raw YAML.
Unknown keys are an error, so a typo in `params.yaml` or in a `--set` override fails loudly. The classes
say what is allowed; the values themselves are written once, in `params.yaml`: no field has a default, so a
missing key is an error too (the one exception: a search dimension's optional `log` / `integer` / `step`).
The families' own blocks are defined with the family table, in `cnn_ocr.families`.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, create_model, model_validator

from cnn_ocr.families import FAMILIES, TABLE
from cnn_ocr.params_base import Strict
from cnn_ocr.photo_params import CrnnParams, PhotosParams

PARAMS_FILE = Path("params.yaml")


class ConfigError(ValueError):
    """A params file or override that cannot be used; the message says what to fix."""


class AugmentParams(Strict):
    copies: int = Field(ge=1, le=10)
    rotation_deg: float = Field(ge=0, le=45)
    shift_px: float = Field(ge=0, le=6)
    scale_min: float = Field(gt=0.5, le=1.0)
    scale_max: float = Field(ge=1.0, lt=1.5)
    shear_deg: float = Field(ge=0, le=30)
    elastic: bool
    elastic_alpha: float = Field(ge=0)
    elastic_sigma: float = Field(gt=0)
    seed: int


class DataParams(Strict):
    dataset: Literal["mnist", "fashion-mnist"]
    raw_dir: Path
    processed_dir: Path
    sources: list[Literal["idx", "mirror", "pypi"]]
    idx_path: Path | None
    mirror_timeout_s: float = Field(gt=0, le=60)
    validation_size: int = Field(ge=1, le=30000)
    split_seed: int
    augment: AugmentParams
    # Extra versions whose train split is appended to every model's training data (e.g. `feedback-1`,
    # written by `ocr feedback export` from user corrections). Validation and test never change.
    extra_train_versions: list[str]

    @model_validator(mode="after")
    def _scale_range(self) -> DataParams:
        if self.augment.scale_min > self.augment.scale_max:
            raise ValueError("data.augment.scale_min must not exceed scale_max")
        return self


# --- models: the shared evaluation block plus one block per family of `cnn_ocr.families` ----------------


class EvaluationParams(Strict):
    batch_size: int = Field(ge=1, le=65536)
    train_eval_samples: int = Field(ge=10)  # training images scored for the final train_accuracy
    latency_runs: int = Field(ge=5, le=10000)  # batch-1 CPU predictions timed (median reported)
    misclassified_shown: int = Field(ge=0, le=100)


# `params.models`: `evaluation` and one required block per trainable family, typed by the family table.
ModelsParams = create_model("ModelsParams", __base__=Strict, evaluation=(EvaluationParams, ...),
                            **{name: (TABLE[name].params, ...) for name in FAMILIES})


# --- lifecycle: tuning, selection / promotion, export (read by tune, select, registry, export) ------------

FamilyName = Literal[FAMILIES]  # type: ignore[valid-type]  # the trainable families of the table


class SearchDim(Strict):
    """One search dimension: a numeric range [low, high] (log-scaled, integer, stepped) or a list of choices."""

    # Structural defaults: which keys a range or a choice list may leave out (not values of params.yaml).
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    step: float | None = Field(None, gt=0)
    choices: list[float | int | str | bool | None] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> SearchDim:
        if self.choices is not None:
            if not self.choices or self.low is not None or self.high is not None:
                raise ValueError("give either non-empty choices or low/high, not both")
        elif self.low is None or self.high is None or not self.low < self.high:
            raise ValueError("a range needs low < high")
        elif self.log and (self.low <= 0 or self.step is not None):
            raise ValueError("a log range needs low > 0 and no step")
        return self


class TuneParams(Strict):
    family: FamilyName  # what `ocr tune` tunes when --model is not given
    trials: int = Field(ge=0, le=10000)  # trials run by this worker (each worker of a shared study runs its own)
    timeout_s: float | None = Field(gt=0)  # stop starting new trials after this many seconds
    storage: str | None  # Optuna storage URL; null = sqlite file optuna.db at the project root
    startup_trials: int = Field(ge=0)  # random trials before TPE models the space; also no pruning before
    warmup_epochs: int = Field(ge=0)  # epochs reported before a trial may be pruned (median pruner)
    pruner: Literal["hyperband", "median"]  # multi-fidelity: epochs are the resource
    min_epochs: int = Field(ge=1)  # Hyperband's smallest budget, in epochs
    reduction_factor: int = Field(ge=2)  # Hyperband keeps 1/reduction_factor of trials at each rung
    enqueue_defaults: bool  # trial 0 of a study runs the family's configured params
    final: bool  # after tuning, train the best params once on the family's full settings
    min_trial_gain: float = Field(ge=0, le=100)  # points of validation accuracy the best trial must beat trial 0 by
    best_params_file: Path
    fixed: dict[FamilyName, dict[str, Any]]  # settings of every trial (not of the final training)
    final_fixed: dict[FamilyName, dict[str, Any]]  # settings of the final training only (e.g. fewer epochs)
    space: dict[FamilyName, dict[str, SearchDim]]

    @model_validator(mode="after")
    def _known_keys(self) -> TuneParams:
        for section in ("fixed", "final_fixed", "space"):
            for family, block in getattr(self, section).items():
                unknown = sorted(set(block) - set(TABLE[family].params.model_fields))
                if unknown:
                    raise ValueError(f"tune.{section}.{family}: {', '.join(unknown)} not in models.{family}")
        return self


class EnsembleParams(Strict):
    members: int = Field(ge=1, le=10)  # best finished CNN runs (by validation accuracy) averaged
    views: list[tuple[float, float, float]] = Field(max_length=8)  # test-time augmentation: (dx px, dy px, degrees)
    experiment: str = Field(min_length=1)  # where `ocr ensemble` logs its runs
    member_experiments: list[str]

    @model_validator(mode="after")
    def _something_to_average(self) -> EnsembleParams:
        if self.members == 1 and not self.views:
            raise ValueError("ensemble.members 1 averages nothing without ensemble.views; use 2 or more members, "
                             "or views such as [[0, 0, 6], [0, 0, -6]]")
        return self


class SelectParams(Strict):
    registered_model: str = Field(min_length=1)
    experiments: list[str]  # where candidate runs come from
    rank_by: Literal["val_accuracy", "test_accuracy"]  # test_accuracy: the original rule, lets the test set choose
    margin_pp: float = Field(ge=0, le=100)  # points of `rank_by` a candidate must gain over production
    latency_budget_ms: float = Field(gt=0)  # max inference_ms_per_image (batch 1, CPU median)
    min_negative_refusal: float = Field(ge=0, le=1)  # share of validation negatives a candidate must refuse
    max_digit_refusal: float = Field(ge=0, le=1)  # share of validation digits it may refuse
    unscored: Literal["refuse", "allow"]  # a version registered without refusal figures: kept out, or let through


class ExportParams(Strict):
    parity_images: int = Field(ge=10)  # test images compared between ONNX Runtime and the framework
    parity_tolerance: float = Field(gt=0, le=0.1)  # max |p_onnx - p_framework|
    production_dir: Path  # where `ocr export --alias production` writes


class NegativesParams(Strict):
    """`negatives`: the generated not-a-digit drawings (`cnn_ocr/data/negatives.py`), a data version of their own."""

    version: str = Field(pattern=r"^negatives-v\d+$")
    source_version: str = Field(pattern=r"^v\d+\.\d+$")  # its training digits feed the digit-based families
    seed: int
    canvas_px: int = Field(ge=56, le=1024)
    pen_width: list[float] = Field(min_length=2, max_length=2)  # share of the canvas side, [low, high]
    dark_on_light: float = Field(ge=0, le=1)
    photo: float = Field(ge=0, le=1)
    train_per_family: int = Field(ge=1)
    val_per_family: int = Field(ge=1)


class OodParams(Strict):
    """`ood`: not-a-digit detection, scored for every CNN run (`cnn_ocr/ood/`)."""

    detector: Literal["msp", "energy", "mahalanobis", "auto"]  # the score shipped with a model (auto: per model)
    energy_temperature: float = Field(gt=0)
    max_digit_refusal: float = Field(gt=0, lt=0.5)  # the threshold refuses at most this share of validation digits
    heldout_samples: int = Field(ge=10)  # images per held-out family scored for a run
    ece_bins: int = Field(ge=2, le=100)


class Params(Strict):
    seed: int
    device: Literal["auto", "cpu", "cuda"]
    data: DataParams
    models: ModelsParams
    tune: TuneParams
    ensemble: EnsembleParams
    select: SelectParams
    export: ExportParams
    negatives: NegativesParams
    ood: OodParams
    photos: PhotosParams
    crnn: CrnnParams
    profile: str | None  # name of a `profiles` entry applied under the explicit overrides
    profiles: dict[str, dict[str, Any]]  # name -> {dotted.key: value}, e.g. the `fast` training profile


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({exc.problem})") from None
    return parts, value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of `raw` with each `a.b.c=value` applied; the key path must already exist."""
    out = copy.deepcopy(raw)
    for text in overrides:
        parts, value = _parse_override(text)
        node = out
        for i, part in enumerate(parts):
            if not isinstance(node, dict) or part not in node:
                known = ", ".join(sorted(node)) if isinstance(node, dict) else "none"
                where = ".".join(parts[: i + 1])
                raise ConfigError(f"unknown parameter {where!r} in override {text!r} (known here: {known})")
            if i == len(parts) - 1:
                node[part] = value
            else:
                node = node[part]
    return out


def _format_validation(exc: ValidationError, path: Path) -> str:
    """The first problem, unknown keys before missing ones (an unknown key is often a missing one misspelt)."""
    errors = sorted(exc.errors(), key=lambda e: {"extra_forbidden": 0, "missing": 2}.get(e["type"], 1))
    err = errors[0]
    loc = ".".join(str(p) for p in err["loc"])
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    if err["type"] == "missing":
        return f"missing parameter {loc!r}: every value is written in {path}; add it there{more}"
    return f"invalid parameter {loc!r}: {err['msg']}{more}"


def _with_profile(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply the overrides; when they (or the file) choose a `profile`, its values go in first, under them."""
    merged = apply_overrides(raw, overrides)
    chosen = merged.get("profile")
    if not chosen:
        return merged
    profiles = merged.get("profiles") or {}
    if chosen not in profiles:
        raise ConfigError(f"unknown profile {chosen!r}; known profiles: {', '.join(sorted(profiles)) or 'none'}")
    layer = [f"{key}={json.dumps(value)}" for key, value in profiles[chosen].items()]
    return apply_overrides(merged, layer + overrides)


def load_params(path: Path | str = PARAMS_FILE, overrides: list[str] | None = None) -> Params:
    """Read and validate a params file, applying `--set`-style overrides first."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"params file {path} not found; run from the project root or pass --params")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    raw = _with_profile(raw, overrides or [])
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_validation(exc, path)) from None


def flatten(params: BaseModel | dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested params to `a.b.c -> value` (for tracking)."""
    data = params.model_dump(mode="json") if isinstance(params, BaseModel) else params
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat
