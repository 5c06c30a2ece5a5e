"""The served model: ONNX Runtime session + spec.json, found locally or through the registry, hot-swappable.

Sources, in order: `OCR_MODEL_PATH` (a folder, or its model.onnx, holding model.onnx + spec.json; no
MLflow), else `models:/<OCR_MODEL_NAME>@<OCR_MODEL_ALIAS>` from the tracking store, copied into
`OCR_MODEL_CACHE_DIR/<name>/<version>/` so that a restart works while the store is down. Every candidate
is loaded and smoke-tested beside the serving model and only then swapped in (one reference assignment):
requests already running keep the model object they started with and finish on it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from app.settings import Settings
from cnn_ocr.preprocess import IMAGE_SIZE, MNIST_MEAN, MNIST_STD, to_model_input

log = logging.getLogger("ocr.model")

ONNX_FILE = "model.onnx"
SPEC_FILE = "spec.json"
POINTER_SUFFIX = ".alias.json"


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
    loaded_at: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))


class LoadedModel:
    """An ONNX Runtime session with its spec; `probabilities` is safe to call from many threads."""

    def __init__(self, session: Any, spec: dict[str, Any], info: ModelInfo) -> None:
        self.session = session
        self.spec = spec
        self.info = info
        self.input_name = spec["input_name"]
        self.output_name = spec["output_name"]
        self.temperature = float(spec["temperature"])

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, 28, 28) -> float64 (N, 10): softmax(logits / temperature)."""
        logits = self.session.run([self.output_name], {self.input_name: to_model_input(images)})[0]
        z = np.asarray(logits, dtype=np.float64) / self.temperature
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)


def _fingerprint(folder: Path) -> str:
    digest = hashlib.sha256()
    for name in (ONNX_FILE, SPEC_FILE):
        digest.update((folder / name).read_bytes())
    return digest.hexdigest()


