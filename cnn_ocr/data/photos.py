"""Seeded phone photos of handwritten numbers, with their ground truth.

MNIST digits are composited as ink onto paper: an illumination gradient, an optional soft shadow, plain,
ruled or squared paper, blue / black ballpoint or grey pencil (lower opacity), sensor noise, blur, a tilt of
a few degrees, JPEG at quality 55-95, frames of 1-12 MP with the writing covering a small part. A photo
holds one digit, one number (3-8 digits, optionally touching: negative gaps) or a page of 3-5 numbers.
The same generator, seed and digits give the same bytes; evaluation sets use MNIST test digits only.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np

from cnn_ocr.photo_params import PaperParams, PhotoStyleParams

# Pen colours (RGB) and ink opacity: pencil is grey and lighter.
PENS: dict[str, tuple[tuple[int, int, int], tuple[float, float]]] = {
    "blue": ((25, 45, 150), (0.85, 1.0)),
    "black": ((20, 20, 25), (0.85, 1.0)),
    "pencil": ((70, 70, 75), (0.55, 0.75)),
}
RULINGS = ("plain", "ruled", "squared")


@dataclass(frozen=True)
class LineTruth:
    """One written number: its text and each digit's box (x, y, w, h) in the photo's pixels."""

    text: str
    boxes: list[tuple[int, int, int, int]]

    @property
    def box(self) -> tuple[int, int, int, int]:
        """The box around all its digits."""
        x0, y0 = min(b[0] for b in self.boxes), min(b[1] for b in self.boxes)
        x1, y1 = max(b[0] + b[2] for b in self.boxes), max(b[1] + b[3] for b in self.boxes)
        return x0, y0, x1 - x0, y1 - y0


@dataclass(frozen=True)
class Photo:
    """A JPEG photo and its ground truth: lines top to bottom, and how it was taken."""

    data: bytes
    lines: list[LineTruth]
    size: tuple[int, int]  # (width, height)
    settings: dict = field(default_factory=dict)

    @property
    def text(self) -> str:
        """The lines' texts joined by newlines."""
        return "\n".join(line.text for line in self.lines)


