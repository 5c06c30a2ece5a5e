"""Durable store of predictions and user corrections, and its export as a dataset version.

One store, two back ends through SQLAlchemy Core: a SQLite file (WAL; the embedded default) or a PostgreSQL
database shared by several service replicas (`OCR_FEEDBACK_DB=postgresql://user:pass@host/db`). Every served
prediction is kept for a while (its 28x28 input, answer and model version) so a later correction can refer
to it by id from any worker process or replica. A correction copies the input next to the corrected label,
so it outlives the prediction's retention. All SQL is parameterised. When the database cannot be reached,
every call raises `StoreUnavailable` and the next call tries again: nothing needs restarting.
A correction is a digit 0-9 or "not a digit" (`NOT_A_DIGIT`, stored as label -1 in the same column, so
existing databases need no migration). `export_feedback` turns the corrections into
`data/processed/feedback-<n>`: the same npy + meta.json layout as the other versions (train split = digit
corrections; validation and test empty), plus `negatives_x.npy` (N, 28, 28) uint8 holding the inputs users
said are not digits, hashed in meta.json's "files" like the splits and counted in its "n_negatives".
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from cnn_ocr.database import is_url, redact, sqlalchemy_url
from cnn_ocr.preprocess import IMAGE_SIZE, preprocessing_spec

log = logging.getLogger(__name__)

_PIXELS = IMAGE_SIZE * IMAGE_SIZE
NOT_A_DIGIT = "not_a_digit"  # the label a user gives an input that is not a digit
NOT_A_DIGIT_LABEL = -1  # how the store keeps it
NEGATIVES = "negatives_x"  # the exported version's array of not-a-digit inputs
_PRUNE_EVERY = 500
_SCHEMA_LOCK_KEY = 7_243_011  # PostgreSQL advisory lock: replicas starting together create the tables once
_UNREACHABLE = (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError)

_metadata = sa.MetaData()
_predictions = sa.Table(
    "predictions", _metadata,
    sa.Column("id", sa.Text, primary_key=True), sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("kind", sa.Text, nullable=False), sa.Column("image", sa.LargeBinary),
    sa.Column("digit", sa.Integer), sa.Column("confidence", sa.Double),
    sa.Column("status", sa.Text, nullable=False), sa.Column("model_name", sa.Text),
    sa.Column("model_version", sa.Text), sa.Index("predictions_created", "created_at"))
_feedback = sa.Table(
    "feedback", _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("prediction_id", sa.Text, nullable=False, unique=True),
    sa.Column("label", sa.Integer, nullable=False), sa.Column("image", sa.LargeBinary, nullable=False),
    sa.Column("predicted", sa.Integer), sa.Column("confidence", sa.Double),
    sa.Column("model_name", sa.Text), sa.Column("model_version", sa.Text),
    sa.Column("predicted_at", sa.Double), sa.Column("created_at", sa.Double, nullable=False),
    sqlite_autoincrement=True)


class FeedbackError(ValueError):
    """Feedback that cannot be stored or exported; the message is one sentence saying why."""


class UnknownPrediction(FeedbackError):
    """The prediction id was never issued, or its prediction has expired."""


class InvalidFeedback(FeedbackError):
    """A correction that cannot apply to its prediction (label out of range, no single digit to correct)."""


class NoFeedback(FeedbackError):
    """There are no stored corrections to export."""


class StoreUnavailable(FeedbackError):
    """The database cannot be reached right now; the next call tries again."""

    def __init__(self) -> None:
        super().__init__("The feedback database is unreachable right now; try again shortly.")


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

    @property
    def public_label(self) -> int | str:
        """The label as the API spells it: the digit, or "not_a_digit"."""
        return NOT_A_DIGIT if self.label == NOT_A_DIGIT_LABEL else self.label


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")  # with WAL: a commit survives a killed process
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


class FeedbackStore:
    """Thread-safe predictions and corrections in a SQLite file (a path) or PostgreSQL (a URL)."""

    def __init__(self, target: str | Path, retention_s: float = 7 * 24 * 3600) -> None:
        self.target = target if is_url(target) else Path(target)
        self.retention_s = retention_s
        self._inserts = 0
        self._schema_ready = False
        url = sqlalchemy_url(self.target)
        if isinstance(self.target, Path):
            self.target.parent.mkdir(parents=True, exist_ok=True)
            self._engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 10.0})
            sa.event.listen(self._engine, "connect", _sqlite_pragmas)
            self._insert = sqlite.insert
            # one writer at a time, as SQLite wants; PostgreSQL takes concurrent transactions
            self._lock: threading.Lock | contextlib.nullcontext = threading.Lock()
        else:
            self._engine = sa.create_engine(url, pool_pre_ping=True, pool_size=4, max_overflow=8, pool_timeout=10,
                                         connect_args={"connect_timeout": 5})
            self._insert = postgresql.insert
            self._lock = contextlib.nullcontext()
        # built once: constructing the upsert (its `excluded` columns) cost about 0.6 ms per served answer
        upsert = self._insert(_predictions)
        self._upsert_predictions = upsert.on_conflict_do_update(index_elements=["id"], set_={
            c.name: upsert.excluded[c.name] for c in _predictions.columns if c.name != "id"})
        with contextlib.suppress(StoreUnavailable):  # a database down at start is retried on first use
            with self._transaction():
                pass

    def __repr__(self) -> str:
        return f"FeedbackStore({redact(self.target)!r})"

    def close(self) -> None:
        """Close every pooled connection."""
        self._engine.dispose()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sa.Connection]:
        """One transaction (schema created first if needed); an unreachable database -> StoreUnavailable."""
        try:
            with self._lock, self._engine.begin() as conn:
                if not self._schema_ready:
                    if conn.dialect.name == "postgresql":
                        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK_KEY})
                    _metadata.create_all(conn)
                    self._schema_ready = True
                yield conn
        except _UNREACHABLE as exc:
            log.warning("feedback database %s unreachable: %s", redact(self.target), str(exc).splitlines()[0])
            raise StoreUnavailable() from None

    def record_predictions(self, records: list[PredictionRecord]) -> None:
        """Remember served answers (one transaction), pruning expired ones now and then."""
        now = time.time()
        rows = [{"id": r.id, "created_at": now, "kind": r.kind, "image": None if r.image is None else _to_blob(r.image),
                 "digit": r.digit, "confidence": r.confidence, "status": r.status, "model_name": r.model_name,
                 "model_version": r.model_version} for r in records]
        if not rows:
            return
        with self._transaction() as conn:
            conn.execute(self._upsert_predictions, rows)
            self._inserts += len(rows)
            if self._inserts >= _PRUNE_EVERY:
                self._inserts = 0
                conn.execute(_predictions.delete().where(_predictions.c.created_at < now - self.retention_s))

    def add_feedback(self, prediction_id: str, label: int | str) -> FeedbackRecord:
        """Store the right label for a prediction, a digit or `NOT_A_DIGIT` (a second correction replaces the
        first)."""
        if label == NOT_A_DIGIT:
            label = NOT_A_DIGIT_LABEL
        elif isinstance(label, bool) or not isinstance(label, int) or not 0 <= label <= 9:
            raise InvalidFeedback(f"label must be a digit from 0 to 9 or \"{NOT_A_DIGIT}\".")
        p = _predictions.c
        with self._transaction() as conn:
            row = conn.execute(sa.select(p.kind, p.image, p.digit, p.confidence, p.model_name, p.model_version,
                                      p.created_at).where(p.id == prediction_id)).first()
            if row is None:
                raise UnknownPrediction("Unknown prediction_id: it was never issued or has expired.")
            kind, image, digit, confidence, model_name, model_version, predicted_at = row
            if kind != "digit":
                raise InvalidFeedback("This prediction covers several digits; send feedback with the "
                                    "prediction_id of one digit.")
            if image is None:
                raise InvalidFeedback("No digit was found in this input, so there is nothing to correct.")
            now = time.time()
            stmt = self._insert(_feedback).values(
                prediction_id=prediction_id, label=label, image=image, predicted=digit, confidence=confidence,
                model_name=model_name, model_version=model_version, predicted_at=predicted_at, created_at=now)
            conn.execute(stmt.on_conflict_do_update(index_elements=["prediction_id"], set_={
                "label": stmt.excluded.label, "created_at": stmt.excluded.created_at}))
        return FeedbackRecord(prediction_id, label, digit, model_version, now)

    def feedback_arrays(self) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """All corrections in insertion order: images uint8 (N, 28, 28), labels int64 (N,), model versions."""
        f = _feedback.c
        with self._transaction() as conn:
            rows = conn.execute(sa.select(f.image, f.label, f.model_version).order_by(f.id)).all()
        images = np.stack([_from_blob(r[0]) for r in rows]) if rows else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE),
                                                                                    np.uint8)
        return images, np.asarray([r[1] for r in rows], dtype=np.int64), [str(r[2]) for r in rows]

    def count_feedback(self) -> int:
        """How many corrections are stored."""
        with self._transaction() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(_feedback)).scalar_one())


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


def export_feedback(db: str | Path, processed_dir: Path) -> tuple[str, Path, int]:
    """Write every stored correction (SQLite file or PostgreSQL URL) as a new dataset version.

    Returns (name, folder, count). Raises FeedbackError when there is nothing to export or the database
    cannot be reached.
    """
    from cnn_ocr.data.prepare import write_version

    if not is_url(db) and not Path(db).is_file():
        raise NoFeedback(f"no feedback database at {db}")
    store = FeedbackStore(db)
    try:
        images, labels, versions = store.feedback_arrays()
    finally:
        store.close()
    if len(labels) == 0:
        raise NoFeedback(f"{redact(db)} holds no feedback yet")
    name = next_feedback_version(processed_dir)
    folder = Path(processed_dir) / name
    digits = labels != NOT_A_DIGIT_LABEL
    empty_x = np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    empty_y = np.zeros((0,), np.int64)
    arrays = {"train_x": images[digits], "train_y": labels[digits], "val_x": empty_x, "val_y": empty_y,
              "test_x": empty_x, "test_y": empty_y, NEGATIVES: images[~digits]}
    write_version(folder, arrays, {
        "name": name, "dataset": "mnist", "kind": "feedback",
        "description": "user corrections from the OCR service (train split only; negatives_x: not digits)",
        "preprocessing": preprocessing_spec(), "n_feedback": int(len(labels)), "n_negatives": int((~digits).sum()),
        "model_versions": sorted(set(versions)), "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    })
    log.info("exported %d corrections (%d not digits) to %s", len(labels), int((~digits).sum()), folder)
    return name, folder, int(len(labels))


def load_feedback_negatives(folder: Path) -> np.ndarray:
    """The not-a-digit inputs of an exported feedback version, uint8 (N, 28, 28); none for older exports."""
    path = Path(folder) / f"{NEGATIVES}.npy"
    if not path.is_file():
        return np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    return np.load(path, allow_pickle=False)
