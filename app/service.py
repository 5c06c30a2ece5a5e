"""What the endpoints do, free of HTTP: preprocess, classify, remember the answer, take corrections.

All methods are synchronous and CPU-bound; the routes call them in a worker thread. Each call takes the
serving model once, so a hot swap in the middle of a request cannot mix two models.
"""

from __future__ import annotations

import base64
import io
import math
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from app.inputs import ImageInput
from app.metrics import Metrics
from app.model_store import LOCAL_VERSION, LoadedModel, ModelInfo, ModelStore, NoModelError, load_recognizer
from app.settings import Settings
from cnn_ocr.decode import decode_image
from cnn_ocr.feedback import NOT_A_DIGIT, FeedbackStore, PredictionRecord, StoreUnavailable
from cnn_ocr.line_read import Reading, line_field, read_lines
from cnn_ocr.preprocess import Prepared, prepare_gray
from cnn_ocr.reader import Page, ReadLimits, find_page, judge, line_status, ood_threshold

# Model families in the words the page uses; a family not listed is shown by its own name.
FAMILY_WORDS = {"improved_cnn": "improved CNN", "base_cnn": "basic CNN", "svm": "SVM", "ensemble": "CNN ensemble"}


def describe_model(info: ModelInfo) -> dict[str, str | None]:
    """The served model in words a user understands, and its exact version for those who ask.

    `summary` is e.g. "improved CNN, trained 2026-11-26, 99.6 % on MNIST test" (what is unknown is left out);
    `details` names the registered version, alias, run and data version (the page's tooltip)."""
    family = FAMILY_WORDS.get(info.family or "", info.family)
    parts = [family or info.name]
    if info.trained_at:
        when = datetime.fromisoformat(info.trained_at)
        parts.append(f"trained {(when.astimezone(UTC) if when.tzinfo else when).date().isoformat()}")
    if info.test_accuracy is not None:  # rounded down: the header never claims more than was measured
        parts.append(f"{math.floor(round(info.test_accuracy * 1000, 6)) / 10:.1f} % on MNIST test")
    if info.version == LOCAL_VERSION:
        where = f"{info.name}, an unregistered model folder"
    else:
        where = f"{info.name}, version {info.version}" + (f" (alias {info.alias})" if info.alias else "")
    extra = [f"run {info.run_id}" if info.run_id else None, f"data {info.data_version}" if info.data_version else None,
             f"loaded {info.loaded_at}"]
    return {"family_name": family, "summary": ", ".join(parts), "details": ", ".join([where, *filter(None, extra)])}


@dataclass(frozen=True)
class Answer:
    """The model's answer for one 28x28 input (or the absence of a digit)."""

    digit: int | None
    confidence: float
    probabilities: list[float]
    status: str
    image: np.ndarray | None
    reason: str | None = None
    ood_score: float | None = None


