"""Drawing marks the way users draw them, and turning each drawing into the model's input.

A drawing is made on a canvas-sized image with a canvas-like pen (the page's pen is about 7 % of the canvas
side), as light ink on black, dark ink on white paper, or as a "photo" (grey uneven paper, soft dark ink,
sensor noise). Every drawing then goes through `cnn_ocr.preprocess.prepare_gray`, the function the service
calls for an uploaded image, so generated examples are exactly what the service would feed the model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from cnn_ocr.preprocess import IMAGE_SIZE, prepare_gray

Point = tuple[float, float]
Painter = Callable[[ImageDraw.ImageDraw, np.random.Generator, "Pen"], None]
LOOKS = ("light_on_dark", "dark_on_light", "photo")


@dataclass(frozen=True)
class Pen:
    """Where to draw: canvas side in pixels, pen width, and the ink level (255 on a black canvas)."""

    side: int
    width: float
    ink: int = 255


def polyline(draw: ImageDraw.ImageDraw, points: Sequence[Point], pen: Pen) -> None:
    """A stroke through `points` with round caps and joints, like a canvas `lineTo` path."""
    pts = [(float(x), float(y)) for x, y in points]
    r = pen.width / 2
    if len(pts) > 1:
        draw.line(pts, fill=pen.ink, width=max(1, round(pen.width)), joint="curve")
    for x, y in (pts[0], pts[-1]) if len(pts) > 1 else pts:
        draw.ellipse((x - r, y - r, x + r, y + r), fill=pen.ink)


def fit_strokes(strokes: Sequence[Sequence[Point]], rng: np.random.Generator, side: int,
                size: tuple[float, float] = (0.45, 0.8), rotate_deg: float = 12.0) -> list[list[Point]]:
    """Strokes in any units, rotated a little, scaled so their longer side is a random share of the canvas
    and placed at a random position inside it."""
    pts = np.concatenate([np.asarray(s, np.float64) for s in strokes])
    angle = np.radians(rng.uniform(-rotate_deg, rotate_deg))
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    lo, hi = (pts @ rot.T).min(0), (pts @ rot.T).max(0)
    extent = max(float((hi - lo).max()), 1e-6)
    scale = rng.uniform(*size) * side / extent
    box = (hi - lo) * scale
    offset = np.array([rng.uniform(0.08 * side, max(0.08 * side, 0.92 * side - box[0])),
                       rng.uniform(0.08 * side, max(0.08 * side, 0.92 * side - box[1]))])
    return [[tuple(p) for p in ((np.asarray(s, np.float64) @ rot.T - lo) * scale + offset)] for s in strokes]


def _photo(ink: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Light-on-black ink (0-255) as a phone photo of dark ink on grey, unevenly lit paper."""
    h, w = ink.shape
    paper = rng.uniform(150, 225)
    ramp = np.linspace(-1, 1, w)[None, :] * rng.uniform(-25, 25) + np.linspace(-1, 1, h)[:, None] * rng.uniform(-25, 25)
    ink_level = rng.uniform(15, 80)
    soft = np.asarray(Image.fromarray(ink.astype(np.uint8)).filter(ImageFilter.GaussianBlur(rng.uniform(0.8, 2.0))),
                      np.float32) / 255.0
    img = (paper + ramp) * (1 - soft) + ink_level * soft + rng.normal(0, rng.uniform(2, 8), ink.shape)
    return np.clip(img, 0, 255).astype(np.float32)


def render(paint: Painter, rng: np.random.Generator, side: int, pen_width: tuple[float, float],
           look: str) -> np.ndarray:
    """Paint on a black canvas with a random canvas-like pen; return it (float32, 0-255) in the given look."""
    canvas = Image.new("L", (side, side), 0)
    paint(ImageDraw.Draw(canvas), rng, Pen(side, rng.uniform(*pen_width) * side))
    return apply_look(np.asarray(canvas, np.float32), rng, look)


def apply_look(ink: np.ndarray, rng: np.random.Generator, look: str) -> np.ndarray:
    """Light-on-black ink (float, 0-255) in one of LOOKS."""
    if look not in LOOKS:
        raise ValueError(f"unknown look {look!r}; choose one of: {', '.join(LOOKS)}")
    if look == "dark_on_light":
        return 255.0 - ink
    if look == "photo":
        return _photo(ink, rng)
    return ink


def pick_look(rng: np.random.Generator, dark_on_light: float, photo: float) -> str:
    """One of LOOKS: photo with probability `photo`, else dark-on-light with `dark_on_light`."""
    u = rng.random()
    return "photo" if u < photo else "dark_on_light" if u < photo + dark_on_light else "light_on_dark"


def to_input(gray: np.ndarray) -> np.ndarray | None:
    """The service's preprocessing of one image: the 28x28 uint8 model input, or None when it refuses
    the image before the model (blank, a dot, too small)."""
    prepared = prepare_gray(gray)
    return None if prepared.image is None else prepared.image


def empty_batch() -> np.ndarray:
    """An empty (0, 28, 28) uint8 batch."""
    return np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
