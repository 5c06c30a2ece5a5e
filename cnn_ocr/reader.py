"""Reading the digits of an image, free of HTTP: the path `/read` and `ocr batch` share.

Bytes are decoded (`cnn_ocr.decode`), separated into ink (`cnn_ocr.preprocess`), split into lines
(`cnn_ocr.page`) and digits (`cnn_ocr.segment`), and every digit goes through the model's probabilities and,
when the model has a detector, its not-a-digit score: a mark scoring below the threshold is `no_digit` for
reason `not_a_digit` (written `?` in the text).
`read_many` runs the model once for all the digits of many images, which is what makes batch reading
fast; a file that cannot be read becomes an answer with an error, never an exception.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cnn_ocr.decode import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, ImageError, decode_image
from cnn_ocr.page import PageLine, find_lines
from cnn_ocr.preprocess import extract_ink
from cnn_ocr.segment import Segment, segment_digits
from cnn_ocr.spec import not_a_digit

log = logging.getLogger(__name__)

# uint8 (N, 28, 28) -> (probabilities float (N, 10), not-a-digit scores (N,) or None without a detector)
Predict = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]]
# uint8 (N, 28, 28) -> probabilities (N, 10) alone (a model without its not-a-digit score)
Probabilities = Callable[[np.ndarray], np.ndarray]
NOT_A_DIGIT = "not_a_digit"
UNREAD = "?"  # how `text` writes a mark that is not a digit


@dataclass(frozen=True)
class ReadLimits:
    """The service's limits and threshold (its settings' defaults)."""

    max_bytes: int = DEFAULT_MAX_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_digits: int = 64
    uncertain_threshold: float = 0.7
    ood_threshold: float | None = None  # overrides the model's stored not-a-digit threshold when set
    max_lines: int = 16


@dataclass(frozen=True)
class Line:
    """The digits found in one image, left to right, or why there are none."""

    segments: list[Segment] = field(default_factory=list)
    no_digit: str | None = None


@dataclass(frozen=True)
class Page:
    """The lines of digits found in one image, in reading order, or why there are none."""

    lines: list[PageLine] = field(default_factory=list)
    no_digit: str | None = None

    @property
    def segments(self) -> list[Segment]:
        """Every digit of the page, line after line."""
        return [s for line in self.lines for s in line.segments]


@dataclass(frozen=True)
class Verdict:
    """The answer for one mark: digit (None when it is not one), confidence, status, reason and score."""

    digit: int | None
    confidence: float
    status: str
    reason: str | None = None
    ood_score: float | None = None


def judge(row: np.ndarray, threshold: float, score: float | None = None,
          ood_threshold: float | None = None) -> Verdict:
    """One row of probabilities (and its not-a-digit score) -> the verdict: `no_digit` / `not_a_digit` when the
    score is below `ood_threshold`, else the top digit, "ok" or "uncertain" by its probability."""
    ood = None if score is None else round(float(score), 6)
    if score is not None and ood_threshold is not None and not_a_digit(score, ood_threshold):
        return Verdict(None, 0.0, "no_digit", NOT_A_DIGIT, ood)
    digit = int(row.argmax())
    confidence = float(row[digit])
    return Verdict(digit, confidence, "ok" if confidence >= threshold else "uncertain", None, ood)


def ood_threshold(stored: float | None, override: float | None) -> float | None:
    """The threshold in force: the override (`OCR_OOD_THRESHOLD`) when set, else the model's stored one."""
    return override if override is not None else stored


def line_status(statuses: Sequence[str]) -> str:
    """A line's status from its digits' statuses: no_digit (none, or none is a digit), uncertain (any digit
    is, or a mark is not a digit) or ok."""
    if all(s == "no_digit" for s in statuses):
        return "no_digit"
    return "ok" if all(s == "ok" for s in statuses) else "uncertain"


def line_text(digits: Sequence[int | None]) -> str:
    """The text of a line: its digits, `?` for each mark that is not one."""
    return "".join(UNREAD if d is None else str(d) for d in digits)


def _ink(data: bytes | None, pixels: np.ndarray | None, limits: ReadLimits):
    """The ink of the image: decoded from `data` unless grayscale `pixels` are given."""
    if pixels is not None:
        return extract_ink(pixels, 1.0)
    decoded = decode_image(data or b"", max_bytes=limits.max_bytes, max_pixels=limits.max_pixels)
    return extract_ink(decoded.gray, decoded.scale)


def find_digits(data: bytes | None, pixels: np.ndarray | None, limits: ReadLimits) -> Line:
    """Decode (unless grayscale `pixels` are given) and split into digits; `ImageError` for bad input."""
    ink = _ink(data, pixels, limits)
    segments = segment_digits(ink, limits.max_digits)
    return Line(segments, None if segments else (ink.no_digit or "blank"))


