"""Durable store of predictions and user corrections (SQLite, WAL), and its export as a dataset version.

Every served prediction is kept for a while (its 28x28 input, answer and model version) so a later
correction can refer to it by id from any worker process. A correction copies the input next to the
corrected label, so it outlives the prediction's retention. All SQL is parameterised.
`export_feedback` turns the corrections into `data/processed/feedback-<n>`: the same npy + meta.json
layout as the other versions (train split = corrections; validation and test empty).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnn_ocr.preprocess import IMAGE_SIZE, preprocessing_spec

log = logging.getLogger(__name__)

_PIXELS = IMAGE_SIZE * IMAGE_SIZE
_PRUNE_EVERY = 500
_SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    id TEXT PRIMARY KEY, created_at REAL NOT NULL, kind TEXT NOT NULL, image BLOB,
    digit INTEGER, confidence REAL, status TEXT NOT NULL, model_name TEXT, model_version TEXT);
CREATE INDEX IF NOT EXISTS predictions_created ON predictions (created_at);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT, prediction_id TEXT NOT NULL UNIQUE, label INTEGER NOT NULL,
    image BLOB NOT NULL, predicted INTEGER, confidence REAL, model_name TEXT, model_version TEXT,
    predicted_at REAL, created_at REAL NOT NULL);
"""


class FeedbackError(ValueError):
    """Feedback that cannot be stored or exported; the message is one sentence saying why."""


class UnknownPrediction(FeedbackError):
    """The prediction id was never issued, or its prediction has expired."""


class InvalidFeedback(FeedbackError):
    """A correction that cannot apply to its prediction (label out of range, no single digit to correct)."""


class NoFeedback(FeedbackError):
    """There are no stored corrections to export."""


@dataclass(frozen=True)
class PredictionRecord:
    """One served answer, as remembered for feedback. `image` is the 28x28 uint8 input (None: no digit)."""

    id: str
    kind: str
    image: np.ndarray | None
    digit: int | None
    confidence: float
    status: str
    model_name: str
    model_version: str


@dataclass(frozen=True)
class FeedbackRecord:
    """A stored correction."""

    prediction_id: str
    label: int
    predicted: int | None
    model_version: str | None
    created_at: float


class FeedbackStore:
    """Thread-safe access to the SQLite file (one connection, WAL, serialised by a lock)."""

    def __init__(self, path: Path, retention_s: float = 7 * 24 * 3600) -> None:
        self.path = Path(path)
        self.retention_s = retention_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._inserts = 0
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=10.0, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # with WAL: a commit survives a killed process
        self._db.execute("PRAGMA busy_timeout=10000")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        """Checkpoint and close the database."""
        with self._lock:
            self._db.close()

    def record_predictions(self, records: list[PredictionRecord]) -> None:
        """Remember served answers (one transaction), pruning expired ones now and then."""
        now = time.time()
        rows = [(r.id, now, r.kind, None if r.image is None else _to_blob(r.image), r.digit, r.confidence,
                 r.status, r.model_name, r.model_version) for r in records]
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO predictions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            self._inserts += len(rows)
            if self._inserts >= _PRUNE_EVERY:
                self._inserts = 0
                self._db.execute("DELETE FROM predictions WHERE created_at < ?", (now - self.retention_s,))
            self._db.execute("COMMIT")

    def add_feedback(self, prediction_id: str, label: int) -> FeedbackRecord:
        """Store the right label for a prediction (a second correction replaces the first)."""
        if not 0 <= label <= 9:
            raise InvalidFeedback("label must be a digit from 0 to 9.")
        with self._lock:
            row = self._db.execute(
                "SELECT kind, image, digit, confidence, model_name, model_version, created_at FROM predictions "
                "WHERE id = ?", (prediction_id,)).fetchone()
            if row is None:
                raise UnknownPrediction("Unknown prediction_id: it was never issued or has expired.")
            kind, image, digit, confidence, model_name, model_version, predicted_at = row
            if kind != "digit":
                raise InvalidFeedback("This prediction covers several digits; send feedback with the "
                                    "prediction_id of one digit.")
            if image is None:
                raise InvalidFeedback("No digit was found in this input, so there is nothing to correct.")
            now = time.time()
            self._db.execute(
                "INSERT INTO feedback (prediction_id, label, image, predicted, confidence, model_name, "
                "model_version, predicted_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(prediction_id) DO UPDATE SET label = excluded.label, created_at = excluded.created_at",
                (prediction_id, label, image, digit, confidence, model_name, model_version, predicted_at, now))
        return FeedbackRecord(prediction_id, label, digit, model_version, now)

    def feedback_arrays(self) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """All corrections in insertion order: images uint8 (N, 28, 28), labels int64 (N,), model versions."""
        with self._lock:
            rows = self._db.execute("SELECT image, label, model_version FROM feedback ORDER BY id").fetchall()
        images = np.stack([_from_blob(r[0]) for r in rows]) if rows else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE),
                                                                                    np.uint8)
        return images, np.asarray([r[1] for r in rows], dtype=np.int64), [str(r[2]) for r in rows]

    def count_feedback(self) -> int:
        """How many corrections are stored."""
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM feedback").fetchone()[0])


def _to_blob(image: np.ndarray) -> bytes:
    arr = np.ascontiguousarray(image, dtype=np.uint8)
    if arr.shape != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"expected a 28x28 image, got {arr.shape}")
    return arr.tobytes()


def _from_blob(blob: bytes) -> np.ndarray:
    if len(blob) != _PIXELS:
        raise ValueError(f"stored image has {len(blob)} bytes, expected {_PIXELS}")
    return np.frombuffer(blob, dtype=np.uint8).reshape(IMAGE_SIZE, IMAGE_SIZE).copy()


def next_feedback_version(processed_dir: Path) -> str:
    """The next free `feedback-<n>` name under `processed_dir`."""
    taken = [int(p.name.split("-", 1)[1]) for p in Path(processed_dir).glob("feedback-*")
             if p.is_dir() and p.name.split("-", 1)[1].isdigit()]
    return f"feedback-{max(taken, default=0) + 1}"


def export_feedback(db_path: Path, processed_dir: Path) -> tuple[str, Path, int]:
    """Write every stored correction as a new dataset version; returns (name, folder, count).

    Raises `NoFeedback` when there is nothing to export.
    """
    from cnn_ocr.data.prepare import write_version

    if not Path(db_path).is_file():
        raise NoFeedback(f"no feedback database at {db_path}")
    store = FeedbackStore(db_path)
    try:
        images, labels, versions = store.feedback_arrays()
    finally:
        store.close()
    if len(labels) == 0:
        raise NoFeedback(f"{db_path} holds no feedback yet")
    name = next_feedback_version(processed_dir)
    folder = Path(processed_dir) / name
    empty_x = np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    empty_y = np.zeros((0,), np.int64)
    arrays = {"train_x": images, "train_y": labels, "val_x": empty_x, "val_y": empty_y,
              "test_x": empty_x, "test_y": empty_y}
    write_version(folder, arrays, {
        "name": name, "dataset": "mnist", "kind": "feedback",
        "description": "user corrections from the OCR service (train split only)",
        "preprocessing": preprocessing_spec(), "n_feedback": int(len(labels)),
        "model_versions": sorted(set(versions)), "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    })
    log.info("exported %d corrections to %s", len(labels), folder)
    return name, folder, int(len(labels))
