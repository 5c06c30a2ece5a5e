"""`ocr batch`: read many image files with the served model into a Parquet dataset, one row per file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from cnn_ocr.cli.common import console, err_console, fail, served_model, service_settings, setup_logging


def _model(settings):
    """The served model (see `served_model`) as the batch job names it to its workers."""
    from cnn_ocr.batch.rows import ModelRef

    candidate, model = served_model(settings)
    return ModelRef(str(candidate.folder), model.info.name, model.info.version)


def _progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn("reading"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[rate]:>8.0f} images/s"), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=err_console, transient=False)


def batch(
    inputs: Annotated[list[str], typer.Argument(help="Folders, glob patterns, image files, or CSV/Parquet manifests "
                                                "with a 'path' column.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder of Parquet parts (e.g. results.parquet).")],
    model_path: Annotated[Path | None, typer.Option("--model-path", help="Folder with model.onnx + spec.json "
                                                    "instead of the registry alias.")] = None,
    model_name: Annotated[str | None, typer.Option("--model-name", help="Registered model (default: the "
                                                   "service's, OCR_MODEL_NAME).")] = None,
    model_alias: Annotated[str | None, typer.Option("--model-alias", help="Registry alias (default: the "
                                                    "service's, OCR_MODEL_ALIAS, i.e. production).")] = None,
    engine: Annotated[str, typer.Option("--engine", help="local (process pool) or ray (Ray Data).")] = "local",
    workers: Annotated[int | None, typer.Option("--workers", min=1, max=256, help="Worker processes / Ray "
                                                "actors (default: the cores available).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, max=100_000, help="Files per worker call.")] = 128,
    chunk_size: Annotated[int, typer.Option("--chunk-size", min=1, max=10_000_000,
                                            help="Rows per part file (the most an interrupted job loses).")] = 2048,
    resume: Annotated[bool, typer.Option("--resume", help="Continue into an existing output, skipping the "
                                         "files it holds.")] = False,
    ray_address: Annotated[str | None, typer.Option("--ray-address", help="Join this Ray cluster (e.g. "
                                                    "ray://head:10001 or auto) instead of a local Ray.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Read every image the inputs name; one row per file (text, digits with boxes, status, errors)."""
    setup_logging(verbose)
    from cnn_ocr.batch.engines import EngineError
    from cnn_ocr.batch.inputs import InputError, list_inputs
    from cnn_ocr.batch.job import ENGINES, BatchOptions, run_batch
    from cnn_ocr.batch.output import OutputError, open_output
    from cnn_ocr.reader import ReadLimits

    if engine not in ENGINES:
        fail(f"unknown engine {engine!r}; choose one of: {', '.join(ENGINES)}", code=2)
    if engine == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            fail("the ray engine needs Ray: pip install 'cnn-ocr-app[batch]' (or use --engine local)", code=2)
    try:
        paths = list_inputs(inputs)
        open_output(out, resume)  # refuse a bad --out before loading anything
    except (InputError, OutputError) as exc:
        fail(str(exc), code=2)
    settings = service_settings(model_path=model_path, model_name=model_name, model_alias=model_alias)
    ref = _model(settings)
    limits = ReadLimits(settings.max_bytes, settings.max_pixels, settings.read_max_digits, settings.uncertain_threshold,
                        settings.ood_threshold, settings.read_max_lines)
    options = BatchOptions(engine, workers or len(os.sched_getaffinity(0)), batch_size, chunk_size, resume, ray_address)
    with _progress() as progress:
        task = progress.add_task("read", total=len(paths), rate=0.0)

        def advance(n: int) -> None:
            progress.advance(task, n)
            progress.update(task, rate=progress.tasks[0].speed or 0.0)

        try:
            summary = run_batch(paths, out, ref, limits, options, on_progress=advance)
        except OutputError as exc:
            fail(str(exc), code=2)
        except EngineError as exc:
            fail(f"{exc}; the rows written so far are kept: rerun with --resume", code=1)
    console.print(f"{summary.written} rows written to {out} ({summary.errors} files could not be read, "
                  f"{summary.skipped} already there) in {summary.seconds:.1f} s: {summary.images_per_s:.0f} images/s "
                  f"with {ref.name} version {ref.version}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add `ocr batch` to the command line."""
    app.command("batch")(batch)
