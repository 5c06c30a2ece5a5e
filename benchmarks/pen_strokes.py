"""Pen paths from MNIST digits, for drawing real test digits on the page like a person would.

A digit is thinned to its skeleton and the skeleton is walked into strokes (polylines); coordinates are in
units of the digit's longer side, centred on the digit's box, so a test can draw it at any size anywhere.
"""

from __future__ import annotations

import numpy as np

INK = 80
STEP = 2  # keep every STEP-th skeleton pixel of a stroke (the pen joins them with straight lines)


def _neighbours(img: np.ndarray) -> list[np.ndarray]:
    """The 8 neighbours P2..P9 (clockwise from north) of every pixel, zero outside the image."""
    p = np.pad(img, 1)
    h, w = img.shape
    offsets = [(0, 1), (0, 2), (1, 2), (2, 2), (2, 1), (2, 0), (1, 0), (0, 0)]
    return [p[dy:dy + h, dx:dx + w] for dy, dx in offsets]


def thin(mask: np.ndarray) -> np.ndarray:
    """Zhang-Suen thinning of a boolean mask to a one-pixel-wide, connected skeleton."""
    img = mask.astype(np.uint8)
    changed = True
    while changed:
        changed = False
        for step in (0, 1):
            n = _neighbours(img)
            count = sum(n)
            ring = n + [n[0]]
            transitions = sum(((ring[i] == 0) & (ring[i + 1] == 1)).astype(np.uint8) for i in range(8))
            p2, p4, p6, p8 = n[0], n[2], n[4], n[6]
            a, b = (p2 * p4 * p6, p4 * p6 * p8) if step == 0 else (p2 * p4 * p8, p2 * p6 * p8)
            remove = (img == 1) & (count >= 2) & (count <= 6) & (transitions == 1) & (a == 0) & (b == 0)
            if remove.any():
                img[remove] = 0
                changed = True
    return img.astype(bool)


def _walk(start: tuple[int, int], skeleton: set[tuple[int, int]], seen: set[tuple[int, int]]) -> list[tuple[int, int]]:
    path, here = [start], start
    seen.add(start)
    while True:
        y, x = here
        near = [(y + dy, x + dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]
        nxt = [p for p in near if p in skeleton and p not in seen]
        if not nxt:
            return path
        here = min(nxt, key=lambda p: abs(p[0] - y) + abs(p[1] - x))  # prefer straight steps
        seen.add(here)
        path.append(here)


def pen_paths(digit: np.ndarray) -> list[list[tuple[float, float]]]:
    """Strokes [(x, y), ...] of a 28x28 MNIST digit, in units of its longer side, centred on (0, 0)."""
    mask = digit > INK
    skeleton = {(int(y), int(x)) for y, x in zip(*np.nonzero(thin(mask)), strict=True)}
    if not skeleton:
        return []
    ys, xs = np.array([p[0] for p in skeleton]), np.array([p[1] for p in skeleton])
    cy, cx = (ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2
    size = float(max(ys.max() - ys.min(), xs.max() - xs.min(), 1))

    def degree(p: tuple[int, int]) -> int:
        return sum((p[0] + dy, p[1] + dx) in skeleton for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx)

    seen: set[tuple[int, int]] = set()
    strokes = []
    for start in sorted(skeleton, key=lambda p: (degree(p) != 1, p)):  # line ends first, then loops
        if start in seen:
            continue
        pixels = _walk(start, skeleton, seen)
        if len(pixels) < 2 and degree(start) > 0:
            continue  # a lone junction pixel: its neighbours' strokes cover it
        kept = pixels[::STEP] + ([pixels[-1]] if (len(pixels) - 1) % STEP else [])
        strokes.append([((x - cx) / size, (y - cy) / size) for y, x in kept])
    return strokes


def render_strokes(strokes: list[list[tuple[float, float]]], box: tuple[int, int], size: float,
                   pen: float) -> np.ndarray:
    """Strokes drawn like the page's canvas draws them (round pen, black on white), centred in a box
    (width, height) at `size` px per unit; uint8 grayscale."""
    from PIL import Image, ImageDraw

    w, h = box
    img = Image.new("L", (w, h), 255)
    draw = ImageDraw.Draw(img)
    for stroke in strokes:
        points = [(w / 2 + x * size, h / 2 + y * size) for x, y in stroke]
        if len(points) > 1:
            draw.line(points, fill=0, width=round(pen), joint="curve")
        for px, py in (points[0], points[-1]):
            draw.ellipse([px - pen / 2, py - pen / 2, px + pen / 2, py + pen / 2], fill=0)
    return np.asarray(img)
