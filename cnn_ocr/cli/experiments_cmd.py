"""`ocr report | reproduce`: the experiments report and re-running a recorded run, both read from the store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cnn_ocr.cli.common import (
    ParamsOpt,
    SetOpt,
    console,
    err_console,
    fail,
    one_line_errors,
    params_or_fail,
    setup_logging,
)


def report(
    out: Annotated[Path, typer.Option("--out", help="Markdown file to (re)generate.")] = Path("ml/README_experiments.md"),
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    section: Annotated[str | None, typer.Option(
        "--section", help="Regenerate only this section (recipes) inside the existing file, the rest untouched.")] = None,
) -> None:
    """Regenerate the experiments report (and its figures) entirely from the tracking store."""
    from cnn_ocr.report import refresh_section, write_report

    setup_logging()
    p = params_or_fail(params, set_)
    with one_line_errors():
        path, n_runs = write_report(p, out) if section is None else refresh_section(section, out)
    console.print(f"wrote {path} from {n_runs} runs")


def reproduce(run_id: Annotated[str, typer.Argument(help="The run to train again.")]) -> None:
    """Train a run again with its recorded params, seed and data version; compare the metrics (exit 3 if they differ)."""
    from cnn_ocr.reproduce import reproduce_run

    setup_logging()
    with one_line_errors():
        res = reproduce_run(run_id, warn=lambda msg: err_console.print(f"[yellow]warning:[/] {msg}", highlight=False))
    table = Table(title=f"run {run_id} vs its reproduction {res.new_run_id}")
    for col in ("metric", "original", "reproduction", "same"):
        table.add_column(col)
    for key, old, new, equal in res.rows():
        mark = "" if equal is None else ("yes" if equal else "[bold red]NO[/]")
        table.add_row(key, "-" if old is None else f"{old:.6g}", "-" if new is None else f"{new:.6g}", mark)
    console.print(table)
    if not res.identical:
        fail("the reproduction's metrics differ from the original run's", code=3)
    console.print(f"reproduced: identical metrics (new run {res.new_run_id}, tag reproduces={run_id})")


def register(app: typer.Typer) -> None:
    """Add `report` and `reproduce` to the `ocr` app."""
    app.command("report")(report)
    app.command("reproduce")(reproduce)
