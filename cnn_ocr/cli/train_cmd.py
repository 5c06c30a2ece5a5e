"""`ocr train --model <family>` and `ocr ui`."""

from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from cnn_ocr.cli.common import (
    ParamsOpt,
    SetOpt,
    console,
    fail,
    one_line_errors,
    params_or_fail,
    setup_logging,
    write_metrics,
)
from cnn_ocr.models import FAMILIES

PLOT_COLUMNS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy")
UI_PORT = 5000


class _LiveProgress:
    """A bar per epoch with live loss and ETA, plus an overall bar across epochs."""

    def __init__(self, family: str, epochs: int) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=console,
        )
        unit = "fit" if family == "svm" else "epochs"
        self.overall = self.progress.add_task(f"{family} {unit}", total=epochs, stats="")
        self.epoch_tasks: dict[int, Any] = {}

    def _task(self, epoch: int, total: int | None) -> Any:
        if epoch not in self.epoch_tasks:
            self.epoch_tasks[epoch] = self.progress.add_task(f"  epoch {epoch}", total=total, stats="")
        return self.epoch_tasks[epoch]

    def on_step(self, epoch: int, done: int, total: int, loss: float) -> None:
        """In-epoch progress with the running training loss."""
        self.progress.update(self._task(epoch, total), completed=done, stats=f"loss {loss:.4f}")

    def on_epoch(self, epoch: int, row: dict[str, float]) -> None:
        """Close the epoch's bar with its train / validation figures."""
        task = self._task(epoch, 1)
        total = self.progress.tasks[task].total or 1
        stats = (f"loss {row['train_loss']:.4f} acc {row['train_accuracy']:.2%} | "
                 f"val loss {row['val_loss']:.4f} acc {row['val_accuracy']:.2%}")
        self.progress.update(task, completed=total, stats=stats)
        self.progress.update(self.overall, completed=epoch, stats=f"val acc {row['val_accuracy']:.2%}")


def _write_outputs(result: Any, metrics_out: Path | None, plots_out: Path | None) -> None:
    from cnn_ocr.atomic_files import atomic_write_bytes

    if metrics_out is not None:
        write_metrics(metrics_out, result.metrics)
    if plots_out is not None:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(PLOT_COLUMNS)
        for row in result.history:
            writer.writerow([row["epoch"]] + [f"{row[c]:.6f}" for c in PLOT_COLUMNS[1:]])
        atomic_write_bytes(plots_out, buf.getvalue().encode())


