"""The served model: ONNX Runtime session + spec.json, found locally or through the registry, hot-swappable.

Sources, in order: `OCR_MODEL_PATH` (a folder, or its model.onnx, holding model.onnx + spec.json; no
MLflow), else `models:/<OCR_MODEL_NAME>@<OCR_MODEL_ALIAS>` from the tracking store, copied into
`OCR_MODEL_CACHE_DIR/<name>/<version>/` by `cnn_ocr.model_cache` so that a restart works while the store is
down. The folder format and the probabilities are `cnn_ocr.spec`'s. Every candidate
is loaded and smoke-tested beside the serving model and only then swapped in (one reference assignment):
requests already running keep the model object they started with and finish on it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from app.settings import Settings
from cnn_ocr.model_cache import cached_version, fetch_version, model_cache_dir, registry_uri
from cnn_ocr.preprocess import IMAGE_SIZE
from cnn_ocr.spec import ONNX_FILE, SPEC_FILE, ModelSpec, SpecError, fingerprint, is_model_folder, read_spec

log = logging.getLogger("ocr.model")


LOCAL_VERSION = "local"  # the version of a model folder that names no registered version


class ModelLoadError(RuntimeError):
    """A model version that cannot be served (unreadable, incompatible, or failed its smoke test)."""


class NoModelError(RuntimeError):
    """Nothing to serve; the message names every place that was tried."""


@dataclass(frozen=True)
class ModelInfo:
    """What is being served, as shown by GET /model and carried in every response."""

    name: str
    version: str
    alias: str | None
    run_id: str | None
    family: str | None
    test_accuracy: float | None
    data_version: str | None
    source: str
    fingerprint: str
    trained_at: str | None = None
    loaded_at: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))


class LoadedModel:
    """An ONNX Runtime session with its spec; `probabilities` is safe to call from many threads."""

    def __init__(self, session: Any, spec: ModelSpec, info: ModelInfo) -> None:
        self.session = session
        self.spec = spec
        self.info = info

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, 28, 28) -> float64 (N, 10): softmax(logits / temperature), as the spec defines it."""
        return self.spec.predict(self.session, images)

    def predict(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """uint8 (N, 28, 28) -> (probabilities (N, 10), not-a-digit scores (N,) or None), one run of the graph."""
        return self.spec.predict_with_score(self.session, images)


def smoke_test(model: LoadedModel) -> None:
    """Run a blank, a bar and a noise image; refuse a model whose output is not 10 finite probabilities."""
    rng = np.random.default_rng(0)
    bar = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    bar[4:24, 12:16] = 255
    images = np.stack([np.zeros_like(bar), bar, rng.integers(0, 256, bar.shape).astype(np.uint8)])
    try:
        probs, scores = model.predict(images)
    except Exception as exc:
        raise ModelLoadError(f"smoke test failed: inference raised {type(exc).__name__}: {exc}") from None
    if probs.shape != (3, 10) or not np.isfinite(probs).all():
        raise ModelLoadError(f"smoke test failed: expected 3x10 finite probabilities, got shape {probs.shape}")
    if scores is not None and (scores.shape != (3,) or not np.isfinite(scores).all()):
        raise ModelLoadError(f"smoke test failed: expected 3 finite not-a-digit scores, got shape {scores.shape}")


def load_model_dir(folder: Path, *, threads: int, source: str, alias: str | None = None) -> LoadedModel:
    """Load and smoke-test the model in `folder` (model.onnx + spec.json); `ModelLoadError` if unusable."""
    from cnn_ocr.onnx_session import make_session

    folder = Path(folder)
    try:
        spec = read_spec(folder)
    except SpecError as exc:
        raise ModelLoadError(str(exc)) from None
    try:  # the session the inference benchmark measures: full graph optimization, no spinning threads
        session = make_session(folder / ONNX_FILE, threads)
    except Exception as exc:
        raise ModelLoadError(f"{folder / ONNX_FILE} cannot be loaded by ONNX Runtime: "
                             f"{str(exc).splitlines()[0][:200]}") from None
    try:
        spec.check_session(session, str(folder / ONNX_FILE))
    except SpecError as exc:
        raise ModelLoadError(str(exc)) from None
    block = spec.model
    info = ModelInfo(
        name=str(block.name or folder.name), version=str(block.version or LOCAL_VERSION),
        alias=alias or block.alias, run_id=block.run_id, family=block.family,
        test_accuracy=block.test_accuracy, data_version=block.data_version,
        source=source, fingerprint=fingerprint(folder), trained_at=block.trained_at)
    model = LoadedModel(session, spec, info)
    smoke_test(model)
    return model


def local_model_dir(path: Path) -> Path:
    """OCR_MODEL_PATH may name the folder or its model.onnx."""
    path = Path(path)
    return path.parent if path.suffix == ".onnx" or path.is_file() else path


def _tracking_uri() -> str:
    from cnn_ocr.tracking.store import tracking_uri

    return tracking_uri()


@dataclass(frozen=True)
class Candidate:
    """A model folder to load, where it came from, and the registry version it claims (if any)."""

    folder: Path
    source: str
    version: str | None = None
    note: str | None = None


def find_candidate(settings: Settings) -> Candidate:
    """Where the model to serve is right now; `NoModelError` naming everything tried otherwise."""
    if settings.model_path is not None:
        folder = local_model_dir(settings.model_path)
        if is_model_folder(folder):
            return Candidate(folder, f"OCR_MODEL_PATH {folder}")
        raise NoModelError(f"no model to serve: OCR_MODEL_PATH={settings.model_path} has no "
                           f"{ONNX_FILE} + {SPEC_FILE}")
    name, alias, cache_dir = settings.model_name, settings.model_alias, settings.model_cache_dir
    try:
        got = fetch_version(cache_dir, name, alias, settings.registry_timeout_s)
        return Candidate(got.folder, got.source, got.version)
    except Exception as exc:  # the registry being down must not stop a cached model from serving
        text = str(exc).splitlines()[0] if str(exc) else "no message"
        reason = f"{type(exc).__name__}: {text if len(text) <= 300 else text[:300] + '...'}"
    cached = cached_version(cache_dir, name, alias)
    if cached is not None:
        return Candidate(cached.folder, cached.source, cached.version,
                         note=f"tracking store unreachable or alias missing ({reason}); serving the cached copy")
    raise NoModelError(
        f"no model to serve: OCR_MODEL_PATH is not set; {registry_uri(name, alias)} at {_tracking_uri()} failed "
        f"({reason}); no cached copy under {model_cache_dir(cache_dir, name)}. "
        "Train and promote a model (`make run`) or set OCR_MODEL_PATH to a folder with model.onnx + spec.json")


@dataclass(frozen=True)
class RecognizerState:
    """The optional line recognizer (`OCR_RECOGNIZER_PATH`): where it was looked for, the loaded
    `LineRecognizer` (None when it could not be loaded, and `detail` says why) and its `line_spec.json`."""

    where: str
    reader: Any | None
    detail: str | None = None
    spec: dict = field(default_factory=dict)


def _recognizer_folder(where: str, settings: Settings) -> Path:
    from cnn_ocr.line_model import SPEC_FILE as LINE_SPEC

    if where.startswith("models:/"):
        name, _, alias = where.removeprefix("models:/").partition("@")
        if not name or not alias:
            raise ValueError(f"{where} is not of the form models:/NAME@ALIAS")
        from cnn_ocr.line_registry import fetch_recognizer

        return fetch_recognizer(settings.model_cache_dir, name, alias)
    folder = Path(where)
    if not ((folder / ONNX_FILE).is_file() and (folder / LINE_SPEC).is_file()):
        raise FileNotFoundError(f"{folder} has no {ONNX_FILE} + {LINE_SPEC}")
    return folder


def load_recognizer(settings: Settings) -> RecognizerState | None:
    """Load and smoke-test the line recognizer `OCR_RECOGNIZER_PATH` names (None when unset). One that cannot
    be loaded is logged in one line and left out: the service then reads by segmentation alone."""
    where = settings.recognizer_path
    if not where:
        return None
    from cnn_ocr.line_model import SPEC_FILE as LINE_SPEC
    from cnn_ocr.line_model import LineRecognizer
    from cnn_ocr.lines import LINE_HEIGHT

    try:
        folder = _recognizer_folder(where, settings)
        reader = LineRecognizer(folder, threads=settings.intra_op_threads)
        probs = reader.frame_probabilities([np.zeros((LINE_HEIGHT, 64), np.uint8)])[0]
        if probs.ndim != 2 or probs.shape[1] != 11 or not np.isfinite(probs).all():
            raise ValueError(f"smoke test failed: expected finite frames of 11 probabilities, got {probs.shape}")
        spec = json.loads((folder / LINE_SPEC).read_text())
    except Exception as exc:  # a broken recognizer must not keep the digit reader from serving
        text = (str(exc).splitlines() or ["no message"])[0][:300]
        detail = f"{type(exc).__name__}: {text}"
        log.error("line recognizer %s not loaded (%s); /read reads by segmentation alone", where, detail)
        return RecognizerState(where, None, detail)
    log.info("line recognizer loaded from %s", folder)
    return RecognizerState(where, reader, None, spec)


@dataclass(frozen=True)
class ReloadResult:
    """Outcome of one reload: "reloaded", "unchanged" or "refused", with a one-sentence detail."""

    status: str
    detail: str
    model: ModelInfo | None


class ModelStore:
    """Holds the serving model and replaces it atomically; reloads are serialised by a lock."""

    def __init__(self, settings: Settings, on_change: Any = None) -> None:
        self.settings = settings
        self._model: LoadedModel | None = None
        self._lock = threading.Lock()
        self._on_change = on_change

    @property
    def current(self) -> LoadedModel | None:
        """The model new requests should use (grab it once per request)."""
        return self._model

    def _load(self, candidate: Candidate) -> LoadedModel:
        return load_model_dir(candidate.folder, threads=self.settings.intra_op_threads,
                              source=candidate.source, alias=None if self.settings.model_path else
                              self.settings.model_alias)

    def reload(self) -> ReloadResult:
        """Look for the model again; load, smoke-test and swap it in when it differs from the served one."""
        with self._lock:
            old = self._model
            try:
                candidate = find_candidate(self.settings)
            except NoModelError as exc:
                return ReloadResult("refused", str(exc), old.info if old else None)
            if candidate.note:
                log.warning(candidate.note)
            try:
                if old is not None and fingerprint(candidate.folder) == old.info.fingerprint:
                    note = f" ({candidate.note})" if candidate.note else ""
                    return ReloadResult("unchanged", f"already serving version {old.info.version}{note}", old.info)
                new = self._load(candidate)
            except (ModelLoadError, OSError) as exc:
                log.error("refused model from %s: %s", candidate.source, exc)
                return ReloadResult("refused", f"refused {candidate.source}: {exc}", old.info if old else None)
            self._model = new
        log.info("serving %s version %s from %s", new.info.name, new.info.version, new.info.source)
        if self._on_change is not None:
            self._on_change(new.info)
        return ReloadResult("reloaded", f"now serving version {new.info.version}", new.info)