def _crop(digit: np.ndarray) -> np.ndarray:
    rows, cols = np.flatnonzero(digit.max(1) > 30), np.flatnonzero(digit.max(0) > 30)
    return digit[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def _scaled(digit: np.ndarray, height: int) -> np.ndarray:
    from PIL import Image

    crop = _crop(digit)
    width = max(2, round(crop.shape[1] * height / crop.shape[0]))
    img = Image.fromarray(crop.astype(np.uint8)).resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(img, np.float32) / 255.0


def compose_line(digits: list[np.ndarray], height: int, gaps: np.ndarray, rng: np.random.Generator,
                 baseline: float = 0.08) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """Digits (28x28, white on black) side by side as ink alpha in [0, 1], with per-digit boxes.

    `gaps` are in digit heights (negative: the digits overlap); each digit gets a slightly different size
    and a baseline moved by up to `baseline` digit heights, as handwriting does.
    """
    parts = [_scaled(d, max(8, round(height * rng.uniform(0.85, 1.1)))) for d in digits]
    offsets = [round(height * rng.uniform(-baseline, baseline)) for _ in parts]
    xs, x = [], 0
    for i, part in enumerate(parts):
        xs.append(x)
        x += part.shape[1] + (round(gaps[i] * height) if i < len(parts) - 1 else 0)
    x_min = min(xs)
    top = min(offsets)
    width = max(xi + p.shape[1] for xi, p in zip(xs, parts, strict=True)) - x_min
    rows = max(o + p.shape[0] for o, p in zip(offsets, parts, strict=True)) - top
    alpha = np.zeros((rows, width), np.float32)
    boxes = []
    for xi, off, part in zip(xs, offsets, parts, strict=True):
        y0, x0 = off - top, xi - x_min
        region = alpha[y0:y0 + part.shape[0], x0:x0 + part.shape[1]]
        np.maximum(region, part, out=region)
        boxes.append((x0, y0, part.shape[1], part.shape[0]))
    return alpha, boxes


def _frame_size(style: PhotoStyleParams, rng: np.random.Generator) -> tuple[int, int]:
    mp = rng.uniform(*style.megapixels) * 1e6
    aspect = rng.choice([4 / 3, 3 / 4, 16 / 9, 1.0])
    width = int(np.sqrt(mp * aspect))
    return width, int(mp / width)


def _light(size: tuple[int, int], style: PhotoStyleParams, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """The light falling on the paper: a linear fall-off in a random direction and maybe a soft shadow."""
    from scipy import ndimage

    w, h = size
    angle = rng.uniform(0, 2 * np.pi)
    gx = np.cos(angle) * np.arange(w, dtype=np.float32) / w
    gy = np.sin(angle) * np.arange(h, dtype=np.float32) / h
    ramp = gy[:, None] + gx[None, :]
    ramp -= ramp.min()
    light = 1.0 - np.float32(rng.uniform(*style.gradient)) * ramp / max(float(ramp.max()), 1e-6)
    shadow = bool(rng.random() < style.shadow_probability)
    if shadow:
        small = np.zeros((64, 64), np.float32)  # a hand / phone shadow: a soft-edged blob
        cy, cx = rng.uniform(0, 64, 2)
        ry, rx = rng.uniform(14, 34, 2)
        yy, xx = np.mgrid[0:64, 0:64]
        small[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1] = 1.0
        small = ndimage.gaussian_filter(small, rng.uniform(1.5, 4))
        big = ndimage.zoom(small, (h / 64, w / 64), order=1)
        light *= 1.0 - np.float32(rng.uniform(*style.shadow_depth)) * big[:h, :w]
    return light, shadow


def _rule_mask(size: tuple[int, int], ruling: str, pitch: int, deg: float, rng: np.random.Generator) -> np.ndarray:
    """Where the ruling is (0..strength): lines across the frame, tilted with it; squared adds columns."""
    w, h = size
    c, s = np.float32(np.cos(np.radians(deg))), np.float32(np.sin(np.radians(deg)))
    xs, ys = np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32)
    thick = int(rng.integers(1, 4))
    strength = np.float32(rng.uniform(0.45, 0.8))
    along = (ys[:, None] * c - xs[None, :] * s + rng.integers(0, pitch)) % pitch
    mask = along < thick
    if ruling == "squared":
        across = (xs[None, :] * c + ys[:, None] * s + rng.integers(0, pitch)) % pitch
        mask |= across < thick
    return mask.astype(np.float32) * strength


def _place_lines(size: tuple[int, int], alphas: list[np.ndarray], height: int, rng: np.random.Generator
                 ) -> list[tuple[int, int]]:
    """Top-left corners for each written line: one above the other with room between, in the frame."""
    w, h = size
    pitch = int(height * rng.uniform(1.9, 2.6))
    block = pitch * (len(alphas) - 1) + alphas[-1].shape[0]
    top = int(rng.integers(height // 2, max(height // 2 + 1, h - block - height // 2)))
    corners = []
    for i, alpha in enumerate(alphas):
        room = max(1, w - alpha.shape[1] - height)
        corners.append((int(rng.integers(height // 2, height // 2 + room)), top + i * pitch))
    return corners


def _encode(rgb: np.ndarray, quality: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=int(quality))
    return buf.getvalue()


@dataclass(frozen=True)
class Ask:
    """What to write: the digits of each line (indices into the digit images) and how to space them."""

    lines: list[list[int]]
    touching: bool = False


def _written(digits: np.ndarray, ask: Ask, height: int, style: PhotoStyleParams, deg: float,
             rng: np.random.Generator) -> list[tuple[np.ndarray, list[tuple[int, int, int, int]]]]:
    from PIL import Image

    out = []
    for line in ask.lines:
        gap_range = style.touching_gap if ask.touching else style.spaced_gap
        alpha, boxes = compose_line([digits[i] for i in line], height, rng.uniform(*gap_range, len(line)), rng)
        pad = height // 2
        alpha = np.pad(alpha, pad)
        boxes = [(x + pad, y + pad, bw, bh) for x, y, bw, bh in boxes]
        centre = (alpha.shape[1] / 2, alpha.shape[0] / 2)
        img = Image.fromarray(alpha, mode="F").rotate(deg, resample=Image.Resampling.BILINEAR)
        out.append((np.asarray(img, np.float32).clip(0, 1), _rotate_boxes(boxes, centre, deg)))
    return out


def render(digits: np.ndarray, labels: np.ndarray, ask: Ask, paper: PaperParams, style: PhotoStyleParams,
           rng: np.random.Generator, megapixels: float | None = None) -> Photo:
    """One photo of the digits `ask` names (rows of `digits`, 28x28 MNIST images) with its ground truth."""
    size = _frame_size(style, rng) if megapixels is None else (int(np.sqrt(megapixels * 1e6 * 4 / 3)),
                                                                int(np.sqrt(megapixels * 1e6 * 3 / 4)))
    w, h = size
    height = max(14, int(min(size) * rng.uniform(*style.digit_height)))
    deg = float(rng.uniform(-style.rotation_deg, style.rotation_deg))
    ruling = str(rng.choice(RULINGS))
    pitch = max(6, int(height * rng.choice(paper.line_spacing)))
    pen = str(rng.choice(list(PENS)))
    colour = np.asarray(paper.colours[rng.integers(len(paper.colours))], np.float32)
    line_colour = np.asarray(paper.line_colours[rng.integers(len(paper.line_colours))], np.float32)
    light, shadow = _light(size, style, rng)
    image = np.empty((h, w, 3), np.float32)
    image[:] = colour
    if ruling != "plain":
        m = _rule_mask(size, ruling, pitch, deg, rng)[..., None]
        image = image * (1 - m) + line_colour * m
    written = _written(digits, ask, height, style, deg, rng)
    corners = _place_lines(size, [a for a, _ in written], height, rng)
    pen_rgb, opacity = np.asarray(PENS[pen][0], np.float32), rng.uniform(*PENS[pen][1])
    truth = []
    for (alpha, boxes), (x0, y0), line in zip(written, corners, ask.lines, strict=True):
        ah, aw = min(alpha.shape[0], h - y0), min(alpha.shape[1], w - x0)
        a = (alpha[:ah, :aw] * opacity)[..., None]
        image[y0:y0 + ah, x0:x0 + aw] = image[y0:y0 + ah, x0:x0 + aw] * (1 - a) + pen_rgb * a
        truth.append(LineTruth("".join(str(int(labels[i])) for i in line),
                               [(x + x0, y + y0, bw, bh) for x, y, bw, bh in boxes]))
    _blur_writing(image, corners, written[-1][0].shape[0], height, rng.uniform(*style.blur_sigma) * np.sqrt(w * h / 1e6))
    image *= light[..., None]
    image += rng.standard_normal(image.shape, dtype=np.float32) * np.float32(rng.uniform(*style.noise_sigma))
    quality = int(rng.integers(style.jpeg_quality[0], style.jpeg_quality[1] + 1))
    data = _encode(np.clip(image, 0, 255).astype(np.uint8), quality)
    settings = {"size": [w, h], "ruling": ruling, "pitch": pitch, "pen": pen, "shadow": shadow,
                "paper": colour.astype(int).tolist(), "rotation_deg": round(deg, 2), "jpeg_quality": quality,
                "digit_height": height, "touching": ask.touching}
    return Photo(data, truth, size, settings)


def _blur_writing(image: np.ndarray, corners: list[tuple[int, int]], last_rows: int, height: int,
                  sigma: float) -> None:
    """The camera's blur, where it shows: around the writing (in place)."""
    from scipy import ndimage

    if sigma <= 0.3:
        return
    x0 = max(0, min(c[0] for c in corners) - height)
    y0 = max(0, corners[0][1] - height)
    y1 = min(image.shape[0], corners[-1][1] + last_rows + height)
    region = image[y0:y1, x0:]
    region[:] = ndimage.gaussian_filter(region, (sigma, sigma, 0))


def random_ask(kind: str, n_digits: int, rng: np.random.Generator) -> Ask:
    """Which digit images to write for a photo of `kind` (digit, number, touching or page)."""
    def number() -> list[int]:
        return [int(i) for i in rng.integers(0, n_digits, int(rng.integers(3, 9)))]

    if kind == "digit":
        return Ask([[int(rng.integers(0, n_digits))]])
    if kind == "page":
        return Ask([number() for _ in range(int(rng.integers(3, 6)))])
    return Ask([number()], touching=kind == "touching")


def _rotate_boxes(boxes: list[tuple[int, int, int, int]], centre: tuple[float, float], deg: float
                  ) -> list[tuple[int, int, int, int]]:
    """Boxes after rotating their image by `deg` about `centre` (PIL's sense: counter-clockwise on screen)."""
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    out = []
    for x, y, bw, bh in boxes:
        pts = np.array([[x, y], [x + bw, y], [x, y + bh], [x + bw, y + bh]], np.float64) - centre
        rx = pts[:, 0] * c + pts[:, 1] * s + centre[0]
        ry = -pts[:, 0] * s + pts[:, 1] * c + centre[1]
        out.append((int(rx.min()), int(ry.min()), int(np.ceil(rx.max() - rx.min())),
                    int(np.ceil(ry.max() - ry.min()))))
    return out
