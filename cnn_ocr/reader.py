"""Reading the digits of an image, free of HTTP: the path `/read` and `ocr batch` share.

Bytes are decoded (`cnn_ocr.decode`), separated into ink (`cnn_ocr.preprocess`), split into digits
(`cnn_ocr.segment`), and every digit goes through the model's probabilities. `read_many` runs the model once
for all the digits of many images, which is what makes batch reading fast; a file that cannot be read
becomes an answer with an error, never an exception.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cnn_ocr.decode import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, ImageError, decode_image
from cnn_ocr.preprocess import extract_ink
from cnn_ocr.segment import Segment, segment_digits

log = logging.getLogger(__name__)

Probabilities = Callable[[np.ndarray], np.ndarray]  # uint8 (N, 28, 28) -> float (N, 10)


@dataclass(frozen=True)
class ReadLimits:
    """The service's limits and threshold (its settings' defaults)."""

    max_bytes: int = DEFAULT_MAX_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_digits: int = 64
    uncertain_threshold: float = 0.7


@dataclass(frozen=True)
class Line:
    """The digits found in one image, left to right, or why there are none."""

    segments: list[Segment] = field(default_factory=list)
    no_digit: str | None = None


def judge(row: np.ndarray, threshold: float) -> tuple[int, float, str]:
    """One row of probabilities -> (digit, confidence, "ok" | "uncertain")."""
    digit = int(row.argmax())
    confidence = float(row[digit])
    return digit, confidence, "ok" if confidence >= threshold else "uncertain"


def line_status(statuses: Sequence[str]) -> str:
    """A line's status from its digits' statuses: no_digit, uncertain (any digit is) or ok."""
    if not statuses:
        return "no_digit"
    return "uncertain" if "uncertain" in statuses else "ok"


def find_digits(data: bytes | None, pixels: np.ndarray | None, limits: ReadLimits) -> Line:
    """Decode (unless grayscale `pixels` are given) and split into digits; `ImageError` for bad input."""
    if pixels is not None:
        gray, scale = pixels, 1.0
    else:
        decoded = decode_image(data or b"", max_bytes=limits.max_bytes, max_pixels=limits.max_pixels)
        gray, scale = decoded.gray, decoded.scale
    ink = extract_ink(gray, scale)
    segments = segment_digits(ink, limits.max_digits)
    return Line(segments, None if segments else (ink.no_digit or "blank"))


def _error_answer(message: str) -> dict[str, Any]:
    return {"text": None, "status": "error", "reason": None, "digits": [], "error": message}


def _find(data: bytes, limits: ReadLimits) -> Line | str:
    try:
        return find_digits(data, None, limits)
    except ImageError as exc:
        return f"{exc.kind}: {exc}"
    except Exception as exc:  # a library bug on one odd file must not end a job of millions
        log.warning("unexpected %s while reading an image: %s", type(exc).__name__, exc)
        return f"internal: {type(exc).__name__}: {str(exc)[:200]}"


def read_many(items: Sequence[bytes], probabilities: Probabilities, limits: ReadLimits) -> list[dict[str, Any]]:
    """Answers for many image files, in order, with one model call for all their digits.

    Each answer: text, status (ok / uncertain / no_digit / error), reason (why no digit), digits (digit,
    confidence, status, box [x, y, w, h] in the original image's pixels) and error (None when readable).
    """
    lines = [_find(data, limits) for data in items]
    crops = [s.image for line in lines if isinstance(line, Line) for s in line.segments]
    probs = probabilities(np.stack(crops)) if crops else np.zeros((0, 10))
    answers: list[dict[str, Any]] = []
    k = 0
    for line in lines:
        if isinstance(line, str):
            answers.append(_error_answer(line))
            continue
        digits = []
        for segment in line.segments:
            digit, confidence, status = judge(probs[k], limits.uncertain_threshold)
            k += 1
            digits.append({"digit": digit, "confidence": round(confidence, 6), "status": status,
                           "box": [int(v) for v in segment.box]})
        answers.append({"text": "".join(str(d["digit"]) for d in digits),
                        "status": line_status([d["status"] for d in digits]), "reason": line.no_digit,
                        "digits": digits, "error": None})
    return answers
