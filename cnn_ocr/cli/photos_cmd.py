"""`ocr photos make`: the generated evaluation photos (MNIST test digits), a DVC stage."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from cnn_ocr.cli.common import ParamsOpt, SetOpt, console, one_line_errors, params_or_fail, setup_logging

photos_app = typer.Typer(help="Generated phone photos of handwritten numbers.", no_args_is_help=True)


@photos_app.command()
def make(
    out: Annotated[Path | None, typer.Option("--out", help="Folder to write (default: photos.out_dir).")] = None,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Write the evaluation photos (JPEGs + truth.json) from MNIST test digits of data version v2.0."""
    from cnn_ocr.data import load_version
    from cnn_ocr.data.photo_sets import build_set

    setup_logging()
    p = params_or_fail(params, set_)
    start = time.perf_counter()
    with one_line_errors():
        splits = load_version("v2.0", p.data)
        folder = build_set(p.photos, splits.test_x, splits.test_y, out)
    n = sum(1 for _ in folder.glob("*.jpg"))
    console.print(f"{n} photos written to {folder} in {time.perf_counter() - start:.0f} s")


def register(app: typer.Typer) -> None:
    """Add `photos` to the `ocr` command."""
    app.add_typer(photos_app, name="photos")
