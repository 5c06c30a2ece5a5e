"""`ocr sync`: copying the runs recorded offline (tracking server down) to the server once it is back.

Runs land in the offline store when the server did not answer at their start or stopped answering while they
were open (`cnn_ocr.tracking.runs`). Each finished offline run is copied whole (tags, params, metric
histories, artifacts, logged model), marked `synced_to` so it is copied once, and the partial run a lost
server kept open is closed as FAILED, pointing at its complete copy.
"""

from __future__ import annotations

import os
from typing import Any

from cnn_ocr.tracking.store import MODEL_ARTIFACT, artifact_root, default_tracking_uri, offline_uri, store_reachable


def _target_experiment(src: Any, dst: Any, run: Any, target: str) -> str:
    """The id of the run's experiment in `dst`, created with the target's artifact root when missing."""
    name = src.get_experiment(run.info.experiment_id).name
    exp = dst.get_experiment_by_name(name)
    if exp:
        return exp.experiment_id
    root = artifact_root(target)
    return dst.create_experiment(name, artifact_location=f"{root}/{name}" if root else None)


def _copy_artifacts(src: Any, dst: Any, run: Any, new_id: str) -> None:
    """The run's artifacts and its last logged model (MLflow 3 keeps logged models apart from artifacts)."""
    import tempfile

    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        if src.list_artifacts(run.info.run_id):
            dst.log_artifacts(new_id, src.download_artifacts(run.info.run_id, "", tmp))
        outputs = getattr(run, "outputs", None)
        for model in (outputs.model_outputs if outputs and outputs.model_outputs else [])[-1:]:
            location = src.get_logged_model(model.model_id).artifact_location
            folder = mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=f"{tmp}/model")
            dst.log_artifacts(new_id, folder, MODEL_ARTIFACT)


def _copy_run(src: Any, dst: Any, run: Any, target: str) -> str:
    """Copy one finished offline run (tags, params, metric histories, artifacts, logged model) to `dst`."""
    from mlflow.entities import Metric, Param

    tags = {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.") or k == "mlflow.note.content"}
    new = dst.create_run(_target_experiment(src, dst, run, target), start_time=run.info.start_time,
                         run_name=run.info.run_name, tags={**tags, "synced_from_offline_run": run.info.run_id})
    params = [Param(k, v) for k, v in run.data.params.items()]
    for i in range(0, len(params), 100):
        dst.log_batch(new.info.run_id, params=params[i:i + 100])
    for key in run.data.metrics:
        history = [Metric(m.key, m.value, m.timestamp, m.step) for m in src.get_metric_history(run.info.run_id, key)]
        for i in range(0, len(history), 1000):
            dst.log_batch(new.info.run_id, metrics=history[i:i + 1000])
    _copy_artifacts(src, dst, run, new.info.run_id)
    dst.set_terminated(new.info.run_id, run.info.status, end_time=run.info.end_time)
    _close_partial(dst, run.data.tags.get("server_run_id"), new.info.run_id)
    src.set_tag(run.info.run_id, "synced_to", f"{target} run {new.info.run_id}")
    return new.info.run_id


def _close_partial(dst: Any, server_run_id: str | None, complete_id: str) -> None:
    """The run a lost server kept open (it never heard the end): FAILED, pointing at its complete copy."""
    if not server_run_id:
        return
    try:
        partial = dst.get_run(server_run_id)
    except Exception:  # not on this server (synced elsewhere, or deleted)
        return
    if partial.info.status == "RUNNING":
        dst.set_tag(server_run_id, "continued_as", complete_id)
        dst.set_tag(server_run_id, "error", f"tracking server lost mid-run; the complete run is {complete_id}")
        dst.set_terminated(server_run_id, "FAILED")


def sync_offline(target: str | None = None) -> list[tuple[str, str]]:
    """Copy every finished, not yet synced offline run to `target` (default: `MLFLOW_TRACKING_URI`).

    Returns (offline run id, new run id) pairs. Raises ConnectionError while the target is unreachable.
    """
    from mlflow import MlflowClient

    target = target or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()
    if not store_reachable(target):
        raise ConnectionError(f"tracking server {target} is still unreachable; nothing was synced")
    src, dst = MlflowClient(offline_uri()), MlflowClient(target)
    copied = []
    for exp in src.search_experiments():
        for run in src.search_runs([exp.experiment_id], max_results=10_000):
            if run.info.status != "RUNNING" and "synced_to" not in run.data.tags:
                copied.append((run.info.run_id, _copy_run(src, dst, run, target)))
    return copied
