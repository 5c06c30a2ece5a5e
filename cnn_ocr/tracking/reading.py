"""Reading runs back: the one place a tracked run is read, as a `RunRecord` of plain values.

Also the run's artifacts (listed, downloaded, a JSON one parsed), its logged model, and its page in the UI.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnn_ocr.tracking.store import MODEL_ARTIFACT, StoreError, client, configure, tracking_uri


@dataclass(frozen=True)
class RunRecord:
    """A tracked run as plain values."""

    run_id: str
    experiment: str
    name: str
    status: str
    start_time: int
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]


def _record(run: Any, experiment: str) -> RunRecord:
    return RunRecord(run.info.run_id, experiment, run.info.run_name or "", run.info.status,
                     int(run.info.start_time or 0), dict(run.data.params), dict(run.data.metrics),
                     dict(run.data.tags))


def get_run(run_id: str) -> RunRecord:
    """One run by id; `StoreError` if the store does not have it."""
    from mlflow.exceptions import MlflowException

    mlflow_client = client()
    try:
        run = mlflow_client.get_run(run_id)
    except MlflowException:
        raise StoreError(f"no run {run_id!r} in the tracking store {tracking_uri()}") from None
    return _record(run, mlflow_client.get_experiment(run.info.experiment_id).name)


def search_runs(experiments: list[str], filter_string: str = "") -> list[RunRecord]:
    """Runs of the named experiments (missing experiments are skipped), newest first."""
    mlflow_client = client()
    exps = {e.experiment_id: e.name for n in experiments if (e := mlflow_client.get_experiment_by_name(n))}
    if not exps:
        return []
    runs = mlflow_client.search_runs(list(exps), filter_string=filter_string, max_results=5000,
                                     order_by=["attributes.start_time DESC"])
    return [_record(r, exps[r.info.experiment_id]) for r in runs]


def list_artifacts(run_id: str, path: str | None = None) -> list[str]:
    """Artifact paths directly under `path` of a run."""
    return [a.path for a in client().list_artifacts(run_id, path)]


def download_artifacts(run_id: str, path: str, dest: Path) -> Path:
    """Copy a run artifact (file or folder) into folder `dest`; returns the local path."""
    Path(dest).mkdir(parents=True, exist_ok=True)
    return Path(client().download_artifacts(run_id, path, str(dest)))


def load_run_dict(run_id: str, path: str) -> dict[str, Any]:
    """A JSON artifact of a run (e.g. params.json)."""
    import mlflow

    configure()
    return mlflow.artifacts.load_dict(f"runs:/{run_id}/{path}")


def load_model(run_id: str) -> Any:
    """Load a run's logged model in its native flavor (torch module or sklearn estimator)."""
    import mlflow

    configure()
    uri = f"runs:/{run_id}/{MODEL_ARTIFACT}"
    flavors = mlflow.models.get_model_info(uri).flavors
    if "pytorch" in flavors:
        import mlflow.pytorch

        return mlflow.pytorch.load_model(uri, map_location="cpu")
    import mlflow.sklearn

    return mlflow.sklearn.load_model(uri)


def run_link(run_id: str, ui_base: str) -> str:
    """The run's page in an MLflow UI at `ui_base` (experiment looked up in the store)."""
    run = client().get_run(run_id)
    return f"{ui_base}/#/experiments/{run.info.experiment_id}/runs/{run_id}"
