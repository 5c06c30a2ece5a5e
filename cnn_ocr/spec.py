"""The served-model format: a folder holding `model.onnx` and `spec.json`, and how its outputs become probabilities.

The ONNX graph takes float32 (N, 1, 28, 28) images normalized by `to_model_input` (input "input") and returns
float32 (N, 10) "logits"; the probabilities are softmax(logits / temperature), with the one softmax of
`cnn_ocr.calibration`, the same function that fits the temperature. `spec.json` carries that temperature, the
names of the graph's input and output, the label order, the preprocessing the graph expects and a "model"
block saying which registered version and run it came from:

    {"format_version": 1, "input_name": "input", "output_name": "logits", "labels": [0, ..., 9],
     "temperature": 1.37, "preprocessing": {"image_size": 28, "mean": 0.1307, "std": 0.3081, ...},
     "model": {"name", "version", "family", "run_id", "alias", "test_accuracy", "data_version", "trained_at"},
     "ood": {"detector": "energy", "threshold": 7.9, "output_name": "ood_score"}}

In "model", `test_accuracy` is the share of MNIST test digits read right (0-1) and `trained_at` the UTC time the
training run started (ISO 8601); both are optional (null or absent in specs written before they existed).
"ood" is absent (or null) for a graph without a not-a-digit score; otherwise the graph has a second output, (N,) float32,
and an input scoring below the threshold (fitted on validation digits) is not a digit.

Export writes it (`build_spec`, `write_spec`), serving reads it (`read_spec`); both compute probabilities
through `ModelSpec.probabilities`. A spec that cannot be served raises `SpecError` with one line saying what
is wrong and what to do.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from cnn_ocr.atomic_files import atomic_write_bytes
from cnn_ocr.calibration import softmax
from cnn_ocr.preprocess import IMAGE_SIZE, MNIST_MEAN, MNIST_STD, preprocessing_spec, to_model_input

ONNX_FILE = "model.onnx"
SPEC_FILE = "spec.json"
FORMAT_VERSION = 1
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
OOD_OUTPUT_NAME = "ood_score"
LABELS = tuple(range(10))
REQUIRED_KEYS = ("format_version", "input_name", "output_name", "labels", "temperature", "preprocessing")
_REEXPORT = "export the model again (`ocr export`)"


class SpecError(ValueError):
    """A model folder or spec that cannot be served; the one-line message says what is wrong and what to do."""


@dataclass(frozen=True)
class ModelBlock:
    """Where a served model came from: its registered name and version, family, run, data version, test accuracy
    and when it was trained."""

    name: str | None = None
    version: str | int | None = None
    family: str | None = None
    run_id: str | None = None
    alias: str | None = None
    test_accuracy: float | None = None
    data_version: str | None = None
    trained_at: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> ModelBlock:
        """The block from a mapping; keys it does not know are ignored, missing ones are None."""
        data = data or {}
        return cls(**{f.name: data.get(f.name) for f in fields(cls)})

    def to_dict(self) -> dict[str, Any]:
        """All keys, None where unknown."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class OodBlock:
    """The graph's not-a-digit score: which detector computes it, its threshold and the output's name."""

    detector: str
    threshold: float
    output_name: str = OOD_OUTPUT_NAME

    def to_dict(self) -> dict[str, Any]:
        """The "ood" object of `spec.json`."""
        return {"detector": self.detector, "threshold": float(self.threshold), "output_name": self.output_name}


