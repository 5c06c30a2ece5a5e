"""Whole pages: the lines of digits an image holds, each split into digits, in reading order.

The ink's connected pieces that are tall enough to be (part of) a digit are linked into lines: two pieces
share a line when they overlap vertically by `ROW_OVERLAP` of the shorter one and the horizontal gap
between them is at most `ROW_GAP` of the taller one's height, so two numbers written side by side, far
apart, are two lines; pieces stacked closely one above the other are one digit's parts. Smaller pieces
(dots, broken-off strokes) join the line whose band holds them and whose ink is nearest. An image with one
line is split exactly as a single row always was
(`cnn_ocr.segment.segment_digits` on the whole ink); with several, each line's own ink is split alone.
Lines come top to bottom, and left to right among lines that share a band.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from cnn_ocr.decode import InvalidImage
from cnn_ocr.preprocess import Ink
from cnn_ocr.segment import MAX_PIECES_PER_DIGIT, Segment, _Group, _pieces, segment_digits

ROW_OVERLAP = 0.3
ROW_GAP = 3.0
# Pieces one above the other, overlapping by half the narrower's width with a gap under this share of the
# taller's height, are parts of one digit (the loops of an 8 drawn apart), not two lines.
STACK_OVERLAP = 0.5
STACK_GAP = 0.3
# A piece shorter than this share of the page's tall pieces (75th percentile) seeds no line of its own.
TALL = 0.4


@dataclass(frozen=True, eq=False)
class PageLine:
    """One line of digits: its digits left to right, its own ink (the page's, other lines zeroed) and its
    box (x, y, w, h) in the original's pixels."""

    segments: list[Segment]
    ink: Ink

    @property
    def box(self) -> tuple[int, int, int, int]:
        """The box around all its digits."""
        boxes = [s.box for s in self.segments]
        x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
        x1, y1 = max(b[0] + b[2] for b in boxes), max(b[1] + b[3] for b in boxes)
        return x0, y0, x1 - x0, y1 - y0


def _linked(a: _Group, b: _Group) -> bool:
    overlap = min(a.y1, b.y1) - max(a.y0, b.y0)
    gap = max(a.x0, b.x0) - min(a.x1, b.x1)
    if overlap >= ROW_OVERLAP * min(a.height, b.height) and gap <= ROW_GAP * max(a.height, b.height):
        return True
    return -gap >= STACK_OVERLAP * min(a.width, b.width) and -overlap <= STACK_GAP * max(a.height, b.height)


def _rows(tall: list[_Group]) -> list[list[int]]:
    """Indices of `tall` grouped into lines (single linkage over `_linked`)."""
    parent = list(range(len(tall)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(tall)):
        for j in range(i + 1, len(tall)):
            if _linked(tall[i], tall[j]):
                parent[root(i)] = root(j)
    rows: dict[int, list[int]] = {}
    for i in range(len(tall)):
        rows.setdefault(root(i), []).append(i)
    return list(rows.values())


def _nearest_row(piece: _Group, bands: list[_Group]) -> int | None:
    """The line whose band holds the piece's centre row and whose box is nearest to it, if any does."""
    cy = (piece.y0 + piece.y1) / 2
    best, best_gap = None, float("inf")
    for k, band in enumerate(bands):
        reach = band.height / 2
        if band.y0 - reach <= cy <= band.y1 + reach:
            gap = max(band.x0 - piece.x1, piece.x0 - band.x1, 0)
            if gap <= ROW_GAP * band.height and gap < best_gap:
                best, best_gap = k, gap
    return best


def _line_labels(groups: list[_Group]) -> list[set[int]]:
    """The piece labels of each line of the page (lines in no particular order)."""
    reference = float(np.percentile([g.height for g in groups], 75))
    tall = [g for g in groups if g.height >= TALL * reference]
    bands = []
    for row in _rows(tall):
        band = _Group(set(), tall[row[0]].x0, tall[row[0]].x1, tall[row[0]].y0, tall[row[0]].y1)
        for i in row:
            band.absorb(tall[i])
        bands.append(band)
    for piece in groups:
        if piece.height < TALL * reference:
            k = _nearest_row(piece, bands)
            if k is not None:
                bands[k].labels |= piece.labels
    return [b.labels for b in bands]


def _own_ink(ink: Ink, labels: np.ndarray, keep: set[int]) -> Ink:
    """The ink of one line alone: every other piece zeroed (same frame, so boxes need no shift)."""
    mine = np.isin(labels, list(keep))
    return replace(ink, image=np.where(mine, ink.image, 0).astype(ink.image.dtype), mask=ink.mask & mine,
                   strong=ink.strong & mine)


def reading_order(lines: list[PageLine]) -> list[PageLine]:
    """Top to bottom; lines sharing a band (the centre of one within the other's rows) left to right."""
    rest = sorted(lines, key=lambda line: line.box[1])
    out: list[PageLine] = []
    while rest:
        first = rest[0]
        top, bottom = first.box[1], first.box[1] + first.box[3]
        band = [line for line in rest if top <= line.box[1] + line.box[3] / 2 <= bottom]
        out.extend(sorted(band, key=lambda line: line.box[0]))
        rest = [line for line in rest if line not in band]
    return out


def find_lines(ink: Ink, max_lines: int = 16, max_digits: int = 64) -> list[PageLine]:
    """The lines of digits in `ink`, in reading order. `InvalidImage` when there are more than `max_lines`
    lines or `max_digits` digits in all."""
    if not ink.mask.any():
        return []
    labels, groups = _pieces(ink.mask, MAX_PIECES_PER_DIGIT * max_digits + 16)
    line_labels = _line_labels(groups)
    if len(line_labels) <= 1:
        segments = segment_digits(ink, max_digits)
        return [PageLine(segments, ink)] if segments else []
    if len(line_labels) > max_lines:
        raise InvalidImage(f"Found {len(line_labels)} lines of digits; at most {max_lines} are read per image "
                           "(OCR_READ_MAX_LINES): send fewer lines per image.")
    inks = [_own_ink(ink, labels, keep) for keep in line_labels]
    lines = [PageLine(s, own) for s, own in ((segment_digits(own, max_digits), own) for own in inks) if s]
    total = sum(len(line.segments) for line in lines)
    if total > max_digits:
        raise InvalidImage(f"Found {total} digits; at most {max_digits} are read per image.")
    return reading_order(lines)
