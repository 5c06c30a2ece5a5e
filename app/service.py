"""What the endpoints do, free of HTTP: preprocess, classify, remember the answer, take corrections.

All methods are synchronous and CPU-bound; the routes call them in a worker thread. Each call takes the
serving model once, so a hot swap in the middle of a request cannot mix two models.
"""

from __future__ import annotations

import base64
import io
import uuid
from dataclasses import dataclass

import numpy as np

from app.inputs import ImageInput
from app.metrics import Metrics
from app.model_store import LoadedModel, ModelStore, NoModelError
from app.settings import Settings
from cnn_ocr.decode import decode_image
from cnn_ocr.feedback import FeedbackStore, PredictionRecord
from cnn_ocr.preprocess import Prepared, prepare_gray
from cnn_ocr.reader import ReadLimits, find_digits, judge, line_status


@dataclass(frozen=True)
class Answer:
    """The model's answer for one 28x28 input (or the absence of a digit)."""

    digit: int | None
    confidence: float
    probabilities: list[float]
    status: str
    image: np.ndarray | None
    reason: str | None = None


def png_data_url(image: np.ndarray) -> str:
    """A 28x28 uint8 image as a PNG data: URL (what the page shows as "what the model saw")."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8), mode="L").save(buf, "PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class OcrService:
    """Preprocessing + the serving model + the feedback store + metrics."""

    def __init__(self, settings: Settings, store: ModelStore, feedback: FeedbackStore, metrics: Metrics) -> None:
        self.settings = settings
        self.store = store
        self.feedback_store = feedback
        self.metrics = metrics

    def model(self) -> LoadedModel:
        """The serving model; `NoModelError` when none is loaded."""
        model = self.store.current
        if model is None:
            raise NoModelError("No model is loaded yet; try again shortly.")
        return model

    def _prepare(self, item: ImageInput) -> Prepared:
        if item.pixels is not None:
            return prepare_gray(item.pixels)
        decoded = decode_image(item.data or b"", max_bytes=self.settings.max_bytes,
                               max_pixels=self.settings.max_pixels)
        return prepare_gray(decoded.gray, decoded.scale)

    def classify(self, model: LoadedModel, images: list[np.ndarray | None],
                 reasons: list[str | None] | None = None) -> list[Answer]:
        """Run the model once on every present image; None images are `no_digit`."""
        present = [i for i, img in enumerate(images) if img is not None]
        probs = model.probabilities(np.stack([images[i] for i in present])) if present else np.zeros((0, 10))
        answers: list[Answer] = [Answer(None, 0.0, [0.0] * 10, "no_digit", None,
                                        (reasons or [None] * len(images))[i] or "blank")
                                 for i in range(len(images))]
        for row, i in zip(probs, present, strict=True):
            digit, confidence, status = judge(row, self.settings.uncertain_threshold)
            answers[i] = Answer(digit, confidence, [round(float(p), 6) for p in row], status, images[i])
        for answer in answers:
            self.metrics.observe_prediction(answer.digit, answer.status)
        return answers

    def _response(self, pid: str, answer: Answer, model: LoadedModel) -> dict:
        return {"prediction_id": pid, "digit": answer.digit, "confidence": round(answer.confidence, 6),
                "probabilities": answer.probabilities, "status": answer.status,
                "model": {"name": model.info.name, "version": model.info.version}, "reason": answer.reason,
                "input_image": None if answer.image is None else png_data_url(answer.image)}

    def _record(self, model: LoadedModel, items: list[tuple[str, str, Answer | None]]) -> None:
        self.feedback_store.record_predictions([
            PredictionRecord(pid, kind, None if a is None else a.image, None if a is None else a.digit,
                             0.0 if a is None else a.confidence, "read" if a is None else a.status,
                             model.info.name, model.info.version) for pid, kind, a in items])

    def predict(self, items: list[ImageInput]) -> list[dict]:
        """Answers for one or more images, in order."""
        prepared = [self._prepare(item) for item in items]
        model = self.model()
        answers = self.classify(model, [p.image for p in prepared], [p.no_digit for p in prepared])
        ids = [uuid.uuid4().hex for _ in answers]
        self._record(model, [(pid, "digit", a) for pid, a in zip(ids, answers, strict=True)])
        return [self._response(pid, a, model) for pid, a in zip(ids, answers, strict=True)]

    def read(self, item: ImageInput) -> dict:
        """All digits of a line, left to right."""
        limits = ReadLimits(self.settings.max_bytes, self.settings.max_pixels, self.settings.read_max_digits,
                            self.settings.uncertain_threshold)
        segments = find_digits(item.data, item.pixels, limits).segments
        model = self.model()
        answers = self.classify(model, [s.image for s in segments])
        read_id, ids = uuid.uuid4().hex, [uuid.uuid4().hex for _ in answers]
        self._record(model, [(read_id, "read", None)] + [(pid, "digit", a) for pid, a in zip(ids, answers, strict=True)])
        digits = [{"digit": a.digit, "confidence": round(a.confidence, 6), "status": a.status, "box": list(s.box),
                   "prediction_id": pid, "input_image": png_data_url(s.image)}
                  for a, s, pid in zip(answers, segments, ids, strict=True)]
        status = line_status([d["status"] for d in digits])
        return {"prediction_id": read_id, "text": "".join(str(d["digit"]) for d in digits), "status": status,
                "digits": digits, "model": {"name": model.info.name, "version": model.info.version}}

    def add_feedback(self, prediction_id: str, label: int) -> dict:
        """Store a correction; `UnknownPrediction` or `InvalidFeedback` when it cannot be."""
        record = self.feedback_store.add_feedback(prediction_id, label)
        self.metrics.observe_feedback(record.predicted == record.label)
        return {"stored": True, "prediction_id": record.prediction_id, "label": record.label,
                "predicted": record.predicted, "model_version": record.model_version}
