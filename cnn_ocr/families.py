"""The model families: one table saying, per family, how it is built, what its params are, which
framework trains it and which MLflow experiment its runs go to.

Config (`params.models`), training, tuning, re-running, export and tracking all read this table. Adding a
family means: a params class and a row here, a module in `cnn_ocr/models/` exposing `build(params)`, its
block under `models:` in `params.yaml`, and its `train_<family>` stage in `dvc.yaml`.

The data version a family trains on is a value, `params.models.<family>.data_version`, so it lives in
`params.yaml` like every other value (`data_version_of` reads it). This module imports neither torch nor
scikit-learn: a family's module is imported only when a model is built.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, model_validator

from cnn_ocr.params_base import Strict

if TYPE_CHECKING:
    from cnn_ocr.config import Params

# --- params blocks (`params.models.<family>`); the values live in params.yaml -------------------------

DataVersionName = Annotated[str, Field(pattern=r"^v\d+\.\d+$")]


class BatchAugmentParams(Strict):
    """Random affine jitter applied to each training batch on the fly (CNN families)."""

    enabled: bool
    rotation_deg: float = Field(ge=0, le=45)
    shift_px: float = Field(ge=0, le=6)
    scale: float = Field(ge=0, lt=0.5)  # zoom drawn from [1 - scale, 1 + scale]
    elastic_alpha: float = Field(ge=0, le=100)  # elastic distortion (Simard et al., 2003): a fresh uniform field
    elastic_sigma: float = Field(gt=0, le=8)    # smoothed by a Gaussian of this sigma (pixels), times alpha; 0 = off


class OutlierExposureParams(Strict):
    """Outlier exposure: negatives in every batch pushed towards the uniform softmax (Hendrycks et al., 2019)."""

    enabled: bool
    weight: float = Field(ge=0, le=10)  # lambda: weight of the negatives' cross-entropy to the uniform distribution
    version: str = Field(pattern=r"^negatives-v\d+$")  # the negatives data version trained on
    ratio: float = Field(gt=0, le=4)  # negatives per digit in each batch (at least one)
    start_epoch: int = Field(ge=1)  # the first epoch (1-based) whose batches carry negatives (mode joint)
    # joint: negatives in the batches of the schedule itself; head: the schedule on digits alone, then `head_epochs`
    # epochs that re-fit the dense head (`classifier`) and the last `head_convs` conv layers on digits and negatives,
    # the layers before them frozen
    mode: Literal["joint", "head"]
    head_epochs: int = Field(ge=1, le=50)
    head_lr: float = Field(gt=0, le=1)  # the peak of the head's own one-cycle schedule (Adam)
    head_convs: int = Field(ge=0, le=16)  # conv layers at the end of `features` re-fitted with the head


class DistillParams(Strict):
    """Knowledge distillation (Hinton et al., 2015): the network also learns the averaged softmax of teachers."""

    # finished CNN runs (MLflow run ids) or state-dict files (`.pt`) of networks built from this same block; their
    # probabilities at `temperature`, averaged, are the soft targets; empty = off
    teachers: list[str]
    weight: float = Field(ge=0, le=1)  # share of the soft targets' term in the digits' loss (1 - weight: the labels)
    temperature: float = Field(gt=0, le=20)  # softens teacher and student alike; the term is scaled by its square


class TorchTrainParams(Strict):
    """Knobs shared by the CNN families: one training loop reads them."""

    data_version: DataVersionName
    lr: float = Field(gt=0, le=1)
    weight_decay: float = Field(ge=0, le=1)
    batch_size: int = Field(ge=1, le=8192)
    epochs: int = Field(ge=1, le=500)
    patience: int | None = Field(ge=1)  # early stopping on val loss, best weights restored; null = off
    epoch_samples: int | None = Field(ge=1)  # training images drawn per epoch; null = all
    lr_schedule: Literal["constant", "onecycle"]
    label_smoothing: float = Field(ge=0, lt=1)
    augment: BatchAugmentParams
    max_train_samples: int | None = Field(ge=10)  # stratification-free cap for quick runs
    outlier_exposure: OutlierExposureParams
    ema_decay: float | None = Field(gt=0, lt=1)  # exponential moving average of the weights; null = off
    precision: Literal["fp32", "bf16", "bf16_features", "auto"]  # the training forward pass (weights, updates,
    # evaluation stay fp32); bf16_features: the convolutions only; auto: bf16_features on a CPU with AMX, else fp32
    distill: DistillParams


class BaseCnnParams(TorchTrainParams):
    conv_filters: int = Field(ge=1, le=512)
    kernel_size: int = Field(ge=1, le=7)
    pool_after_each_conv: bool
    dense_units: int = Field(ge=1, le=8192)
    dropout: float = Field(ge=0, lt=1)


class ImprovedCnnParams(TorchTrainParams):
    conv_filters: list[int]  # conv pairs, max-pooling after each pair
    kernel_size: int = Field(ge=1, le=7)
    padding: int = Field(ge=0, le=3)
    dense_units: list[int]
    conv_dropout: float = Field(ge=0, lt=1)
    dense_dropout: float = Field(ge=0, lt=1)

    @model_validator(mode="after")
    def _layers(self) -> ImprovedCnnParams:
        if not self.conv_filters or len(self.conv_filters) % 2 or min(self.conv_filters) < 1:
            raise ValueError("models.improved_cnn.conv_filters must be a non-empty even-length list of positive ints")
        if not self.dense_units or min(self.dense_units) < 1:
            raise ValueError("models.improved_cnn.dense_units must be a non-empty list of positive ints")
        return self


class SvmParams(Strict):
    data_version: DataVersionName
    scaling: Literal["none", "standard", "minmax"]  # extra scaling after the MNIST mean/std normalization
    pca_components: int | None = Field(ge=1, le=784)
    pca_whiten: bool
    kernel: Literal["rbf", "poly", "linear", "sigmoid"]
    C: float = Field(gt=0)
    gamma: float | Literal["scale", "auto"]
    cache_size_mb: int = Field(ge=50, le=65536)
    max_train_samples: int | None = Field(ge=10)


# --- the table --------------------------------------------------------------------------------------

Framework = Literal["torch", "sklearn"]
BASELINE_EXPERIMENT = "baseline-models"
IMPROVED_EXPERIMENT = "improved-cnn"
ENSEMBLE = "ensemble"


@dataclass(frozen=True)
class Family:
    """One model family. Trainable families have a params block, a builder module and an experiment."""

    name: str
    framework: Framework
    params: type[Strict] | None  # the class of `params.models.<name>`; None when not trained by `ocr train`
    module: str | None  # module exposing `build(params) -> model`
    experiment: str | None  # MLflow experiment of its `ocr train` runs

    @property
    def trainable(self) -> bool:
        """True for the families `ocr train` trains (each has a params block)."""
        return self.params is not None

    def build(self, family_params: Any) -> Any:
        """An untrained model from the family's params block."""
        if self.module is None:
            raise ValueError(f"model family {self.name!r} is not built from params")
        return importlib.import_module(self.module).build(family_params)


