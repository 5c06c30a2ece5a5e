"""Reading one line two ways and keeping the surer: segmentation + classifier, and the line recognizer.

Segmentation splits the ink into digits and classifies each; the recognizer (CRNN + CTC) reads the whole
line and needs no split, which is what touching and overlapping digits need. Both readings come with a
box and a confidence per digit. When they count a different number of digits, the recognizer's is kept if
segmentation cut a piece wider than the line is tall (touching digits) or the recognizer is the surer;
otherwise the reading whose weakest digit is the more confident (ties keep segmentation). The answer says
which (`source`). The recognizer's digits are cropped from the ink and scored by the classifier's
not-a-digit detector too, so a mark that is not a digit is refused whichever reader read it. A page is first
split into its lines (`cnn_ocr.page`) and each line read so. Without a recognizer this is exactly `/read`'s
reading (`cnn_ocr.reader`); `ocr read --recognizer` and `/read` with `OCR_RECOGNIZER_PATH` share `read_lines`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cnn_ocr.decode import decode_image
from cnn_ocr.page import PageLine, find_lines
from cnn_ocr.preprocess import Ink, center_digit, extract_ink
from cnn_ocr.reader import (
    NOT_A_DIGIT,
    Predict,
    ReadLimits,
    digit_answers,
    line_answer,
    line_status,
    line_text,
    ood_threshold,
)
from cnn_ocr.segment import Segment, segment_digits
from cnn_ocr.spec import not_a_digit

# A piece this many times wider than the line's median digit height holds more than one digit.
WIDE = 1.0


@dataclass(frozen=True)
class Reading:
    """Digits of a line (digit, confidence, status, reason, ood_score, box), who read them, and the crops
    they were read from (box + the 28x28 image, one per digit; empty when not kept)."""

    digits: list[dict[str, Any]]
    source: str
    segments: list[Segment] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The digits as a string (`?` for a mark that is not a digit)."""
        return line_text([d["digit"] for d in self.digits])

    @property
    def weakest(self) -> float:
        """The lowest digit confidence (0 when nothing was read)."""
        return min((d["confidence"] for d in self.digits), default=0.0)


def ink_of(data: bytes | None, pixels: np.ndarray | None, limits: ReadLimits) -> Ink:
    """Decode (unless grayscale `pixels` are given) and separate the ink; `ImageError` for bad input."""
    if pixels is not None:
        return extract_ink(pixels, 1.0)
    decoded = decode_image(data or b"", max_bytes=limits.max_bytes, max_pixels=limits.max_pixels)
    return extract_ink(decoded.gray, decoded.scale)


def segmented(ink: Ink, predict: Predict, limits: ReadLimits, stored_threshold: float | None = None) -> Reading:
    """Segmentation + classifier (and its not-a-digit score), as `/read` does it for one row."""
    return classified(segment_digits(ink, limits.max_digits), predict, limits, stored_threshold)


def classified(segments: list[Segment], predict: Predict, limits: ReadLimits,
               stored_threshold: float | None = None) -> Reading:
    """The classifier's reading of a line's segments (and their not-a-digit scores)."""
    probs, scores = predict(np.stack([s.image for s in segments])) if segments else (np.zeros((0, 10)), None)
    cut = ood_threshold(stored_threshold, limits.ood_threshold)
    return Reading(digit_answers(segments, probs, scores, limits.uncertain_threshold, cut), "segmentation",
                   list(segments))


