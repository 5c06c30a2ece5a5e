"""The tracking package: where the store lives, experiments, git tags, run end states, and reading runs back."""

from __future__ import annotations

import re

import mlflow
import pytest
from mlflow import MlflowClient

from cnn_ocr.tracking import reading, runs, store, writing
from cnn_ocr.tracking.git import git_tags


class TrialPruned(Exception):
    """Stands in for optuna.TrialPruned: the tracking module recognises it by class name."""


def test_default_store_is_sqlite_in_the_project(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv(store.ARTIFACT_ROOT_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert store.tracking_uri() == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    assert store.artifact_root(store.tracking_uri()) == (tmp_path.resolve() / "mlartifacts").as_uri()


def test_environment_points_the_store_elsewhere(monkeypatch, tmp_path):
    monkeypatch.delenv(store.ARTIFACT_ROOT_ENV, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    assert store.tracking_uri() == "http://tracking.example:5000"
    assert store.artifact_root("http://tracking.example:5000") is None  # the server decides
    other = f"sqlite:///{tmp_path / 'x' / 'store.db'}"
    assert store.artifact_root(other) == (tmp_path / "x" / "mlartifacts").as_uri()


def test_experiments_are_created_once_with_the_artifact_root(tracking_uri, tmp_path):
    first = store.ensure_experiment(store.BASELINE_EXPERIMENT)
    assert store.ensure_experiment(store.BASELINE_EXPERIMENT) == first
    exp = MlflowClient(tracking_uri).get_experiment(first)
    assert exp.artifact_location == f"{(tmp_path / 'artifacts').resolve().as_uri()}/baseline-models"
    assert {store.FAMILY_EXPERIMENTS[f] for f in ("base_cnn", "svm", "improved_cnn")} == {
        "baseline-models", "improved-cnn"}
    assert store.TUNING_EXPERIMENT == "hyperparameter-tuning"


def test_git_tags_name_the_commit():
    tags = git_tags()
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
    assert git_tags()["git_dirty"] == "false"
    (tmp_path / "metrics" / "m.json").write_text('{"test_accuracy": 0.99}')  # a stage rewrote its metrics
    assert git_tags()["git_dirty"] == "false"
    (tmp_path / "train.py").write_text("x = 2\n")
    assert git_tags()["git_dirty"] == "true"


def _status(uri: str, run_id: str):
    run = MlflowClient(uri).get_run(run_id)
    return run.info.status, run.data.tags


def test_successful_run_is_finished(tracking_uri):
    with runs.tracked_run("t-ok", run_name="ok", tags={"family": "x"}) as run:
        writing.log_params({"a": 1, "b": None, "c": [1, 2]})
        writing.log_metrics({"m": 0.5}, step=1)
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
    with pytest.raises(type(exc)), runs.tracked_run("t-end") as run:
        raise exc
    got_status, tags = _status(tracking_uri, run.info.run_id)
    assert got_status == status and tags[tag] == value
    assert mlflow.active_run() is None


def test_nested_run_sits_under_its_parent(tracking_uri):
    with runs.tracked_run(store.TUNING_EXPERIMENT, run_name="study") as parent:
        with runs.tracked_run(store.TUNING_EXPERIMENT, run_name="trial-0", nested=True) as child:
            pass
        assert mlflow.active_run().info.run_id == parent.info.run_id
    status, tags = _status(tracking_uri, child.info.run_id)
    assert status == "FINISHED" and tags["mlflow.parentRunId"] == parent.info.run_id


def test_runs_are_read_back_as_one_record_shape(tracking_uri, tmp_path):
    with runs.tracked_run(store.BASELINE_EXPERIMENT, run_name="older", tags={"family": "svm"}) as older:
        writing.log_params({"c": 10})
        writing.log_metrics({"test_accuracy": 0.9})
    with runs.tracked_run(store.IMPROVED_EXPERIMENT, run_name="newer", tags={"family": "improved_cnn"}) as newer:
        writing.log_dict({"family": "improved_cnn"}, "params.json")
        writing.log_metrics({"test_accuracy": 0.99})
    record = reading.get_run(older.info.run_id)
    assert record == reading.RunRecord(older.info.run_id, store.BASELINE_EXPERIMENT, "older", "FINISHED",
                                       record.start_time, {"c": "10"}, {"test_accuracy": 0.9}, record.tags)
    assert record.tags["family"] == "svm" and record.start_time > 0
    found = reading.search_runs([store.IMPROVED_EXPERIMENT, "no-such-experiment", store.BASELINE_EXPERIMENT])
    assert [r.run_id for r in found] == [newer.info.run_id, older.info.run_id]  # newest first
    assert [r.experiment for r in found] == [store.IMPROVED_EXPERIMENT, store.BASELINE_EXPERIMENT]
    assert reading.search_runs(["no-such-experiment"]) == []
    assert reading.list_artifacts(newer.info.run_id) == ["params.json"]
    local = reading.download_artifacts(newer.info.run_id, "params.json", tmp_path / "new" / "folder")
    assert local.parent == tmp_path / "new" / "folder" and reading.load_run_dict(newer.info.run_id, "params.json") \
        == {"family": "improved_cnn"}


def test_an_unknown_run_is_a_store_error_naming_it(tracking_uri):
    with pytest.raises(store.StoreError, match="no run 'feedface' in the tracking store sqlite:///"):
        reading.get_run("feedface")


def test_importing_tracking_and_registry_loads_no_mlflow():
    """`import mlflow` costs seconds: fast commands import these modules and must not pay for it."""
    import subprocess
    import sys

    modules = ["cnn_ocr.tracking", *(f"cnn_ocr.tracking.{m}" for m in ("store", "git", "runs", "writing",
                                                                         "reading", "offline")), "cnn_ocr.registry"]
    code = f"import sys\nfor m in {modules!r}: __import__(m)\nprint(sorted(k for k in sys.modules if k.startswith('mlflow')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