TABLE: dict[str, Family] = {f.name: f for f in (
    Family("base_cnn", "torch", BaseCnnParams, "cnn_ocr.models.base_cnn", BASELINE_EXPERIMENT),
    Family("svm", "sklearn", SvmParams, "cnn_ocr.models.svm", BASELINE_EXPERIMENT),
    Family("improved_cnn", "torch", ImprovedCnnParams, "cnn_ocr.models.improved_cnn", IMPROVED_EXPERIMENT),
    # finished CNN runs averaged by `ocr ensemble` (cnn_ocr/ensembling.py), logged to `ensemble.experiment`
    Family(ENSEMBLE, "torch", None, None, None),
)}
# The families `ocr train --model` trains, in params.yaml's order.
FAMILIES: tuple[str, ...] = tuple(name for name, f in TABLE.items() if f.trainable)
TORCH_FAMILIES: frozenset[str] = frozenset(n for n in FAMILIES if TABLE[n].framework == "torch")
FAMILY_EXPERIMENTS: dict[str, str] = {n: TABLE[n].experiment for n in FAMILIES}


def names(framework: Framework) -> tuple[str, ...]:
    """Every family (the ensemble included) trained and exported with `framework`."""
    return tuple(name for name, f in TABLE.items() if f.framework == framework)


def get(family: str) -> Family:
    """The trainable family called `family`, else ValueError naming the choices."""
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; choose one of: {', '.join(FAMILIES)}")
    return TABLE[family]


def check_family(family: str) -> str:
    """Return `family` if it is a trainable family, else raise ValueError naming the choices."""
    return get(family).name


def is_torch(family: str) -> bool:
    """True when the family is a PyTorch network (trained by the epoch loop, or an ensemble of such)."""
    found = TABLE.get(family) or get(family)
    return found.framework == "torch"


def family_params(params: Params, family: str) -> Any:
    """The `params.models.<family>` block."""
    return getattr(params.models, check_family(family))


def data_version_of(params: Params, family: str) -> str:
    """The processed data version `family` trains on (`params.models.<family>.data_version`)."""
    return family_params(params, family).data_version
