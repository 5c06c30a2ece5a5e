"""The `ocr` command line. Each command module registers its commands on the shared Typer app.

Command modules import heavy libraries (torch, mlflow, ...) inside their functions so `ocr --help` stays fast.
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="ocr",
    help="cnn-ocr-app: data, training, tracking, registry and serving for handwritten-digit OCR.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

COMMAND_MODULES = [
    "data_cmd",
    "train_cmd",
    "tune_cmd",
    "models_cmd",
    "experiments_cmd",
    "serve_cmd",
    "batch_cmd",
    "photos_cmd",
    "crnn_cmd",
    "read_cmd",
]

for _name in COMMAND_MODULES:
    importlib.import_module(f"cnn_ocr.cli.{_name}").register(app)