def find_page(data: bytes | None, pixels: np.ndarray | None, limits: ReadLimits) -> Page:
    """Decode (unless grayscale `pixels` are given) and find every line of digits, each split into digits;
    `ImageError` for bad input or more lines / digits than `limits` allow. One row is split as `find_digits`
    splits it."""
    ink = _ink(data, pixels, limits)
    lines = find_lines(ink, limits.max_lines, limits.max_digits)
    return Page(lines, None if lines else (ink.no_digit or "blank"))


def page_lines(page: Page, digits: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The `lines` field: per line its text, box [x, y, w, h], status and digits (`digits` are the page's
    answers, line after line, as `Page.segments` orders them)."""
    out, k = [], 0
    for line in page.lines:
        mine = list(digits[k:k + len(line.segments)])
        k += len(line.segments)
        out.append({"text": line_text([d["digit"] for d in mine]), "box": [int(v) for v in line.box],
                    "status": line_status([d["status"] for d in mine]), "digits": mine})
    return out


def _error_answer(message: str) -> dict[str, Any]:
    return {"text": None, "status": "error", "reason": None, "digits": [], "ood_score": None, "error": message,
            "lines": []}


def _find(data: bytes, limits: ReadLimits) -> Page | str:
    try:
        return find_page(data, None, limits)
    except ImageError as exc:
        return f"{exc.kind}: {exc}"
    except Exception as exc:  # a library bug on one odd file must not end a job of millions
        log.warning("unexpected %s while reading an image: %s", type(exc).__name__, exc)
        return f"internal: {type(exc).__name__}: {str(exc)[:200]}"


def read_many(items: Sequence[bytes], predict: Predict, limits: ReadLimits,
              stored_threshold: float | None = None) -> list[dict[str, Any]]:
    """Answers for many image files, in order, with one model call for all their digits.

    Each answer: text, status (ok / uncertain / no_digit / error), reason (why no digit), digits (digit,
    confidence, status, reason, ood_score, box [x, y, w, h] in the original image's pixels), ood_score (the
    lowest of its digits', None without a detector or digits), error (None when readable) and lines (per
    line of a page: text, box, status, digits); `text` is the lines' texts joined by newlines.
    `stored_threshold` is the model's not-a-digit threshold; `limits.ood_threshold` overrides it.
    """
    lines = [_find(data, limits) for data in items]
    crops = [s.image for line in lines if isinstance(line, Page) for s in line.segments]
    probs, scores = predict(np.stack(crops)) if crops else (np.zeros((0, 10)), None)
    cut = ood_threshold(stored_threshold, limits.ood_threshold)
    answers: list[dict[str, Any]] = []
    k = 0
    for line in lines:
        if isinstance(line, str):
            answers.append(_error_answer(line))
            continue
        n = len(line.segments)
        digits = digit_answers(line.segments, probs[k:k + n], None if scores is None else scores[k:k + n],
                               limits.uncertain_threshold, cut)
        k += n
        answers.append(page_answer(line, digits))
    return answers


def digit_answers(segments: Sequence[Any], probs: np.ndarray, scores: np.ndarray | None, uncertain: float,
                  cut: float | None) -> list[dict[str, Any]]:
    """One entry per segment: digit, confidence, status, reason, ood_score and box [x, y, w, h]."""
    out = []
    for i, segment in enumerate(segments):
        v = judge(probs[i], uncertain, None if scores is None else scores[i], cut)
        out.append({"digit": v.digit, "confidence": round(v.confidence, 6), "status": v.status,
                    "reason": v.reason, "ood_score": v.ood_score, "box": [int(x) for x in segment.box]})
    return out


def line_answer(digits: list[dict[str, Any]], no_digit: str | None) -> dict[str, Any]:
    """A readable line's answer: text (`?` for a mark that is not a digit), status, reason, digits, ood_score
    (the lowest of its digits', None without a detector or digits), error None."""
    known = [d["ood_score"] for d in digits if d.get("ood_score") is not None]
    status = line_status([d["status"] for d in digits])
    return {"text": line_text([d["digit"] for d in digits]), "status": status,
            "reason": no_digit or (NOT_A_DIGIT if digits and status == "no_digit" else None),
            "digits": digits, "ood_score": min(known) if known else None, "error": None}


def page_answer(page: Page, digits: list[dict[str, Any]]) -> dict[str, Any]:
    """`line_answer` for a whole page: `text` holds the lines' texts joined by newlines, `lines` each line."""
    lines = page_lines(page, digits)
    return {**line_answer(digits, page.no_digit), "text": "\n".join(line["text"] for line in lines),
            "lines": lines}
