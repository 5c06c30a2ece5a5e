"""The feedback store (SQLite, WAL) and its export as a DVC-tracked data version."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cnn_ocr.config import load_params
from cnn_ocr.feedback import (
    FeedbackError,
    FeedbackStore,
    InvalidFeedback,
    PredictionRecord,
    UnknownPrediction,
    export_feedback,
)

ROOT = Path(__file__).resolve().parents[1]


def record(pid: str, image: np.ndarray | None, digit: int | None = 7, kind: str = "digit") -> PredictionRecord:
    return PredictionRecord(pid, kind, image, digit, 0.9, "ok", "OCR-Production-Model", "3")


def digit_image(value: int) -> np.ndarray:
    img = np.zeros((28, 28), np.uint8)
    img[4:24, 10 + value % 5:14 + value % 5] = 200 + value
    return img


def test_store_survives_reopen_and_uses_wal(tmp_path):
    db = tmp_path / "fb.db"
    store = FeedbackStore(db)
    store.record_predictions([record("a", digit_image(1)), record("b", digit_image(2))])
    stored = store.add_feedback("a", 4)
    assert stored.predicted == 7 and stored.label == 4 and stored.model_version == "3"
    store.add_feedback("a", 9)  # a second correction replaces the first
    store.close()
    reopened = FeedbackStore(db)
    images, labels, versions = reopened.feedback_arrays()
    reopened.close()
    assert labels.tolist() == [9] and versions == ["3"] and np.array_equal(images[0], digit_image(1))
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_unknown_ids_labels_and_hostile_strings(tmp_path):
    store = FeedbackStore(tmp_path / "fb.db")
    store.record_predictions([record("ok", digit_image(3)), record("blank", None, digit=None),
                              record("row", None, digit=None, kind="read")])
    for pid, label, error in [("missing", 1, UnknownPrediction), ("ok", 10, InvalidFeedback),
                              ("ok", -1, InvalidFeedback), ("blank", 1, InvalidFeedback), ("row", 1, InvalidFeedback),
                              ("ok'; DROP TABLE feedback; --", 1, UnknownPrediction)]:
        with pytest.raises(error):
            store.add_feedback(pid, label)
    store.add_feedback("ok", 3)
    assert store.count_feedback() == 1
    store.close()


def test_old_predictions_expire(tmp_path, monkeypatch):
    import cnn_ocr.feedback as feedback

    monkeypatch.setattr(feedback, "_PRUNE_EVERY", 1)
    store = FeedbackStore(tmp_path / "fb.db", retention_s=0.001)
    store.record_predictions([record("old", digit_image(1))])
    time.sleep(0.01)
    store.record_predictions([record("new", digit_image(2))])
    with pytest.raises(FeedbackError):
        store.add_feedback("old", 1)
    store.close()


def test_export_writes_a_loadable_version(tmp_path):
    from cnn_ocr.data import load_version

    db = tmp_path / "fb.db"
    store = FeedbackStore(db)
    store.record_predictions([record(str(i), digit_image(i)) for i in range(5)])
    for i in range(5):
        store.add_feedback(str(i), i)
    store.close()
    processed = tmp_path / "processed"
    name, folder, count = export_feedback(db, processed)
    assert (name, count) == ("feedback-1", 5) and folder == processed / "feedback-1"
    splits = load_version(name, load_params().data.model_copy(update={"processed_dir": processed}))
    assert splits.train_x.shape == (5, 28, 28) and splits.train_x.dtype == np.uint8
    assert splits.train_y.tolist() == [0, 1, 2, 3, 4] and splits.train_y.dtype == np.int64
    assert splits.test_x.shape == (0, 28, 28) and splits.meta["kind"] == "feedback"
    assert np.array_equal(splits.train_x[3], digit_image(3))
    assert export_feedback(db, processed)[0] == "feedback-2"
    with pytest.raises(FeedbackError):
        export_feedback(tmp_path / "none.db", processed)


def test_cli_export_tracks_the_version_with_dvc(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "params.yaml").write_text((ROOT / "params.yaml").read_text())  # processed_dir: data/processed
    (project / ".gitignore").write_text("/data/processed\n/data/feedback\n")
    db = project / "data" / "feedback" / "fb.db"
    store = FeedbackStore(db)
    store.record_predictions([record("p", digit_image(5))])
    store.add_feedback("p", 5)
    store.close()
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=project, check=True)
    cli = [sys.executable, "-c", "from cnn_ocr.cli import app; app()", "feedback", "export", "--db", str(db)]
    done = subprocess.run(cli, cwd=project, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "feedback-1" in done.stdout and "tracked by DVC" in done.stdout
    dvc_file = (project / "data" / "feedback-1.dvc").read_text()
    assert "path: processed/feedback-1" in dvc_file and "md5:" in dvc_file
    status = subprocess.run([sys.executable, "-m", "dvc", "status", "data/feedback-1.dvc"], cwd=project,
                            capture_output=True, text=True, timeout=60)
    assert status.returncode == 0 and "up to date" in status.stdout.lower()
    empty = FeedbackStore(project / "empty.db")
    empty.close()
    again = subprocess.run([*cli[:-1], str(project / "empty.db")], cwd=project, capture_output=True, text=True,
                           timeout=60)
    assert again.returncode != 0 and len(again.stderr.strip().splitlines()) == 1
