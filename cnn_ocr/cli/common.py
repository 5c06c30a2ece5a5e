"""Helpers shared by the command modules: params loading with overrides, one-line errors, console."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console

from cnn_ocr.config import ConfigError, Params, load_params

console = Console(soft_wrap=True)
err_console = Console(stderr=True)

ParamsOpt = Annotated[Path, typer.Option("--params", help="Params file to read.")]
INT_METRICS = {"best_epoch", "epochs_run", "head_epochs", "n_parameters", "model_size_bytes"}

SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a parameter, e.g. --set models.improved_cnn.lr=3e-4 (repeatable)."),
]


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one clear line to stderr and exit non-zero."""
    err_console.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def expected_errors() -> tuple[type[Exception], ...]:
    """The library's expected failures: bad params, missing data, or a lifecycle step that cannot proceed.

    Imported when a command runs, not when `ocr --help` is shown.
    """
    from cnn_ocr.data.raw_store import CacheError
    from cnn_ocr.data.sources import SourceError
    from cnn_ocr.ensembling import EnsembleError
    from cnn_ocr.export import ExportError
    from cnn_ocr.report import ReportError
    from cnn_ocr.rerun import RerunError  # ocr train --resume and ocr reproduce
    from cnn_ocr.select import SelectionError
    from cnn_ocr.tracking.store import StoreError  # RegistryError is one
    from cnn_ocr.tune import TuningError

    return (ConfigError, CacheError, SourceError, EnsembleError, ExportError, StoreError, RerunError,
            SelectionError, TuningError, ReportError)


@contextmanager
def one_line_errors(*errors: type[Exception], code: int = 1, message: str = "{error}") -> Iterator[None]:
    """Turn expected failures into `error: <one line>` on stderr and exit `code`; every command uses this.

    `errors` are the failures to catch (default: `expected_errors()`); `message` frames the error's text.
    Anything else is a bug and keeps its traceback.
    """
    try:
        yield
    except Exception as exc:
        if not isinstance(exc, errors or expected_errors()):
            raise
        fail(message.format(error=exc), code=code)


def params_or_fail(path: Path, overrides: list[str] | None) -> Params:
    """Load params with overrides, turning any config problem into a one-line error."""
    with one_line_errors(ConfigError, code=2):
        return load_params(path, overrides or [])


def setup_logging(verbose: bool = False) -> None:
    """Plain one-line log records on stderr."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")


def write_metrics(path: Path, metrics: dict[str, float]) -> None:
    """A run's final metrics as JSON (a DVC metrics file): counts as integers, the rest to 6 decimals."""
    import json

    from cnn_ocr.atomic_files import atomic_write_bytes

    payload = {k: int(v) if k in INT_METRICS else round(float(v), 6) for k, v in metrics.items()}
    atomic_write_bytes(path, (json.dumps(payload, indent=2) + "\n").encode())


def service_settings(**given: object):
    """The service's settings (OCR_* environment variables, then `given` values that are not None); a one-line
    exit 2 naming the bad variable."""
    from pydantic import ValidationError

    from app.settings import Settings

    try:
        return Settings(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as exc:
        err = exc.errors()[0]
        fail(f"invalid setting OCR_{str(err['loc'][0]).upper()}: {err['msg']}", code=2)


def served_model(settings):
    """(candidate, loaded model): the model found exactly as `ocr serve` finds it; a one-line exit 3 without one."""
    from app.model_store import ModelLoadError, NoModelError, find_candidate, load_model_dir

    with one_line_errors(NoModelError, ModelLoadError, code=3):
        candidate = find_candidate(settings)
        model = load_model_dir(candidate.folder, threads=1, source=candidate.source)
    if candidate.note:
        err_console.print(f"note: {candidate.note}", markup=False, highlight=False)
    return candidate, model
