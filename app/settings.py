"""Service settings, read from `OCR_*` environment variables by pydantic-settings."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of the OCR service. Environment variable = `OCR_` + the field name in upper case."""

    model_config = SettingsConfigDict(env_prefix="OCR_", extra="ignore", frozen=True, protected_namespaces=())

    model_path: Path | None = Field(None, description="Local folder (or model.onnx) with spec.json; no MLflow.")
    model_name: str = Field("OCR-Production-Model", description="Registered model to serve.")
    model_alias: str = Field("production", description="Alias of the registered model to serve.")
    model_cache_dir: Path = Field(Path("models_cache"), description="Local copies of served versions.")
    registry_timeout_s: float = Field(5.0, gt=0, le=300, description="Timeout of one tracking-store request.")
    allow_start_without_model: bool = Field(False, description="Start (health 503) instead of exiting.")
    admin_token: str | None = Field(None, description="Bearer token for /admin/*; admin is off when unset.")
    uncertain_threshold: float = Field(0.7, ge=0.0, le=1.0, description="Below this top probability: uncertain.")
    ood_threshold: float | None = Field(None, allow_inf_nan=False, description="Not-a-digit threshold: a mark "
                                        "scoring below it is refused; overrides the one stored in the model's spec.")
    max_bytes: int = Field(5 * 1024 * 1024, ge=1024, description="Largest accepted image file, in bytes.")
    max_pixels: int = Field(25_000_000, ge=64, description="Largest accepted image, in pixels (w x h).")
    batch_limit: int = Field(32, ge=1, le=1000, description="Most files in one /predict/batch request.")
    read_max_digits: int = Field(64, ge=1, le=1000, description="Most digits /read returns from one image.")
    read_max_lines: int = Field(16, ge=1, le=200, description="Most lines of digits /read reads from one image.")
    feedback_db: str | Path = Field("data/feedback/feedback.db", description="Feedback store: a SQLite file path or a "
                                    "postgresql://user:pass@host/db URL shared by replicas.")
    prediction_retention_s: float = Field(7 * 24 * 3600, gt=0, description="How long predictions stay "
                                          "available for feedback.")
    reload_interval_s: float = Field(60.0, ge=0, description="Seconds between alias checks; 0 turns it off.")
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Origins allowed by CORS (comma-separated); none by default.")
    feedback_rate_limit: int = Field(30, ge=0, description="Feedback posts per client per minute; 0 = no limit.")
    intra_op_threads: int = Field(1, ge=0, le=64, description="ONNX Runtime threads per inference (0 = auto).")
    recognizer_path: str | None = Field(None, description="Line recognizer for /read (`ocr crnn train`): a folder "
                                        "with model.onnx + line_spec.json, or models:/NAME@ALIAS; unset: none.")

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once."""
    return Settings()
