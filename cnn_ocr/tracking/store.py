"""Where the tracking store is: its URI, where artifacts go, the offline store, reachability, experiments.

Default store: `sqlite:///<project>/mlflow.db` with artifacts in `<project>/mlartifacts` (both git-ignored);
no server needed. `MLFLOW_TRACKING_URI` points it anywhere else (a remote `mlflow server`, DAGsHub,
Databricks) with no code change; `OCR_MLFLOW_ARTIFACT_ROOT` overrides where new experiments keep artifacts.
When an HTTP server cannot be reached, this process's runs go to a local offline store instead
(`OCR_MLFLOW_OFFLINE_DIR`); `ocr sync` copies them over later (`cnn_ocr.tracking.offline`).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cnn_ocr.families import BASELINE_EXPERIMENT, FAMILY_EXPERIMENTS, IMPROVED_EXPERIMENT  # noqa: F401 (re-read here)
from cnn_ocr.project import project_root

log = logging.getLogger(__name__)

TUNING_EXPERIMENT = "hyperparameter-tuning"
RECIPES_EXPERIMENT = "training-recipes"  # the recipe benchmark: one run per (recipe, seed)
ARTIFACT_ROOT_ENV = "OCR_MLFLOW_ARTIFACT_ROOT"
OFFLINE_DIR_ENV = "OCR_MLFLOW_OFFLINE_DIR"
MODEL_ARTIFACT = "model"  # artifact path of a run's logged model
MAX_TAG_LEN = 5000  # a run tag holds 5000 characters in MLflow's SQL schema

# MLflow retries a refused HTTP connection 7 times with exponential backoff (about 2 minutes per call);
# a server that is down should cost a training run seconds, not minutes. MLflow's own variables still win.
HTTP_RETRY_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                       "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}

# The unreachable server this process's runs were meant for, once it went offline.
_OFFLINE: dict[str, str | None] = {"for": None}


class StoreError(RuntimeError):
    """A tracking-store request that cannot be served (e.g. an unknown run); the message says what to do."""


def default_tracking_uri() -> str:
    """The embedded store: a sqlite file at the project root."""
    return f"sqlite:///{project_root() / 'mlflow.db'}"


def default_artifact_root() -> Path:
    """Artifacts of the embedded store."""
    return project_root() / "mlartifacts"


def tracking_uri() -> str:
    """`MLFLOW_TRACKING_URI` when set, else the embedded default; the offline store after `go_offline`."""
    if _OFFLINE["for"]:
        return offline_uri()
    return os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def offline_uri() -> str:
    """The local store that takes runs while the tracking server is down (`OCR_MLFLOW_OFFLINE_DIR`)."""
    folder = Path(os.environ.get(OFFLINE_DIR_ENV) or project_root() / "outputs" / "offline-tracking")
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder.resolve() / 'mlflow.db'}"


def offline_target() -> str | None:
    """The unreachable server this process's runs are meant for, when it went offline."""
    return _OFFLINE["for"]


def sync_command(server: str) -> str:
    """The exact command that copies the offline runs to `server` once it is back."""
    return f"MLFLOW_TRACKING_URI={server} ocr sync"


def go_offline(server: str) -> None:
    """Send this process's runs to the local offline store and say how to sync them later."""
    _OFFLINE["for"] = server
    log.warning("tracking server %s is unreachable; recording runs locally in %s; when it is back, run: %s",
                server, offline_uri(), sync_command(server))


def store_reachable(uri: str, timeout_s: float = 5.0) -> bool:
    """False only for an HTTP(S) tracking server that does not answer; other stores are local or managed."""
    if not uri.startswith(("http://", "https://")):
        return True
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s):
            return True
    except urllib.error.HTTPError:
        return True  # it answered
    except (OSError, ValueError):
        return False


def artifact_root(uri: str) -> str | None:
    """Where a new experiment of the store at `uri` keeps artifacts; None lets a remote server decide."""
    if os.environ.get(ARTIFACT_ROOT_ENV):
        return Path(os.environ[ARTIFACT_ROOT_ENV]).resolve().as_uri()
    if uri == default_tracking_uri():
        return default_artifact_root().as_uri()
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).resolve().parent / "mlartifacts").as_uri()
    return None


def configure() -> str:
    """Point the MLflow client at the store; returns the URI."""
    import mlflow

    uri = tracking_uri()
    if uri.startswith(("http://", "https://")):
        for key, value in HTTP_RETRY_DEFAULTS.items():
            os.environ.setdefault(key, value)
    mlflow.set_tracking_uri(uri)
    return uri


def client() -> Any:
    """An `MlflowClient` of the configured store (no progress bars in command output)."""
    from mlflow import MlflowClient

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    return MlflowClient(configure())


@contextlib.contextmanager
def first_use_lock(uri: str) -> Iterator[None]:
    """Hold an exclusive lock beside a SQLite store (`<db>.lock`) while it may be created.

    MLflow creates a fresh SQLite store's tables on first use; two processes doing so at once (two tuning
    workers on a new store) can leave it half made, and every later attempt fails on "table already exists".
    Other stores need no lock: a server or database creates its schema once.
    """
    if not uri.startswith("sqlite:///"):
        yield
        return
    lock = Path(uri.removeprefix("sqlite:///") + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_experiment(name: str) -> str:
    """The id of experiment `name`, created (with the store's artifact root) when missing."""
    from mlflow import MlflowClient

    uri = configure()
    with first_use_lock(uri):
        mlflow_client = MlflowClient(uri)
        exp = mlflow_client.get_experiment_by_name(name)
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                mlflow_client.restore_experiment(exp.experiment_id)
            return exp.experiment_id
        root = artifact_root(uri)
        location = f"{root}/{name}" if root else None
        return mlflow_client.create_experiment(name, artifact_location=location)