@dataclass(frozen=True)
class ModelSpec:
    """The contents of `spec.json`: how to run the graph and turn its outputs into probabilities."""

    temperature: float
    model: ModelBlock = field(default_factory=ModelBlock)
    preprocessing: dict[str, Any] = field(default_factory=preprocessing_spec)
    input_name: str = INPUT_NAME
    output_name: str = OUTPUT_NAME
    labels: tuple[int, ...] = LABELS
    format_version: int = FORMAT_VERSION
    ood: OodBlock | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON object written to `spec.json`."""
        out = {
            "format_version": self.format_version,
            "input_name": self.input_name,
            "output_name": self.output_name,
            "labels": list(self.labels),
            "temperature": float(self.temperature),
            "preprocessing": dict(self.preprocessing),
            "model": self.model.to_dict(),
        }
        if self.ood is not None:
            out["ood"] = self.ood.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Any, where: str = SPEC_FILE) -> ModelSpec:
        """Validate a parsed `spec.json` (`where` names it in errors); `SpecError` unless this code can serve it."""
        if not isinstance(data, dict):
            raise SpecError(f"{where} holds {type(data).__name__}, not a JSON object; {_REEXPORT}")
        missing = [key for key in REQUIRED_KEYS if key not in data]
        if missing:
            raise SpecError(f"{where} lacks {', '.join(missing)}; {_REEXPORT}")
        if data["format_version"] != FORMAT_VERSION:
            raise SpecError(f"{where} has format_version {data['format_version']!r}, this code reads "
                            f"{FORMAT_VERSION}; {_REEXPORT} with this version")
        for key in ("input_name", "output_name"):
            if not isinstance(data[key], str) or not data[key]:
                raise SpecError(f"{where}: {key} must be a non-empty string, got {data[key]!r}; {_REEXPORT}")
        if not isinstance(data["labels"], list) or data["labels"] != list(LABELS):
            raise SpecError(f"{where}: labels must be [0, 1, ..., 9], got {data['labels']!r}; {_REEXPORT}")
        return cls(
            temperature=_temperature(data["temperature"], where),
            model=_model_block(data.get("model"), where),
            preprocessing=_preprocessing(data["preprocessing"], where),
            input_name=data["input_name"],
            output_name=data["output_name"],
            ood=_ood_block(data.get("ood"), where),
        )

    def with_model(self, **changes: Any) -> ModelSpec:
        """A copy whose "model" block has `changes` applied (e.g. the registered version and alias)."""
        return replace(self, model=replace(self.model, **changes))

    def probabilities(self, outputs: np.ndarray) -> np.ndarray:
        """The graph's (N, 10) outputs -> float64 probabilities: softmax(outputs / temperature)."""
        return probabilities(outputs, self.temperature)

    def predict(self, session: Any, images: np.ndarray) -> np.ndarray:
        """uint8 images (N, 28, 28) -> float64 (N, 10) probabilities from an ONNX Runtime session of the graph."""
        return self.probabilities(graph_outputs(session, images, self.input_name, self.output_name))

    def predict_with_score(self, session: Any, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """uint8 images (N, 28, 28) -> (float64 (N, 10) probabilities, float64 (N,) not-a-digit scores or None when
        the graph has no score), from one run of the graph."""
        if self.ood is None:
            return self.predict(session, images), None
        logits, scores = graph_outputs(session, images, self.input_name, (self.output_name, self.ood.output_name))
        return self.probabilities(logits), np.asarray(scores, np.float64).reshape(-1)

    def ood_scores(self, session: Any, images: np.ndarray) -> np.ndarray:
        """uint8 images (N, 28, 28) -> the graph's not-a-digit scores (N,); SpecError when it has none."""
        if self.ood is None:
            raise SpecError(f"this model has no not-a-digit score; {_REEXPORT} with a detector")
        return graph_outputs(session, images, self.input_name, self.ood.output_name)

    def check_session(self, session: Any, where: str = ONNX_FILE) -> None:
        """`SpecError` unless the graph in `session` has the inputs and outputs this spec names."""
        inputs = [i.name for i in session.get_inputs()]
        outputs = [o.name for o in session.get_outputs()]
        missing_ood = self.ood is not None and self.ood.output_name not in outputs
        if self.input_name not in inputs or self.output_name not in outputs or missing_ood:
            raise SpecError(f"{where}: graph has inputs {inputs} / outputs {outputs}, spec names "
                            f"{self.input_name!r} / {self.output_name!r}; {_REEXPORT}")


def _temperature(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise SpecError(f"{where}: temperature must be a positive number, got {value!r}; {_REEXPORT}")
    return float(value)


def _model_block(value: Any, where: str) -> ModelBlock:
    if value is not None and not isinstance(value, dict):
        raise SpecError(f"{where}: \"model\" must be a JSON object, got {type(value).__name__}; {_REEXPORT}")
    block = ModelBlock.from_dict(value)
    acc = block.test_accuracy
    if acc is not None and (isinstance(acc, bool) or not isinstance(acc, int | float) or not 0 <= acc <= 1):
        raise SpecError(f"{where}: model.test_accuracy must be null or a share from 0 to 1, got {acc!r}; {_REEXPORT}")
    if block.trained_at is not None and not _is_iso_time(block.trained_at):
        raise SpecError(f"{where}: model.trained_at must be null or an ISO 8601 time such as "
                        f"\"2026-11-26T14:03:00+00:00\", got {block.trained_at!r}; {_REEXPORT}")
    return block


def _is_iso_time(value: Any) -> bool:
    try:
        datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return False
    return True


def trained_at_from_ms(start_ms: int | None) -> str | None:
    """A run's start time (milliseconds since the epoch, as MLflow keeps it) as the spec's `trained_at`."""
    if not start_ms:
        return None
    return datetime.fromtimestamp(start_ms / 1000, UTC).isoformat(timespec="seconds")


def _ood_block(value: Any, where: str) -> OodBlock | None:
    if value is None:
        return None
    ok = (isinstance(value, dict) and isinstance(value.get("detector"), str) and isinstance(value.get("output_name"), str)
          and isinstance(value.get("threshold"), int | float) and not isinstance(value.get("threshold"), bool)
          and math.isfinite(value["threshold"]))
    if not ok:
        raise SpecError(f"{where}: \"ood\" must be null or {{detector, threshold, output_name}}, got {value!r}; "
                        f"{_REEXPORT}")
    return OodBlock(value["detector"], float(value["threshold"]), value["output_name"])


def _preprocessing(value: Any, where: str) -> dict[str, Any]:
    ours = {"image_size": IMAGE_SIZE, "mean": MNIST_MEAN, "std": MNIST_STD}
    if not isinstance(value, dict):
        raise SpecError(f"{where}: preprocessing must be a JSON object, got {type(value).__name__}; {_REEXPORT}")
    theirs = {key: value.get(key) for key in ours}
    if theirs != ours:
        raise SpecError(f"{where}: the model expects different preprocessing ({theirs}) than this code ({ours}); "
                        "retrain it or serve it with the code version that trained it")
    return dict(value)


def build_spec(temperature: float, model_block: Mapping[str, Any], ood: OodBlock | None = None) -> ModelSpec:
    """The spec of a freshly exported graph: this code's preprocessing, the given temperature and model block,
    and its not-a-digit score when the graph has one."""
    return ModelSpec(temperature=float(temperature), model=ModelBlock.from_dict(model_block), ood=ood)


def write_spec(folder: Path, spec: ModelSpec) -> Path:
    """Write `spec.json` (sorted keys, indented) into `folder` atomically; returns its path."""
    path = Path(folder) / SPEC_FILE
    atomic_write_bytes(path, (json.dumps(spec.to_dict(), indent=2, sort_keys=True) + "\n").encode())
    path.chmod(0o644)  # the temporary file is private; the spec is as readable as model.onnx beside it
    return path


def read_spec(folder: Path) -> ModelSpec:
    """Read and validate `folder/spec.json`; `SpecError` (one line) if it is missing, broken or incompatible."""
    path = Path(folder) / SPEC_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{path} does not exist; a model folder needs {ONNX_FILE} + {SPEC_FILE}: "
                        f"{_REEXPORT}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path} cannot be read ({type(exc).__name__}: {exc}); {_REEXPORT}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise SpecError(f"{path} is not valid JSON ({exc}); {_REEXPORT}") from None
    return ModelSpec.from_dict(data, str(path))


def is_model_folder(folder: Path) -> bool:
    """Whether `folder` holds both files of a served model (not whether they are valid)."""
    return (Path(folder) / ONNX_FILE).is_file() and (Path(folder) / SPEC_FILE).is_file()


def fingerprint(folder: Path) -> str:
    """SHA-256 over `model.onnx` and `spec.json`: equal fingerprints, same served model."""
    digest = hashlib.sha256()
    for name in (ONNX_FILE, SPEC_FILE):
        digest.update((Path(folder) / name).read_bytes())
    return digest.hexdigest()


def not_a_digit(score: float, threshold: float) -> bool:
    """Whether a not-a-digit score says the input is not a digit: it scores below the threshold."""
    return bool(score < threshold)


def probabilities(outputs: np.ndarray, temperature: float) -> np.ndarray:
    """Graph outputs (N, 10) -> float64 probabilities, softmax(outputs / temperature) (`calibration.softmax`)."""
    return softmax(outputs, temperature)


def graph_outputs(session: Any, images: np.ndarray, input_name: str = INPUT_NAME,
                  output_name: str | tuple[str, ...] = OUTPUT_NAME, batch: int = 512) -> Any:
    """The graph's raw outputs for uint8 images (N, 28, 28), normalized by `to_model_input`, `batch` at a time:
    one array for one output name, a list of arrays (one run of the graph) for a tuple of names."""
    names = [output_name] if isinstance(output_name, str) else list(output_name)
    x = to_model_input(images)
    runs = [session.run(names, {input_name: x[s : s + batch]}) for s in range(0, max(len(x), 1), batch)]
    outputs = [runs[0][i] if len(runs) == 1 else np.concatenate([r[i] for r in runs]) for i in range(len(names))]
    return outputs[0] if isinstance(output_name, str) else outputs
