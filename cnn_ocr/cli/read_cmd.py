"""`ocr read FILE...`: what `/read` answers for local image files, without a server (same reading path)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from cnn_ocr.cli.common import fail, served_model, service_settings


def read(
    files: Annotated[list[Path], typer.Argument(help="Image files (PNG, JPEG, GIF, BMP, WebP, TIFF).")],
    model_path: Annotated[Path | None, typer.Option("--model-path", help="Folder with model.onnx + spec.json "
                                                    "(default: the model `ocr serve` would serve).")] = None,
    recognizer: Annotated[Path | None, typer.Option("--recognizer", help="Folder of a line recognizer (`ocr crnn "
                                                    "train`): also read each line with it, keep the surer.")] = None,
) -> None:
    """Print, per file, one JSON line: the text, status, reason and digits (digit, confidence, status, box)."""
    from cnn_ocr.reader import ReadLimits, read_many

    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        fail(f"no such file: {', '.join(missing)}; give paths to image files", code=2)
    settings = service_settings(model_path=model_path)
    _, model = served_model(settings)
    limits = ReadLimits(settings.max_bytes, settings.max_pixels, settings.read_max_digits,
                        settings.uncertain_threshold, settings.ood_threshold, settings.read_max_lines)
    if recognizer is None:
        ood = model.spec.ood
        answers = read_many([f.read_bytes() for f in files], model.predict, limits,
                            None if ood is None else ood.threshold)
    else:
        answers = _read_with_recognizer(files, model, limits, recognizer)
    failed = False
    for path, answer in zip(files, answers, strict=True):
        failed |= answer["error"] is not None
        out = {"file": str(path), **answer, "model": {"name": model.info.name, "version": model.info.version}}
        typer.echo(json.dumps(out))
    if failed:
        raise typer.Exit(1)


def _read_with_recognizer(files: list[Path], model, limits, folder: Path) -> list[dict]:
    from cnn_ocr.decode import ImageError
    from cnn_ocr.line_model import LineRecognizer
    from cnn_ocr.line_read import read_line

    try:
        reader = LineRecognizer(folder)
    except (OSError, ValueError, KeyError) as exc:
        fail(f"cannot load the line recognizer from {folder}: {exc}; train one with `ocr crnn train`", code=3)
    answers = []
    for f in files:
        try:
            answers.append(read_line(f.read_bytes(), None, model.predict, limits, reader,
                                     None if model.spec.ood is None else model.spec.ood.threshold))
        except ImageError as exc:
            answers.append({"text": None, "status": "error", "reason": None, "digits": [],
                            "error": f"{exc.kind}: {exc}"})
    return answers


def register(app: typer.Typer) -> None:
    """Add `read` to the `ocr` command."""
    app.command("read")(read)