def _read_spec(folder: Path) -> dict[str, Any]:
    try:
        spec = json.loads((folder / SPEC_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{folder / SPEC_FILE} is missing or not JSON ({exc})") from None
    required = ("format_version", "input_name", "output_name", "labels", "temperature", "preprocessing")
    missing = [key for key in required if key not in spec]
    if missing or spec.get("format_version") != 1:
        raise ModelLoadError(f"{folder / SPEC_FILE} is not a format-1 spec (missing: {missing or 'none'})")
    if list(spec["labels"]) != list(range(10)):
        raise ModelLoadError(f"{folder / SPEC_FILE}: labels must be 0..9")
    temperature = spec["temperature"]
    if not isinstance(temperature, int | float) or not np.isfinite(temperature) or temperature <= 0:
        raise ModelLoadError(f"{folder / SPEC_FILE}: temperature must be a positive number")
    pre = spec["preprocessing"]
    ours = {"image_size": IMAGE_SIZE, "mean": MNIST_MEAN, "std": MNIST_STD}
    if any(pre.get(key) != value for key, value in ours.items()):
        raise ModelLoadError(f"{folder / SPEC_FILE}: the model expects different preprocessing "
                             f"({ {k: pre.get(k) for k in ours} }) than this service ({ours})")
    return spec


def smoke_test(model: LoadedModel) -> None:
    """Run a blank, a bar and a noise image; refuse a model whose output is not 10 finite probabilities."""
    rng = np.random.default_rng(0)
    bar = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    bar[4:24, 12:16] = 255
    images = np.stack([np.zeros_like(bar), bar, rng.integers(0, 256, bar.shape).astype(np.uint8)])
    try:
        probs = model.probabilities(images)
    except Exception as exc:
        raise ModelLoadError(f"smoke test failed: inference raised {type(exc).__name__}: {exc}") from None
    if probs.shape != (3, 10) or not np.isfinite(probs).all():
        raise ModelLoadError(f"smoke test failed: expected 3x10 finite probabilities, got shape {probs.shape}")


def load_model_dir(folder: Path, *, threads: int, source: str, alias: str | None = None) -> LoadedModel:
    """Load and smoke-test the model in `folder` (model.onnx + spec.json); `ModelLoadError` if unusable."""
    from cnn_ocr.quantize import make_session

    folder = Path(folder)
    spec = _read_spec(folder)
    try:  # the session the inference benchmark measures: full graph optimization, no spinning threads
        session = make_session(folder / ONNX_FILE, threads)
    except Exception as exc:
        raise ModelLoadError(f"{folder / ONNX_FILE} cannot be loaded by ONNX Runtime: "
                             f"{str(exc).splitlines()[0][:200]}") from None
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    if spec["input_name"] not in inputs or spec["output_name"] not in outputs:
        raise ModelLoadError(f"{folder / ONNX_FILE}: graph has inputs {inputs} / outputs {outputs}, "
                             f"spec names {spec['input_name']!r} / {spec['output_name']!r}")
    block = spec.get("model") or {}
    info = ModelInfo(
        name=str(block.get("name") or folder.name), version=str(block.get("version") or "local"),
        alias=alias or block.get("alias"), run_id=block.get("run_id"), family=block.get("family"),
        test_accuracy=block.get("test_accuracy"), data_version=block.get("data_version"),
        source=source, fingerprint=_fingerprint(folder))
    model = LoadedModel(session, spec, info)
    smoke_test(model)
    return model


def local_model_dir(path: Path) -> Path:
    """OCR_MODEL_PATH may name the folder or its model.onnx."""
    path = Path(path)
    return path.parent if path.suffix == ".onnx" or path.is_file() else path


def _safe(part: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", part)[:100] or "_"


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


def fetch_registry_model(settings: Settings) -> Candidate:
    """Resolve the alias in the registry and make sure that version is in the local cache."""
    # Fail fast when the tracking server is down (MLflow's defaults retry for minutes); explicit env wins.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(settings.registry_timeout_s)))
    from cnn_ocr.data.atomic import atomic_dir
    from cnn_ocr.registry import download_onnx, resolve_alias

    info = resolve_alias(settings.model_name, settings.model_alias)
    base = Path(settings.model_cache_dir) / _safe(settings.model_name)
    final = base / _safe(str(info.version))
    if not ((final / ONNX_FILE).is_file() and (final / SPEC_FILE).is_file()):
        with atomic_dir(final) as tmp:
            got = Path(download_onnx(info, tmp))
            if got.resolve() != tmp.resolve():
                for name in (ONNX_FILE, SPEC_FILE):
                    shutil.copy2(got / name, tmp / name)
    pointer = {"name": settings.model_name, "alias": settings.model_alias, "version": str(info.version),
               "run_id": info.run_id, "folder": final.name, "resolved_at": time.time()}
    (base / f"{_safe(settings.model_alias)}{POINTER_SUFFIX}").write_text(json.dumps(pointer))
    uri = f"models:/{settings.model_name}@{settings.model_alias}"
    return Candidate(final, f"registry {uri} (version {info.version})", str(info.version))


def cached_registry_model(settings: Settings) -> Candidate | None:
    """The version the alias pointed to when the registry was last reached, if it is in the cache."""
    base = Path(settings.model_cache_dir) / _safe(settings.model_name)
    pointer = base / f"{_safe(settings.model_alias)}{POINTER_SUFFIX}"
    try:
        folder = base / _safe(json.loads(pointer.read_text())["folder"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not ((folder / ONNX_FILE).is_file() and (folder / SPEC_FILE).is_file()):
        return None
    return Candidate(folder, f"local cache {folder}", folder.name)


def find_candidate(settings: Settings) -> Candidate:
    """Where the model to serve is right now; `NoModelError` naming everything tried otherwise."""
    if settings.model_path is not None:
        folder = local_model_dir(settings.model_path)
        if (folder / ONNX_FILE).is_file() and (folder / SPEC_FILE).is_file():
            return Candidate(folder, f"OCR_MODEL_PATH {folder}")
        raise NoModelError(f"no model to serve: OCR_MODEL_PATH={settings.model_path} has no "
                           f"{ONNX_FILE} + {SPEC_FILE}")
    uri = f"models:/{settings.model_name}@{settings.model_alias}"
    try:
        return fetch_registry_model(settings)
    except Exception as exc:  # the registry being down must not stop a cached model from serving
        text = str(exc).splitlines()[0] if str(exc) else "no message"
        reason = f"{type(exc).__name__}: {text if len(text) <= 300 else text[:300] + '...'}"
    cached = cached_registry_model(settings)
    if cached is not None:
        return Candidate(cached.folder, cached.source, cached.version,
                         note=f"tracking store unreachable or alias missing ({reason}); serving the cached copy")
    raise NoModelError(
        f"no model to serve: OCR_MODEL_PATH is not set; {uri} at {_tracking_uri()} failed ({reason}); "
        f"no cached copy under {Path(settings.model_cache_dir) / _safe(settings.model_name)}. "
        "Train and promote a model (`make run`) or set OCR_MODEL_PATH to a folder with model.onnx + spec.json")


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
                fingerprint = _fingerprint(candidate.folder)
                if old is not None and fingerprint == old.info.fingerprint:
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
