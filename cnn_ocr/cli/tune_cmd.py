"""`ocr tune`: search a model family's hyperparameters with Optuna, each trial one tracked training run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cnn_ocr.cli.common import ParamsOpt, SetOpt, console, fail, one_line_errors, params_or_fail, setup_logging
from cnn_ocr.models import FAMILIES


def _family(model: str | None, default: str) -> str:
    family = model or default
    if family not in FAMILIES:
        fail(f"unknown model family {family!r}; choose one of: {', '.join(FAMILIES)}", code=2)
    return family


def tune(
    model: Annotated[str | None, typer.Option("--model", help="Family to tune (default: tune.family).")] = None,
    trials: Annotated[int | None, typer.Option("--trials", min=0, help="Trials this worker runs (default: tune.trials).")] = None,
    timeout: Annotated[float | None, typer.Option("--timeout", min=1, help="Start no new trial after S seconds.")] = None,
    storage: Annotated[str | None, typer.Option("--storage", help="Optuna storage URL, e.g. postgresql://u:p@host/db.")] = None,
    study: Annotated[str | None, typer.Option("--study", help="Study name; workers sharing it cooperate.")] = None,
    final: Annotated[bool | None, typer.Option("--final/--no-final", help="Train the best params once at the end.")] = None,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Tune a model family with Optuna; every trial is one nested MLflow run of this worker's parent run."""
    from cnn_ocr.tune import run_tuning

    setup_logging()
    p = params_or_fail(params, set_)
    family = _family(model, p.tune.family)
    with one_line_errors():
        res = run_tuning(family, p, trials=p.tune.trials if trials is None else trials,
                         timeout_s=timeout or p.tune.timeout_s, storage=storage, study_name=study,
                         final=p.tune.final if final is None else final)
    table = Table(title=f"study {res.study} ({res.storage})")
    table.add_column("")
    table.add_column("value")
    table.add_row("trials (whole study)", ", ".join(f"{k} {v}" for k, v in res.counts.items()))
    table.add_row("best trial", f"#{res.best_trial}: val_accuracy {res.best_value:.2%}")
    table.add_row("best params", ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                           for k, v in res.best_params.items()))
    table.add_row("parent run", res.parent_run_id)
    if res.final_run_id:
        table.add_row("final run", f"{res.final_run_id}: val_accuracy {res.final_metrics['val_accuracy']:.2%}")
    if res.versus_defaults is not None:
        v = res.versus_defaults
        gain = f"{v.val_gain_pp:+.2f} points on validation" if v.val_gain_pp is not None else "no default run to compare"
        table.add_row("versus defaults", f"{v.outcome} ({gain})")
    table.add_row("written", str(res.best_params_file))
    console.print(table)
    console.print(f"Another worker joins with: ocr tune --model {family} --study {res.study} --storage '<same URL>'")


def register(app: typer.Typer) -> None:
    """Add `tune` to the `ocr` app."""
    app.command("tune")(tune)
