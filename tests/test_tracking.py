"""The tracking module: where the store lives, experiments, git tags, and run end states."""

from __future__ import annotations

import re

import mlflow
import pytest
from mlflow import MlflowClient

from cnn_ocr import tracking


class TrialPruned(Exception):
    """Stands in for optuna.TrialPruned: the tracking module recognises it by class name."""


def test_default_store_is_sqlite_in_the_project(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv(tracking.ARTIFACT_ROOT_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert tracking.tracking_uri() == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    assert tracking._artifact_root(tracking.tracking_uri()) == (tmp_path.resolve() / "mlartifacts").as_uri()


def test_environment_points_the_store_elsewhere(monkeypatch, tmp_path):
    monkeypatch.delenv(tracking.ARTIFACT_ROOT_ENV, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    assert tracking.tracking_uri() == "http://tracking.example:5000"
    assert tracking._artifact_root("http://tracking.example:5000") is None  # the server decides
    other = f"sqlite:///{tmp_path / 'x' / 'store.db'}"
    assert tracking._artifact_root(other) == (tmp_path / "x" / "mlartifacts").as_uri()


def test_experiments_are_created_once_with_the_artifact_root(tracking_uri, tmp_path):
    first = tracking.ensure_experiment(tracking.BASELINE_EXPERIMENT)
    assert tracking.ensure_experiment(tracking.BASELINE_EXPERIMENT) == first
    exp = MlflowClient(tracking_uri).get_experiment(first)
    assert exp.artifact_location == f"{(tmp_path / 'artifacts').resolve().as_uri()}/baseline-models"
    assert {tracking.FAMILY_EXPERIMENTS[f] for f in ("base_cnn", "svm", "improved_cnn")} == {
        "baseline-models", "improved-cnn"}
    assert tracking.TUNING_EXPERIMENT == "hyperparameter-tuning"


def test_git_tags_name_the_commit():
    tags = tracking.git_tags()
    assert re.fullmatch(r"[0-9a-f]{40}", tags["git_commit"])
    assert tags["git_dirty"] in {"true", "false"}


def test_git_dirty_counts_code_changes_not_the_pipeline_outputs(tmp_path, monkeypatch):
    import subprocess

    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "m.json").write_text("{}")
    (tmp_path / "train.py").write_text("x = 1\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "init")
    monkeypatch.chdir(tmp_path)
    assert tracking.git_tags()["git_dirty"] == "false"
    (tmp_path / "metrics" / "m.json").write_text('{"test_accuracy": 0.99}')  # a stage rewrote its metrics
    assert tracking.git_tags()["git_dirty"] == "false"
    (tmp_path / "train.py").write_text("x = 2\n")
    assert tracking.git_tags()["git_dirty"] == "true"


def _status(uri: str, run_id: str):
    run = MlflowClient(uri).get_run(run_id)
    return run.info.status, run.data.tags


def test_successful_run_is_finished(tracking_uri):
    with tracking.tracked_run("t-ok", run_name="ok", tags={"family": "x"}) as run:
        tracking.log_params({"a": 1, "b": None, "c": [1, 2]})
        tracking.log_metrics({"m": 0.5}, step=1)
    status, tags = _status(tracking_uri, run.info.run_id)
    assert status == "FINISHED" and tags["family"] == "x"
    assert MlflowClient(tracking_uri).get_run(run.info.run_id).data.params == {"a": "1", "b": "null", "c": "[1, 2]"}
    assert mlflow.active_run() is None


@pytest.mark.parametrize(
    ("exc", "status", "tag", "value"),
    [
        (RuntimeError("disk on fire"), "FAILED", "error", "RuntimeError: disk on fire"),
        (KeyboardInterrupt(), "KILLED", "interrupted", "true"),
        (TrialPruned("pruned at epoch 2"), "KILLED", "pruned", "true"),
    ],
)
def test_run_end_state_follows_the_exception(tracking_uri, exc, status, tag, value):
    with pytest.raises(type(exc)), tracking.tracked_run("t-end") as run:
        raise exc
    got_status, tags = _status(tracking_uri, run.info.run_id)
    assert got_status == status and tags[tag] == value
    assert mlflow.active_run() is None


def test_nested_run_sits_under_its_parent(tracking_uri):
    with tracking.tracked_run(tracking.TUNING_EXPERIMENT, run_name="study") as parent:
        with tracking.tracked_run(tracking.TUNING_EXPERIMENT, run_name="trial-0", nested=True) as child:
            pass
        assert mlflow.active_run().info.run_id == parent.info.run_id
    status, tags = _status(tracking_uri, child.info.run_id)
    assert status == "FINISHED" and tags["mlflow.parentRunId"] == parent.info.run_id
