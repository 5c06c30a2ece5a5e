"""Splitting a line of handwritten digits into single digits, left to right.

Connected components of the ink mask (8-connected) are the starting pieces. Pieces that overlap
horizontally belong to one digit (the two strokes of a 4 or a 5, a broken loop) and are merged, as are
short pieces right next to another piece; pieces
much wider than the line is tall are touching digits and are split at the column with the least ink;
specks much smaller than the line are dropped. Each digit then goes through MNIST's recipe
(`center_digit`) exactly like a single uploaded digit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cnn_ocr.decode import InvalidImage
from cnn_ocr.preprocess import Ink, center_digit

# Pieces overlapping by at least this share of the narrower one are one digit; a piece shorter than this
# share of the line height merges with anything it overlaps at all.
MERGE_OVERLAP = 0.5
SHORT_PIECE = 0.6
# A short piece also joins a neighbour that is not overlapping but closer than this share of the line height
# (a detached bar of a 5 that starts right of the body).
NEAR_PIECE = 0.15
# A group wider than this many line heights holds touching digits; the cut is searched in the middle part.
SPLIT_WIDTH = 1.45
SPLIT_SEARCH = (0.25, 0.75)
# Groups both narrower and shorter than this share of the line height are specks, not digits.
SPECK = 0.25
MAX_PIECES_PER_DIGIT = 4


@dataclass(frozen=True)
class Segment:
    """One digit: its box (x, y, w, h) in the original image's pixels and its 28x28 model input."""

    box: tuple[int, int, int, int]
    image: np.ndarray


@dataclass
class _Group:
    labels: set[int]
    x0: int
    x1: int  # exclusive
    y0: int
    y1: int  # exclusive

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    def absorb(self, other: _Group) -> None:
        self.labels |= other.labels
        self.x0, self.x1 = min(self.x0, other.x0), max(self.x1, other.x1)
        self.y0, self.y1 = min(self.y0, other.y0), max(self.y1, other.y1)


def _pieces(mask: np.ndarray, limit: int) -> tuple[np.ndarray, list[_Group]]:
    from scipy import ndimage

    labels, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if n > limit:
        raise InvalidImage(f"The image holds {n} separate marks; that is too many to read as digits.")
    groups = [_Group({i + 1}, s[1].start, s[1].stop, s[0].start, s[0].stop)
              for i, s in enumerate(ndimage.find_objects(labels)) if s is not None]
    return labels, groups


def _should_merge(a: _Group, b: _Group, line: float) -> bool:
    overlap = min(a.x1, b.x1) - max(a.x0, b.x0)
    short = min(a.height, b.height) < SHORT_PIECE * line
    if overlap <= 0:
        return short and -overlap <= NEAR_PIECE * line
    return overlap >= MERGE_OVERLAP * min(a.width, b.width) or short


def _merge(groups: list[_Group], line: float) -> list[_Group]:
    groups = sorted(groups, key=lambda g: g.x0)
    merged = True
    while merged:
        merged = False
        for i in range(len(groups)):
            for j in range(i + 1, len(groups)):
                if _should_merge(groups[i], groups[j], line):
                    groups[i].absorb(groups.pop(j))
                    merged = True
                    break
            if merged:
                break
    return sorted(groups, key=lambda g: g.x0)


def _tight(ink: np.ndarray, box: tuple[int, int, int, int]) -> tuple[int, int, int, int] | None:
    x0, x1, y0, y1 = box
    region = ink[y0:y1, x0:x1]
    rows, cols = np.flatnonzero(region.any(1)), np.flatnonzero(region.any(0))
    if rows.size == 0:
        return None
    return x0 + cols[0], x0 + cols[-1] + 1, y0 + rows[0], y0 + rows[-1] + 1


def _split(ink: np.ndarray, box: tuple[int, int, int, int], line: float, depth: int = 0
           ) -> list[tuple[int, int, int, int]]:
    x0, x1, y0, y1 = box
    width = x1 - x0
    if width <= SPLIT_WIDTH * line or depth > 6:
        return [box]
    columns = ink[y0:y1, x0:x1].sum(axis=0)
    lo, hi = int(width * SPLIT_SEARCH[0]), int(np.ceil(width * SPLIT_SEARCH[1]))
    cut = x0 + lo + int(np.argmin(columns[lo:hi]))
    out = []
    for part in ((x0, cut, y0, y1), (cut, x1, y0, y1)):
        tight = _tight(ink, part)
        if tight is not None:
            out.extend(_split(ink, tight, line, depth + 1))
    return out


def segment_digits(ink: Ink, max_digits: int = 64) -> list[Segment]:
    """The digits of a line, left to right. Raises `ImageError` when the image holds far too many marks."""
    if not ink.mask.any():
        return []
    labels, groups = _pieces(ink.mask, MAX_PIECES_PER_DIGIT * max_digits + 16)
    line = float(np.percentile([g.height for g in groups], 75))
    groups = _merge(groups, line)
    line = float(np.median([g.height for g in groups if g.height >= SHORT_PIECE * line] or [line]))
    segments: list[Segment] = []
    for group in groups:
        if group.width < SPECK * line and group.height < SPECK * line:
            continue
        own = np.where(np.isin(labels[group.y0:group.y1, group.x0:group.x1], list(group.labels)),
                       ink.image[group.y0:group.y1, group.x0:group.x1], 0).astype(np.float32)
        for x0, x1, y0, y1 in _split(own, (0, group.width, 0, group.height), line):
            box = (round((group.x0 + x0) * ink.scale), round((group.y0 + y0) * ink.scale),
                   round((x1 - x0) * ink.scale), round((y1 - y0) * ink.scale))
            segments.append(Segment(box, center_digit(own[y0:y1, x0:x1])))
    if len(segments) > max_digits:
        raise InvalidImage(f"Found {len(segments)} digits; at most {max_digits} are read per image.")
    return segments
