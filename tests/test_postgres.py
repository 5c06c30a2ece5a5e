"""One real PostgreSQL shared by everything: the feedback store, two `ocr serve` replicas, two tuning workers on
one Optuna study, and an MLflow tracking server's backend store; the database going down and coming back."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import psycopg
import pytest
from live_server import ROOT, free_port

from app.errors import status_for
from cnn_ocr.config import load_params
from cnn_ocr.feedback import (
    FeedbackStore,
    InvalidFeedback,
    PredictionRecord,
    StoreUnavailable,
    UnknownPrediction,
    export_feedback,
)

OCR = [sys.executable, "-c", "from cnn_ocr.cli import app; app()"]


def record(pid: str, image: np.ndarray | None, digit: int | None = 7, kind: str = "digit") -> PredictionRecord:
    return PredictionRecord(pid, kind, image, digit, 0.9, "ok", "OCR-Production-Model", "3")


def digit_image(value: int) -> np.ndarray:
    img = np.zeros((28, 28), np.uint8)
    img[4:24, 10 + value % 5:14 + value % 5] = 200 + value
    return img


@contextmanager
def database_down(postgres):
    """Stop the server for the body of the block; start it again afterwards, whatever happens."""
    postgres.stop()
    try:
        yield
    finally:
        postgres.start()


def test_store_on_postgres_behaves_like_the_embedded_one(postgres, tmp_path):
    url = postgres.new_database("fb")
    store = FeedbackStore(url)
    store.record_predictions([record("a", digit_image(1)), record("b", digit_image(2)),
                              record("blank", None, digit=None), record("row", None, digit=None, kind="read")])
    store.record_predictions([record("b", digit_image(3))])  # the same id again replaces the row
    assert store.add_feedback("a", 4).predicted == 7
    store.add_feedback("a", 9)  # a second correction replaces the first
    store.add_feedback("b", 3)
    for pid, label, error in [("missing", 1, UnknownPrediction), ("a", 10, InvalidFeedback),
                              ("blank", 1, InvalidFeedback), ("row", 1, InvalidFeedback),
                              ("a'; DROP TABLE feedback; --", 1, UnknownPrediction)]:
        with pytest.raises(error):
            store.add_feedback(pid, label)
    store.close()

    other = FeedbackStore(url)  # another process's view: same rows
    images, labels, versions = other.feedback_arrays()
    assert labels.tolist() == [9, 3] and versions == ["3", "3"]
    assert np.array_equal(images[0], digit_image(1)) and np.array_equal(images[1], digit_image(3))
    other.close()
    name, folder, count = export_feedback(url, tmp_path / "processed")
    assert (name, count) == ("feedback-1", 2) and (folder / "meta.json").is_file()


def test_store_reports_the_database_down_and_recovers_by_itself(postgres):
    url = postgres.new_database("down")
    store = FeedbackStore(url)
    store.record_predictions([record("before", digit_image(1))])
    with database_down(postgres):
        with pytest.raises(StoreUnavailable) as info:
            store.record_predictions([record("during", digit_image(2))])
        assert "\n" not in str(info.value) and status_for(info.value) == 503
        with pytest.raises(StoreUnavailable):
            store.add_feedback("before", 1)
    store.add_feedback("before", 1)  # the same store object, nothing reopened
    store.record_predictions([record("after", digit_image(2))])
    store.add_feedback("after", 2)
    assert store.count_feedback() == 2
    store.close()


def test_store_opened_while_the_database_is_down_starts_working_when_it_returns(postgres):
    url = postgres.new_database("late")
    with database_down(postgres):
        store = FeedbackStore(url)
        with pytest.raises(StoreUnavailable):
            store.count_feedback()
    assert store.count_feedback() == 0
    store.close()


# ---------------------------------------------------------------- two service replicas

@contextmanager
def serve_replicas(env: dict[str, str], tmp_path: Path, n: int = 2):
    """`n` `ocr serve` processes on their own ports; yields their base URLs; SIGTERM at the end."""
    procs, bases = [], []
    try:
        for i in range(n):
            port, log_path = free_port(), tmp_path / f"serve-{i}.log"
            with open(log_path, "wb") as log:
                procs.append(subprocess.Popen([*OCR, "serve", "--port", str(port)], cwd=ROOT, stdout=log,
                                              stderr=subprocess.STDOUT,
                                              env={**os.environ, "OCR_RELOAD_INTERVAL_S": "0", **env}))
            bases.append(f"http://127.0.0.1:{port}")
        for proc, base, i in zip(procs, bases, range(n), strict=True):
            deadline = time.monotonic() + 90
            while not _healthy(base):
                assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / f"serve-{i}.log").read_text()
                time.sleep(0.2)
        yield bases
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)


def _healthy(base: str) -> bool:
    try:
        return httpx.get(f"{base}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _unrecorded(base: str) -> float:
    found = re.search(r"^ocr_predictions_unrecorded_total (\S+)$", httpx.get(f"{base}/metrics").text, re.M)
    assert found, "the counter of unrecorded predictions is missing from /metrics"
    return float(found.group(1))


def _predict(base: str, pixels: list) -> dict:
    reply = httpx.post(f"{base}/predict", json={"pixels": pixels}, timeout=30)
    assert reply.status_code == 200, reply.text
    return reply.json()


@pytest.mark.api
def test_two_replicas_share_predictions_and_feedback(postgres, service_model_dir, mnist_splits, tmp_path):
    url = postgres.new_database("serve")
    env = {"OCR_MODEL_PATH": str(service_model_dir), "OCR_FEEDBACK_DB": url}
    digits = [x.tolist() for x in mnist_splits.test_x[:4]]
    with serve_replicas(env, tmp_path) as (one, two):
        first = _predict(one, digits[0])
        fixed = httpx.post(f"{two}/feedback", json={"prediction_id": first["prediction_id"], "label": 3}, timeout=30)
        assert fixed.status_code == 200, fixed.text
        assert fixed.json()["predicted"] == first["digit"] and fixed.json()["label"] == 3
        second = _predict(two, digits[1])
        assert httpx.post(f"{one}/feedback", json={"prediction_id": second["prediction_id"],
                                                   "label": int(mnist_splits.test_y[1])}).status_code == 200

        before = _unrecorded(one)
        with database_down(postgres):
            during = _predict(one, digits[2])  # answers still go out
            assert during["digit"] == int(mnist_splits.test_y[2])
            assert _unrecorded(one) == before + 1
            refused = httpx.post(f"{two}/feedback", json={"prediction_id": first["prediction_id"], "label": 5})
            assert refused.status_code == 503, refused.text
            assert len(refused.text.splitlines()) == 1 and "unreachable" in refused.json()["detail"]
        after = _predict(two, digits[3])  # both recover without a restart
        assert httpx.post(f"{one}/feedback", json={"prediction_id": after["prediction_id"],
                                                   "label": 8}).status_code == 200
        assert _unrecorded(two) == 0 and _unrecorded(one) == before + 1
        lost = httpx.post(f"{one}/feedback", json={"prediction_id": during["prediction_id"], "label": 1})
        assert lost.status_code == 404  # the answer given while the database was down was never stored

    processed = tmp_path / "processed"
    done = subprocess.run([*OCR, "feedback", "export", "--db", url, "--no-dvc", "--set",
                           f"data.processed_dir={processed}"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    from cnn_ocr.data import load_version

    exported = load_version("feedback-1", load_params().data.model_copy(update={"processed_dir": processed}))
    assert exported.train_y.tolist() == [3, int(mnist_splits.test_y[1]), 8]
    assert exported.train_x.shape == (3, 28, 28) and exported.train_x.reshape(3, -1).max(axis=1).min() > 0  # inked


# ---------------------------------------------------------------- Optuna and MLflow on the same server

@pytest.mark.slow
def test_two_tuning_workers_share_one_study_on_postgres(postgres, tiny_overrides, tmp_path):
    import optuna

    from cnn_ocr.database import sqlalchemy_url

    storage = postgres.new_database("optuna")
    sets = [*tiny_overrides, "tune.fixed.base_cnn={epochs: 1}", f"tune.best_params_file={tmp_path / 'best.yaml'}"]
    cmd = [*OCR, "tune", "--model", "base_cnn", "--trials", "2", "--no-final", "--study", "shared",
           "--storage", storage, *sum((["--set", s] for s in sets), [])]
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
           "OCR_MLFLOW_ARTIFACT_ROOT": str(tmp_path / "artifacts")}
    workers = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for _ in range(2)]
    outputs = [w.communicate(timeout=400)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    trials = optuna.load_study(study_name="shared", storage=sqlalchemy_url(storage)).trials
    assert sorted(t.number for t in trials) == [0, 1, 2, 3] and all(t.state.is_finished() for t in trials)
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 4
    with psycopg.connect(storage) as conn:  # the trials really live in PostgreSQL
        assert conn.execute("SELECT count(*) FROM trials").fetchone()[0] == 4


@pytest.mark.slow
def test_training_logs_to_an_mlflow_server_backed_by_postgres(postgres, tiny_overrides, tmp_path):
    from mlflow import MlflowClient

    url = postgres.new_database("mlflow")
    port, log_path = free_port(), tmp_path / "mlflow.log"
    backend = url.replace("postgresql://", "postgresql+psycopg://")
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend, "--host", "127.0.0.1",
             "--port", str(port), "--workers", "1", "--artifacts-destination", str(tmp_path / "artifacts")],
            cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    tracking = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while not _mlflow_up(tracking):
            assert server.poll() is None and time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.5)
        env = {k: v for k, v in os.environ.items() if k != "OCR_MLFLOW_ARTIFACT_ROOT"}
        env.update(MLFLOW_TRACKING_URI=tracking, OCR_CHECKPOINT_DIR=str(tmp_path / "ckpt"))
        out = tmp_path / "metrics.json"
        done = subprocess.run([*OCR, "train", "--model", "base_cnn", *sum((["--set", s] for s in tiny_overrides), []),
                               "--metrics-out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=400)
        assert done.returncode == 0, done.stderr[-3000:]
        client = MlflowClient(tracking)
        runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
        assert len(runs) == 1 and runs[0].info.status == "FINISHED"
        assert runs[0].data.metrics["test_accuracy"] == pytest.approx(json.loads(out.read_text())["test_accuracy"])
        with psycopg.connect(url) as conn:  # the run is a row of the PostgreSQL store
            stored = conn.execute("SELECT status FROM runs WHERE run_uuid = %s", (runs[0].info.run_id,)).fetchone()
        assert stored == ("FINISHED",)
    finally:
        server.terminate()
        server.wait(timeout=30)


def _mlflow_up(base: str) -> bool:
    try:
        return httpx.get(f"{base}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