def png_data_url(image: np.ndarray) -> str:
    """A 28x28 uint8 image as a PNG data: URL (what the page shows as "what the model saw")."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8), mode="L").save(buf, "PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class OcrService:
    """Preprocessing + the serving model (+ the optional line recognizer) + the feedback store + metrics."""

    def __init__(self, settings: Settings, store: ModelStore, feedback: FeedbackStore, metrics: Metrics) -> None:
        self.settings = settings
        self.store = store
        self.feedback_store = feedback
        self.metrics = metrics
        self.recognizer = load_recognizer(settings)  # None unless OCR_RECOGNIZER_PATH is set

    def model(self) -> LoadedModel:
        """The serving model; `NoModelError` when none is loaded."""
        model = self.store.current
        if model is None:
            raise NoModelError("No model is loaded yet; try again shortly.")
        return model

    def recognizer_info(self) -> dict | None:
        """GET /model's `recognizer`: whether the line recognizer is loaded, from where, its scores (None when
        OCR_RECOGNIZER_PATH is unset)."""
        state = self.recognizer
        if state is None:
            return None
        return {"loaded": state.reader is not None, "source": state.where, "detail": state.detail,
                **{k: state.spec.get(k) for k in ("test_string_accuracy", "parity_max_abs_diff")}}

    def _prepare(self, item: ImageInput) -> Prepared:
        if item.pixels is not None:
            return prepare_gray(item.pixels)
        decoded = decode_image(item.data or b"", max_bytes=self.settings.max_bytes,
                               max_pixels=self.settings.max_pixels)
        return prepare_gray(decoded.gray, decoded.scale)

    def ood_threshold(self, model: LoadedModel) -> float | None:
        """The not-a-digit threshold in force: `OCR_OOD_THRESHOLD`, else the model's stored one (None without
        a detector)."""
        if model.spec.ood is None:
            return None
        return ood_threshold(model.spec.ood.threshold, self.settings.ood_threshold)

    def classify(self, model: LoadedModel, images: list[np.ndarray | None],
                 reasons: list[str | None] | None = None) -> list[Answer]:
        """Run the model once on every present image; None images are `no_digit`, and so are marks whose
        not-a-digit score is below the threshold (reason `not_a_digit`, probabilities still given)."""
        present = [i for i, img in enumerate(images) if img is not None]
        probs, scores = model.predict(np.stack([images[i] for i in present])) if present else (np.zeros((0, 10)), None)
        answers: list[Answer] = [Answer(None, 0.0, [0.0] * 10, "no_digit", None,
                                        (reasons or [None] * len(images))[i] or "blank")
                                 for i in range(len(images))]
        cut = self.ood_threshold(model)
        for k, (row, i) in enumerate(zip(probs, present, strict=True)):
            v = judge(row, self.settings.uncertain_threshold, None if scores is None else scores[k], cut)
            answers[i] = Answer(v.digit, v.confidence, [round(float(p), 6) for p in row], v.status, images[i],
                                v.reason, v.ood_score)
        for answer in answers:
            self.metrics.observe_prediction(answer.digit, answer.status, answer.reason)
        return answers

    def _response(self, pid: str, answer: Answer, model: LoadedModel) -> dict:
        return {"prediction_id": pid, "digit": answer.digit, "confidence": round(answer.confidence, 6),
                "probabilities": answer.probabilities, "status": answer.status,
                "model": {"name": model.info.name, "version": model.info.version}, "reason": answer.reason,
                "ood_score": answer.ood_score, "input_image": None if answer.image is None else png_data_url(answer.image)}

    def _record(self, model: LoadedModel, items: list[tuple[str, str, Answer | None]]) -> None:
        """Remember the answers for feedback; while the database is down the answers still go out, counted."""
        try:
            self.feedback_store.record_predictions([
                PredictionRecord(pid, kind, None if a is None else a.image, None if a is None else a.digit,
                                 0.0 if a is None else a.confidence, "read" if a is None else a.status,
                                 model.info.name, model.info.version) for pid, kind, a in items])
        except StoreUnavailable:
            self.metrics.unrecorded.inc(len(items))

    def predict(self, items: list[ImageInput]) -> list[dict]:
        """Answers for one or more images, in order."""
        prepared = [self._prepare(item) for item in items]
        model = self.model()
        answers = self.classify(model, [p.image for p in prepared], [p.no_digit for p in prepared])
        ids = [uuid.uuid4().hex for _ in answers]
        self._record(model, [(pid, "digit", a) for pid, a in zip(ids, answers, strict=True)])
        return [self._response(pid, a, model) for pid, a in zip(ids, answers, strict=True)]

    def _limits(self) -> ReadLimits:
        return ReadLimits(self.settings.max_bytes, self.settings.max_pixels, self.settings.read_max_digits,
                          self.settings.uncertain_threshold, self.settings.ood_threshold,
                          self.settings.read_max_lines)

    def _page(self, item: ImageInput) -> Page:
        return find_page(item.data, item.pixels, self._limits())

    def read(self, item: ImageInput) -> dict:
        """Every line of digits, top to bottom, each left to right (`lines`); `digits` holds them all."""
        return self._read_page(self._page(item))

    def read_auto(self, item: ImageInput) -> dict:
        """One digit or a row, whichever the image holds: two or more separate digits are read as a row
        (`kind` "row", the /read answer), anything else as one digit (`kind` "digit", the /predict answer)."""
        page = self._page(item)
        if len(page.segments) >= 2:
            return self._read_page(page)
        return {**self.predict([item])[0], "kind": "digit"}

    def _readings(self, model: LoadedModel, page: Page) -> list[tuple[Reading, list[Answer]]]:
        """Each line's reading and its answers: the classifier's on the line's segments, or with the line
        recognizer loaded, the reading `cnn_ocr.line_read.choose` keeps (`ocr read --recognizer`'s path)."""
        reader = self.recognizer.reader if self.recognizer else None
        if reader is None:
            answers = iter(self.classify(model, [s.image for s in page.segments]))
            readings = [Reading([], "segmentation", line.segments) for line in page.lines]
            return [(r, [next(answers) for _ in r.segments]) for r in readings]
        stored = model.spec.ood.threshold if model.spec.ood is not None else None
        out = []
        for r in read_lines(page.lines, model.predict, self._limits(), reader, stored):
            answers = [Answer(d["digit"], d["confidence"], [], d["status"], s.image, d["reason"], d["ood_score"])
                       for d, s in zip(r.digits, r.segments, strict=True)]
            for a in answers:
                self.metrics.observe_prediction(a.digit, a.status, a.reason)
            out.append((r, answers))
        return out

    def _read_page(self, page: Page) -> dict:
        model = self.model()
        readings = self._readings(model, page)
        read_id, records, lines = uuid.uuid4().hex, [], []
        for reading, answers in readings:
            digits = []
            for a, s in zip(answers, reading.segments, strict=True):
                pid = uuid.uuid4().hex
                records.append((pid, "digit", a))
                digits.append({"digit": a.digit, "confidence": round(a.confidence, 6), "status": a.status,
                               "reason": a.reason, "ood_score": a.ood_score, "box": list(s.box),
                               "prediction_id": pid, "input_image": png_data_url(s.image)})
            if digits:
                lines.append({**line_field(Reading(digits, reading.source)), "source": reading.source})
        self._record(model, [(read_id, "read", None), *records])
        digits = [d for line in lines for d in line["digits"]]
        return {"prediction_id": read_id, "text": "\n".join(line["text"] for line in lines),
                "status": line_status([d["status"] for d in digits]), "digits": digits,
                "model": {"name": model.info.name, "version": model.info.version},
                "kind": "page" if len(lines) > 1 else "row", "lines": lines}

    def add_feedback(self, prediction_id: str, label: int | str) -> dict:
        """Store a correction (a digit or "not_a_digit"); `UnknownPrediction` or `InvalidFeedback` when it
        cannot be."""
        record = self.feedback_store.add_feedback(prediction_id, label)
        self.metrics.observe_feedback(record.predicted == (None if record.public_label == NOT_A_DIGIT else record.label))
        return {"stored": True, "prediction_id": record.prediction_id, "label": record.public_label,
                "predicted": record.predicted, "model_version": record.model_version}
