"""`ocr serve` (the web service) and `ocr feedback export` (corrections -> a DVC-tracked data version)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from cnn_ocr.cli.common import (
    ParamsOpt,
    SetOpt,
    console,
    one_line_errors,
    params_or_fail,
    served_model,
    service_settings,
    setup_logging,
)

feedback_app = typer.Typer(help="User corrections collected by the service.", no_args_is_help=True)

LOG_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"}},
    "loggers": {"uvicorn.access": {"level": "WARNING"}},
    "root": {"level": "INFO", "handlers": ["stderr"]},
}


def _preflight(settings) -> str:
    """Find and load the model once before starting, so a missing model is one clear line."""
    candidate, model = served_model(settings)
    return f"{model.info.name} version {model.info.version} from {candidate.source}"


def serve(
    host: Annotated[str, typer.Option("--host", help="Address to bind (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option("--workers", min=1, max=64, help="Worker processes.")] = 1,
    model_path: Annotated[Path | None, typer.Option("--model-path", help="Serve this folder (model.onnx + "
                                                    "spec.json) instead of the registry; sets OCR_MODEL_PATH.")] = None,
) -> None:
    """Start the OCR web service (page at /, API docs at /docs). Settings: OCR_* environment variables."""
    import uvicorn

    if model_path is not None:
        os.environ["OCR_MODEL_PATH"] = str(model_path)
    settings = service_settings()
    if not settings.allow_start_without_model:
        console.print(f"model: {_preflight(settings)}", highlight=False)
    shown = f"[{host}]" if ":" in host else host
    console.print(f"OCR service on http://{shown}:{port}/ (API docs at /docs); Ctrl+C stops it.", highlight=False)
    # uvicorn stops gracefully on SIGTERM / Ctrl+C (no new connections, requests in flight finish), then
    # re-raises the signal into the handler it found: make that a no-op so a clean stop exits 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stopped)
    uvicorn.run("app.main:app", host=host, port=port, workers=workers, log_config=LOG_CONFIG, access_log=False,
                proxy_headers=False, timeout_graceful_shutdown=20)


def _stopped(signum: int, frame: object) -> None:
    """The signal uvicorn re-raises after its graceful shutdown; nothing is left to do."""


def _track_with_dvc(folder: Path) -> str:
    """Write `data/<name>.dvc` for the folder and let DVC hash and cache it; returns what happened."""
    if not Path(".dvc").is_dir():
        return "not tracked: no DVC repository here (run `dvc init`)"
    dvc_file = Path("data") / f"{folder.name}.dvc"
    rel = os.path.relpath(folder.resolve(), dvc_file.parent.resolve())
    dvc_file.write_text(f"outs:\n- path: {rel}\n")
    done = subprocess.run([sys.executable, "-m", "dvc", "commit", "-f", "-q", str(dvc_file)], capture_output=True, text=True)
    if done.returncode != 0:
        dvc_file.unlink(missing_ok=True)
        return f"not tracked: `dvc commit` failed ({(done.stderr or done.stdout).strip().splitlines()[-1:]})"
    return f"tracked by DVC in {dvc_file} (add it to git: git add {dvc_file})"


@feedback_app.command("export")
def export(
    db: Annotated[str | None, typer.Option("--db", help="Feedback database: a SQLite file or a postgresql:// URL "
                                           "(default: OCR_FEEDBACK_DB).")] = None,
    dvc: Annotated[bool, typer.Option("--dvc/--no-dvc", help="Track the new version with DVC.")] = True,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Write all stored corrections as a new data version `data/processed/feedback-<n>` (npy + meta.json): digit
    corrections as its train split, "not a digit" corrections as `negatives_x.npy`."""
    from cnn_ocr.feedback import FeedbackError, export_feedback

    setup_logging()
    p = params_or_fail(params, set_)
    db_path = db or service_settings().feedback_db
    with one_line_errors(FeedbackError, message="nothing to export: {error}"):
        name, folder, count = export_feedback(db_path, p.data.processed_dir)
    console.print(f"{count} corrections -> {folder} (data version {name!r})", highlight=False)
    if dvc:
        console.print(_track_with_dvc(folder), highlight=False)


def register(app: typer.Typer) -> None:
    """Add `serve` and `feedback` to the `ocr` command."""
    app.command("serve")(serve)
    app.add_typer(feedback_app, name="feedback")
