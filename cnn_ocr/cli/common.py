"""Helpers shared by the command modules: params loading with overrides, one-line errors, console."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console

from cnn_ocr.config import ConfigError, Params, load_params

console = Console(soft_wrap=True)
err_console = Console(stderr=True)

ParamsOpt = Annotated[Path, typer.Option("--params", help="Params file to read.")]
INT_METRICS = {"best_epoch", "epochs_run", "n_parameters", "model_size_bytes"}

SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a parameter, e.g. --set models.improved_cnn.lr=3e-4 (repeatable)."),
]


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one clear line to stderr and exit non-zero."""
    err_console.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def params_or_fail(path: Path, overrides: list[str] | None) -> Params:
    """Load params with overrides, turning any config problem into a one-line error."""
    try:
        return load_params(path, overrides or [])
    except ConfigError as exc:
        fail(str(exc), code=2)


def setup_logging(verbose: bool = False) -> None:
    """Plain one-line log records on stderr."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")


def write_metrics(path: Path, metrics: dict[str, float]) -> None:
    """A run's final metrics as JSON (a DVC metrics file): counts as integers, the rest to 6 decimals."""
    import json

    from cnn_ocr.data.atomic import atomic_write_bytes

    payload = {k: int(v) if k in INT_METRICS else round(float(v), 6) for k, v in metrics.items()}
    atomic_write_bytes(path, (json.dumps(payload, indent=2) + "\n").encode())
