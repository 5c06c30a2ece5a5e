"""Pen drawings that are not digits: scribbles, loose strokes, geometric shapes, hatching and grids.

Each painter draws one random mark with the given pen on a canvas (`drawing.render` supplies both). Shapes are
built in unit coordinates and placed by `drawing.fit_strokes`, so size, position and tilt vary like a
user's hand.
"""

from __future__ import annotations

import numpy as np
from PIL import ImageDraw

from cnn_ocr.data.drawing import Painter, Pen, Point, fit_strokes, polyline


def _wobble(points: list[Point], rng: np.random.Generator, amount: float = 0.02) -> list[Point]:
    """A hand's unsteadiness: small random offsets on every point (unit coordinates)."""
    noise = rng.normal(0, amount, (len(points), 2))
    return [(x + dx, y + dy) for (x, y), (dx, dy) in zip(points, noise, strict=True)]


def _ellipse(cx: float, cy: float, rx: float, ry: float, start: float = 0.0, turn: float = 1.0,
             n: int = 40) -> list[Point]:
    t = start + np.linspace(0, 2 * np.pi * turn, n)
    return list(zip(cx + rx * np.cos(t), cy + ry * np.sin(t), strict=True))


def _draw(draw: ImageDraw.ImageDraw, rng: np.random.Generator, pen: Pen, strokes: list[list[Point]],
          size: tuple[float, float] = (0.5, 0.85)) -> None:
    for stroke in fit_strokes([_wobble(s, rng) for s in strokes], rng, pen.side, size=size, rotate_deg=20):
        polyline(draw, stroke, pen)


def scribble(draw: ImageDraw.ImageDraw, rng: np.random.Generator, pen: Pen) -> None:
    """One or two long wandering strokes that turn often (a scrawl, a crossed-out mess)."""
    strokes = []
    for _ in range(int(rng.integers(1, 3))):
        steps = int(rng.integers(80, 180))
        heading = np.cumsum(rng.normal(0, rng.uniform(0.3, 0.9), steps)) + rng.uniform(0, 2 * np.pi)
        xy = np.cumsum(np.stack([np.cos(heading), np.sin(heading)], 1) * rng.uniform(0.5, 1.5, (steps, 1)), 0)
        strokes.append([tuple(p) for p in xy])
    _draw(draw, rng, pen, strokes, size=(0.55, 0.95))


def loose_strokes(draw: ImageDraw.ImageDraw, rng: np.random.Generator, pen: Pen) -> None:
    """Three to seven short straight or bent strokes in random directions."""
    strokes = []
    for _ in range(int(rng.integers(3, 8))):
        start = rng.uniform(0, 1, 2)
        mid = start + rng.normal(0, 0.3, 2)
        end = mid + rng.normal(0, 0.3, 2) * rng.integers(0, 2)
        strokes.append([tuple(start), tuple(mid), tuple(end)])
    _draw(draw, rng, pen, strokes)


def _star(points: int, inner: float) -> list[Point]:
    t = np.linspace(-np.pi / 2, 1.5 * np.pi, 2 * points + 1)
    r = np.where(np.arange(2 * points + 1) % 2 == 0, 1.0, inner)
    return list(zip(r * np.cos(t), r * np.sin(t), strict=True))


def _smiley() -> list[list[Point]]:
    return [_ellipse(0, 0, 1, 1), _ellipse(-0.35, -0.3, 0.08, 0.1, n=10), _ellipse(0.35, -0.3, 0.08, 0.1, n=10),
            _ellipse(0, 0.05, 0.5, 0.45, start=0.2, turn=0.35)]


SHAPES = {
    "circle_cross": lambda r: [_ellipse(0, 0, 1, r.uniform(0.8, 1.2)), [(-0.7, -0.7), (0.7, 0.7)], [(0.7, -0.7), (-0.7, 0.7)]],
    "square": lambda r: [[(0, 0), (1, 0), (1, r.uniform(0.8, 1.2)), (0, 1), (0, 0)]],
    "square_cross": lambda r: [[(0, 0), (1, 0), (1, 1), (0, 1), (0, 0)], [(0, 0), (1, 1)], [(1, 0), (0, 1)]],
    "triangle": lambda r: [[(0, 1), (0.5, 0), (1, 1), (0, 1)]],
    "star": lambda r: [_star(int(r.integers(5, 7)), r.uniform(0.35, 0.5))],
    "arrow": lambda r: [[(0, 0.5), (1, 0.5)], [(0.7, 0.2), (1, 0.5), (0.7, 0.8)]],
    "double_arrow": lambda r: [[(0, 0.5), (1, 0.5)], [(0.8, 0.3), (1, 0.5), (0.8, 0.7)], [(0.2, 0.3), (0, 0.5), (0.2, 0.7)]],
    "smiley": lambda r: _smiley(),
    "heart": lambda r: [[(0.5, 1), (0, 0.35), (0.1, 0.05), (0.3, 0), (0.5, 0.25), (0.7, 0), (0.9, 0.05), (1, 0.35), (0.5, 1)]],
    "spiral": lambda r: [list(zip(*(np.linspace(0.1, 1, 60) * f(np.linspace(0, 4 * np.pi, 60)) for f in (np.cos, np.sin)),
                                  strict=True))],
    "house": lambda r: [[(0, 1), (0, 0.45), (0.5, 0), (1, 0.45), (1, 1), (0, 1)], [(0.4, 1), (0.4, 0.7), (0.6, 0.7), (0.6, 1)]],
    "cross_mark": lambda r: [[(0, 0), (1, 1)], [(1, 0), (0, 1)]],
}


def shape(draw: ImageDraw.ImageDraw, rng: np.random.Generator, pen: Pen) -> None:
    """One of SHAPES (circles with crosses, squares, stars, arrows, smileys...)."""
    names = sorted(SHAPES)
    _draw(draw, rng, pen, SHAPES[names[rng.integers(len(names))]](rng))


def hatching(draw: ImageDraw.ImageDraw, rng: np.random.Generator, pen: Pen) -> None:
    """Parallel lines at a random angle, or two crossing sets of them (a grid, a hash)."""
    strokes = []
    for k in range(1 + int(rng.random() < 0.5)):
        n = int(rng.integers(3, 7))
        angle = rng.uniform(0, np.pi) + k * rng.uniform(np.pi / 3, 2 * np.pi / 3)
        d, nrm = np.array([np.cos(angle), np.sin(angle)]), np.array([-np.sin(angle), np.cos(angle)])
        for off in np.linspace(-0.5, 0.5, n):
            strokes.append([tuple(nrm * off - d * 0.5), tuple(nrm * off + d * 0.5)])
    _draw(draw, rng, pen, strokes, size=(0.6, 0.95))


PAINTERS: dict[str, Painter] = {"scribbles": scribble, "strokes": loose_strokes, "shapes": shape, "hatching": hatching}