def _summary_table(result: Any) -> Table:
    m = result.metrics
    table = Table(title=f"{result.family}: run {result.run_id}", show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in ("test_accuracy", "val_accuracy", "train_accuracy"):
        table.add_row(key, f"{m[key]:.2%}")
    table.add_row("overfit_gap", f"{m['overfit_gap']:.2f} points")
    table.add_row("best_epoch / epochs_run", f"{int(m['best_epoch'])} / {int(m['epochs_run'])}")
    table.add_row("training_time_s", f"{m['training_time_s']:.1f}")
    table.add_row("inference_ms_per_image", f"{m['inference_ms_per_image']:.3f}")
    table.add_row("n_parameters", f"{int(m['n_parameters']):,}")
    table.add_row("model_size_bytes", f"{int(m['model_size_bytes']):,}")
    return table


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def train(
    model: Annotated[str | None, typer.Option("--model", "-m", help=f"Model family: {', '.join(FAMILIES)}.")] = None,
    resume: Annotated[str | None, typer.Option("--resume", help="Continue an interrupted run from its last "
                                               "checkpoint (its own params; a new run tagged resumed_from).")] = None,
    set_: SetOpt = None,
    overrides: Annotated[str, typer.Option("--overrides", help="Space-separated key=value overrides (as --set).")] = "",
    experiment: Annotated[str | None, typer.Option("--experiment", help="MLflow experiment (default per family).")] = None,
    run_name: Annotated[str | None, typer.Option("--run-name", help="MLflow run name.")] = None,
    metrics_out: Annotated[Path | None, typer.Option("--metrics-out", help="Write final metrics as JSON here.")] = None,
    plots_out: Annotated[Path | None, typer.Option("--plots-out", help="Write per-epoch metrics as CSV here.")] = None,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Train one model family on its data version, tracked as one MLflow run (or resume one with --resume)."""
    if resume and (model or set_ or overrides.strip()):
        fail("--resume continues a run with its own params; do not combine it with --model, --set or --overrides",
             code=2)
    if not resume and model not in FAMILIES:
        fail(f"unknown model {model!r}; choose one of: {', '.join(FAMILIES)} (or --resume RUN_ID)", code=2)
    p = params_or_fail(params, (set_ or []) + overrides.split())
    setup_logging()
    from cnn_ocr.config import ConfigError
    from cnn_ocr.data.raw_store import CacheError
    from cnn_ocr.rerun import ResumeError, resume_training
    from cnn_ocr.tracking import reading, runs, store
    from cnn_ocr.train import family_params, train_model

    for sig in (signal.SIGTERM, signal.SIGINT):  # `kill`, `dvc exp` stops and Ctrl-C end the run as KILLED
        signal.signal(sig, runs.interrupt_handler)
    live = _LiveProgress(model or "resumed run", getattr(family_params(p, model), "epochs", 1) if model else 1)
    try:
        with one_line_errors(CacheError, ResumeError), one_line_errors(ConfigError, code=2), live.progress:
            if resume:
                result = resume_training(resume, epoch_callback=live.on_epoch, step_callback=live.on_step)
            else:
                result = train_model(model, p, experiment=experiment, run_name=run_name,
                                     epoch_callback=live.on_epoch, step_callback=live.on_step)
    except typer.Exit:  # an expected failure, already reported in one line
        raise
    except KeyboardInterrupt:
        run_id = runs.last_run_id() or "RUN_ID"
        fail(f"interrupted; MLflow run {run_id} is marked KILLED with its last complete epoch's checkpoint; "
             f"continue it with `ocr train --resume {run_id}`", code=130)
    except Exception as exc:  # the run is already marked FAILED with the error as a tag
        fail(f"training failed ({type(exc).__name__}: {exc}); the MLflow run is marked FAILED")
    _write_outputs(result, metrics_out, plots_out)
    console.print(_summary_table(result))
    if store.offline_target():
        server = store.offline_target()
        console.print(f"[yellow]The tracking server {server} was unreachable:[/] run {result.run_id}, its model "
                      f"and metrics are stored locally in {store.offline_uri()}. When the server is back, "
                      f"copy them there with:\n  {store.sync_command(server)}", highlight=False)
        return
    link = reading.run_link(result.run_id, f"http://127.0.0.1:{UI_PORT}")
    console.print(f"MLflow store: {store.tracking_uri()}\nRun page (start the UI with `ocr ui`): {link}")


def ui(
    port: Annotated[int, typer.Option("--port", "-p", help="Port to listen on (127.0.0.1 only).")] = UI_PORT,
) -> None:
    """Start the MLflow UI on 127.0.0.1 against the project's tracking store (Ctrl-C stops it)."""
    from cnn_ocr.tracking import store

    uri = store.tracking_uri()
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1",
           "--port", str(port), "--workers", "1"]
    if uri == store.default_tracking_uri():
        cmd += ["--default-artifact-root", store.default_artifact_root().as_uri()]
    console.print(f"MLflow UI at http://127.0.0.1:{port} (store {uri}); Ctrl-C stops it.")
    signal.signal(signal.SIGTERM, _raise_interrupt)
    # The UI needs no background job runner (a pool of worker processes for server-side GenAI jobs).
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = subprocess.Popen(cmd, env=env)
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        code = _stop(proc)
    if code not in (0, -signal.SIGINT, -signal.SIGTERM, 130):
        fail(f"the MLflow UI exited with code {code} (is port {port} already in use? try --port)")


def _stop(proc: subprocess.Popen) -> int:
    """Stop the UI server (it shuts its workers down on SIGTERM); kill it if it hangs."""
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return 0


def sync() -> None:
    """Copy runs recorded offline (tracking server down) to MLFLOW_TRACKING_URI, once it answers again."""
    setup_logging()
    from cnn_ocr.tracking import offline, store

    with one_line_errors(ConnectionError, message="{error}; try again when it is back"):
        copied = offline.sync_offline()
    for old, new in copied:
        console.print(f"offline run {old} -> run {new} in {store.tracking_uri()}", highlight=False)
    console.print(f"{len(copied)} run(s) synced from {store.offline_uri()}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add `train`, `ui` and `sync` to the `ocr` app."""
    app.command("train")(train)
    app.command("ui")(ui)
    app.command("sync")(sync)