def recognized(ink: Ink, recognizer: Any, predict: Predict, limits: ReadLimits,
               stored_threshold: float | None = None) -> Reading:
    """The line recognizer on the same ink; boxes from the CTC alignment. Each digit's crop also goes through
    the classifier's not-a-digit score, so a mark that is not a digit is refused as segmentation refuses it."""
    found = recognizer.read(ink.image, 1.0)[:limits.max_digits]
    segments = [Segment(_scaled(d.box, ink.scale), center_digit(_crop(ink.image, d.box))) for d in found]
    scores = predict(np.stack([s.image for s in segments]))[1] if segments else None
    cut = ood_threshold(stored_threshold, limits.ood_threshold)
    digits = []
    for i, (d, seg) in enumerate(zip(found, segments, strict=True)):
        score = None if scores is None else round(float(scores[i]), 6)
        if score is not None and cut is not None and not_a_digit(score, cut):
            digits.append({"digit": None, "confidence": 0.0, "status": "no_digit", "reason": NOT_A_DIGIT,
                           "ood_score": score, "box": list(seg.box)})
            continue
        digits.append({"digit": d.digit, "confidence": round(d.confidence, 6),
                       "status": "ok" if d.confidence >= limits.uncertain_threshold else "uncertain",
                       "reason": None, "ood_score": score, "box": list(seg.box)})
    return Reading(digits, "recognizer", segments)


def _crop(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    x, y, w, h = box
    return image[y:y + h, x:x + w].astype(np.float32)


def _scaled(box: tuple[int, int, int, int], scale: float) -> tuple[int, int, int, int]:
    return tuple(int(round(v * scale)) for v in box)  # type: ignore[return-value]


def choose(seg: Reading, rec: Reading) -> Reading:
    """The kept reading. When the two count a different number of digits, the recognizer's if segmentation
    cut a piece wider than the line is tall (touching digits read as one) or the recognizer is the surer;
    otherwise the one whose weakest digit is the more confident (ties keep segmentation)."""
    if not rec.digits:
        return seg
    if len(rec.digits) != len(seg.digits):
        height = float(np.median([d["box"][3] for d in seg.digits])) if seg.digits else 0.0
        wide = any(d["box"][2] > WIDE * height for d in seg.digits)
        return rec if wide or rec.weakest > seg.weakest else seg
    return rec if rec.weakest > seg.weakest else seg


def line_field(reading: Reading) -> dict[str, Any]:
    """The `lines` entry of a reading: text, box around its digits, status and digits."""
    boxes = [d["box"] for d in reading.digits]
    x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    x1, y1 = max(b[0] + b[2] for b in boxes), max(b[1] + b[3] for b in boxes)
    return {"text": reading.text, "box": [x0, y0, x1 - x0, y1 - y0],
            "status": line_status([d["status"] for d in reading.digits]), "digits": reading.digits}


def read_lines(lines: list[PageLine], predict: Predict, limits: ReadLimits, recognizer: Any | None = None,
               stored_threshold: float | None = None) -> list[Reading]:
    """Each line of a page read by segmentation + classifier and, with a `recognizer`, the surer of that and
    the recognizer's reading (`choose`)."""
    readings = []
    for line in lines:
        reading = classified(line.segments, predict, limits, stored_threshold)
        if recognizer is not None:
            reading = choose(reading, recognized(line.ink, recognizer, predict, limits, stored_threshold))
        readings.append(reading)
    return readings


def read_line(data: bytes | None, pixels: np.ndarray | None, predict: Predict, limits: ReadLimits,
              recognizer: Any | None = None, stored_threshold: float | None = None) -> dict[str, Any]:
    """One image's answer (`/read`'s fields, `lines` too, and `source`: `recognizer` when any line kept the
    recognizer's reading); `ImageError` for bad input."""
    ink = ink_of(data, pixels, limits)
    readings = read_lines(find_lines(ink, limits.max_lines, limits.max_digits), predict, limits, recognizer,
                          stored_threshold)
    digits = [d for r in readings for d in r.digits]
    no_digit = None if digits else (ink.no_digit or "blank")
    lines = [line_field(r) for r in readings if r.digits]
    source = "recognizer" if any(r.source == "recognizer" for r in readings) else "segmentation"
    return {**line_answer(digits, no_digit), "text": "\n".join(line["text"] for line in lines), "lines": lines,
            "source": source}
