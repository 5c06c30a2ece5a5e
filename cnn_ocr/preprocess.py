"""The one preprocessing path from pixels to the model's input tensor.

Training data, canvas drawings and uploaded photos all end as a 28x28 uint8 image in MNIST's
convention (white ink on black, digit centred by centre of mass) and then go through `to_model_input`.
The normalization constants are defined here and nowhere else.

Real-world images follow MNIST's own recipe (`prepare_gray`): detect polarity (dark ink on light paper is
inverted), separate ink from background with Otsu's threshold (hysteresis keeps the anti-aliased edges
that touch a stroke, drops specks), stretch the ink to full range, crop to the ink's bounding box, scale
the longer side to 20 px keeping the aspect ratio, and place it in 28x28 with its centre of mass at
(14, 14). An image that is already 28x28 is taken to be in the model's format: it is only inverted when
it is dark ink on light paper, never re-cropped or re-scaled, so an MNIST image saved as a PNG reaches
exactly the tensor the model was trained on. Blank, near-blank, dot-like or speck-sized input gives
"no digit" instead of a guess.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cnn_ocr.decode import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, ImageError, InvalidImage, decode_image
from cnn_ocr.stroke import normalize_stroke

IMAGE_SIZE = 28
# Mean and std of MNIST's 60k training pixels scaled to [0, 1].
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
BACKGROUND = -MNIST_MEAN / MNIST_STD  # a black pixel after normalization
# MNIST's recipe: the digit's longer side is 20 px, its centre of mass sits at (14, 14) (row, column).
DIGIT_BOX = 20
CENTRE = 14.0
# Ink detection: the minimum stroke-to-paper contrast (0-255 scale) that counts as ink at all; a pixel
# connected to a stroke stays ink (its soft edge) above this fraction of that contrast; specks with fewer
# strong pixels than this fraction of the largest stroke's are noise.
MIN_CONTRAST = 40.0
EDGE_LEVEL = 0.2
SPECK_FRACTION = 0.02
# A mark is too small to be a digit when its longer side is under this share of the image's longer side or
# under MIN_EXTENT_PX pixels; a filled, roundish blob is a dot.
MIN_EXTENT_FRACTION = 0.05
MIN_EXTENT_PX = 3
DOT_FILL = 0.7
DOT_ASPECT = (0.5, 2.0)
# ... and only when it is about one stroke across: its deepest ink pixel lies at least this share of its
# narrower side from the paper on both sides (a disk: 1.0; a small 8 drawn with a thick pen: about 0.5).
DOT_SOLID = 0.75
# A dot is a tap of the pen (the page's pens are 4-11 % of the box): a larger solid mark is a digit seen through a thick pen
# or a blurry lens (a closed 0 or 8), not a dot.
DOT_EXTENT = 0.15
# A single digit whose image is at least twice this on its shorter side is read at half resolution: the
# 20-px result is the same, the work is a quarter (a 280-px canvas drawing: ~1.2 ms -> ~0.4 ms).
WORK_MIN_SIDE = 112

__all__ = [
    "IMAGE_SIZE", "MNIST_MEAN", "MNIST_STD", "ImageError", "Ink", "Prepared", "center_digit", "extract_ink",
    "pixels_to_gray", "prepare_gray", "prepare_image", "preprocessing_spec", "to_model_input",
]


def to_model_input(images: np.ndarray) -> np.ndarray:
    """uint8 images (N, 28, 28) or (28, 28) -> float32 (N, 1, 28, 28), normalized with MNIST's mean/std."""
    arr = np.asarray(images)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"expected images of shape (N, 28, 28), got {arr.shape}")
    out = arr.astype(np.float32) * np.float32(1 / 255.0)
    out -= np.float32(MNIST_MEAN)
    out *= np.float32(1 / MNIST_STD)
    return out[:, None]


def preprocessing_spec() -> dict:
    """Description of the input contract, stored with every exported model."""
    return {
        "image_size": IMAGE_SIZE,
        "layout": "NCHW",
        "ink": "white-on-black",
        "scale": 1 / 255.0,
        "mean": MNIST_MEAN,
        "std": MNIST_STD,
        "recipe": "crop to ink, longer side to 20 px, centre of mass at (14, 14) in 28x28",
    }


@dataclass(frozen=True)
class Ink:
    """An image as ink: float32 (H, W) light-on-black with background and specks zeroed.

    `mask` marks the kept ink (strokes and their soft edges), `strong` the pixels above Otsu's threshold,
    `no_digit` says why there is nothing to read (None when there is ink), `scale` is the factor the
    decoded image was reduced by (to map boxes back to the original).
    """

    image: np.ndarray
    mask: np.ndarray
    strong: np.ndarray
    no_digit: str | None
    scale: float = 1.0


@dataclass(frozen=True)
class Prepared:
    """The model's 28x28 uint8 input, or None with the reason there is no digit."""

    image: np.ndarray | None
    no_digit: str | None = None


def _validated_gray(gray: np.ndarray) -> np.ndarray:
    arr = np.asarray(gray)
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise InvalidImage(f"Expected a 2-D grayscale image, got an array of shape {arr.shape}.")
    if arr.dtype == np.uint8:
        return arr.astype(np.float32)
    if arr.dtype == np.float32:  # what `decode_image` gives: check in place, no float64 copy
        lo, hi = float(arr.min()), float(arr.max())  # NaN propagates into both
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise InvalidImage("Pixel values must be finite numbers (no NaN or infinity).")
        if lo < 0 or hi > 255:
            raise InvalidImage("Pixel values must lie between 0 and 255.")
        return arr
    if arr.dtype == bool:
        return np.where(arr, 255.0, 0.0).astype(np.float32)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise InvalidImage(f"Pixel values must be numbers, got {arr.dtype}.")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise InvalidImage("Pixel values must be finite numbers (no NaN or infinity).")
    if arr.min() < 0 or arr.max() > 255:
        raise InvalidImage("Pixel values must lie between 0 and 255.")
    return arr.astype(np.float32)


def is_dark_ink(gray: np.ndarray) -> bool:
    """True when the ink is darker than the paper: the border's typical level is the paper."""
    band = max(1, round(0.03 * min(gray.shape)))
    border = np.concatenate([gray[:band].ravel(), gray[-band:].ravel(), gray[:, :band].ravel(),
                             gray[:, -band:].ravel()])
    paper = float(np.median(border))
    return paper - float(gray.min()) > float(gray.max()) - paper


def otsu_threshold(values: np.ndarray) -> float:
    """Otsu's threshold of 0-255 values (the level that best separates two classes)."""
    hist = np.bincount(np.rint(values).astype(np.intp).ravel().clip(0, 255), minlength=256)
    hist = hist.astype(np.float64)
    levels = np.arange(256, dtype=np.float64)
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * levels)
    mean0 = np.divide(m0, w0, out=np.zeros(256), where=w0 > 0)
    mean1 = np.divide(m0[-1] - m0, w1, out=np.zeros(256), where=w1 > 0)
    between = w0 * w1 * (mean0 - mean1) ** 2
    return float(np.argmax(between))


def _hysteresis(ink: np.ndarray, strong: np.ndarray, low: float) -> np.ndarray:
    from scipy import ndimage

    candidate = ink > low
    rows, cols = np.flatnonzero(candidate.any(1)), np.flatnonzero(candidate.any(0))
    out = np.zeros_like(strong)
    if rows.size == 0:
        return out
    box = np.s_[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]  # label only where there is anything to label
    labels, n = ndimage.label(candidate[box], structure=np.ones((3, 3), bool))
    strong_counts = np.bincount(labels[strong[box]], minlength=n + 1)
    strong_counts[0] = 0
    keep = strong_counts >= max(2, SPECK_FRACTION * strong_counts.max())
    out[box] = keep[labels]
    return out


def _no_digit_reason(mask: np.ndarray) -> str | None:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if rows.size == 0:
        return "blank"
    h, w = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
    if max(h, w) < max(MIN_EXTENT_PX, MIN_EXTENT_FRACTION * max(mask.shape)):
        return "too small"
    box = mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    fill = box.sum() / float(h * w)  # ink incl. soft edges
    if (DOT_ASPECT[0] <= w / h <= DOT_ASPECT[1] and fill > DOT_FILL and max(h, w) <= DOT_EXTENT * min(mask.shape)
            and _solid(box, min(h, w))):
        return "a dot"
    return None


def _solid(box: np.ndarray, across: int) -> bool:
    """True when the mark is one stroke across (a dot), not a small digit written with a thick pen."""
    from scipy import ndimage

    depth = float(ndimage.distance_transform_edt(np.pad(box, 1)).max())
    return 2.0 * depth >= DOT_SOLID * across


def extract_ink(gray: np.ndarray, scale: float = 1.0) -> Ink:
    """Separate ink from paper: polarity, Otsu, hysteresis edges, speck removal and contrast stretch."""
    return _extract(_validated_gray(gray), scale)


def _extract(g: np.ndarray, scale: float) -> Ink:
    from cnn_ocr import photo

    if photo.is_photo(g):  # a phone photo of paper: uneven light, ruling, pencil; read as dark ink on paper
        found = photo.photo_ink(g, scale, _no_digit_reason)
        return Ink(found.image, found.mask, found.strong, found.no_digit, found.scale)
    ink = 255.0 - g if is_dark_ink(g) else g
    empty = np.zeros(ink.shape, bool)
    threshold = otsu_threshold(ink)
    strong = ink > threshold
    if not strong.any() or strong.all():
        return Ink(np.zeros_like(ink), empty, empty, "blank", scale)
    paper = float(np.median(ink[~strong]))
    core = float(np.percentile(ink[strong], 90))
    if core - paper < MIN_CONTRAST:
        return Ink(np.zeros_like(ink), empty, empty, "blank", scale)
    mask = _hysteresis(ink, strong, paper + EDGE_LEVEL * (core - paper))
    strong &= mask
    stretched = np.clip((ink - paper) * (255.0 / (core - paper)), 0, 255).astype(np.float32)
    stretched[~mask] = 0
    return Ink(stretched, mask, strong, _no_digit_reason(mask), scale)


def _resize(patch: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(patch, dtype=np.float32), mode="F")
    return np.asarray(img.resize(size, Image.Resampling.LANCZOS), dtype=np.float32)


def center_digit(ink: np.ndarray) -> np.ndarray:
    """MNIST's recipe on an ink image (light on black): crop to the ink, longer side to 20 px keeping the
    aspect ratio, centre of mass at (14, 14) in 28x28. Returns uint8 (28, 28)."""
    rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
    if rows.size == 0:
        return np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    patch = normalize_stroke(ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1])
    h, w = patch.shape
    ratio = DIGIT_BOX / max(h, w)
    new_w, new_h = max(1, round(w * ratio)), max(1, round(h * ratio))
    small = np.clip(np.rint(_resize(patch, (new_w, new_h))), 0, 255)
    total = small.sum()
    if total <= 0:
        return np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    cy = float((small.sum(1) * np.arange(new_h)).sum() / total)
    cx = float((small.sum(0) * np.arange(new_w)).sum() / total)
    top, left = round(CENTRE - cy), round(CENTRE - cx)
    pad = IMAGE_SIZE
    canvas = np.zeros((3 * pad, 3 * pad), np.float32)
    canvas[pad + top:pad + top + new_h, pad + left:pad + left + new_w] = small
    return canvas[pad:2 * pad, pad:2 * pad].astype(np.uint8)


def _halved(g: np.ndarray) -> np.ndarray:
    """Half the resolution by 2x2 averaging (an odd last row / column is dropped)."""
    h, w = g.shape[0] // 2 * 2, g.shape[1] // 2 * 2
    return (g[0:h:2, 0:w:2] + g[1:h:2, 0:w:2] + g[0:h:2, 1:w:2] + g[1:h:2, 1:w:2]) * np.float32(0.25)


def prepare_gray(gray: np.ndarray, scale: float = 1.0) -> Prepared:
    """Any grayscale image (H, W), 0-255 -> the model's 28x28 uint8 input, or "no digit".

    Raises `ImageError` (kind "invalid") for arrays that are not a finite 2-D image in 0-255.
    """
    g = _validated_gray(gray)
    ink = _extract(_halved(g) if min(g.shape) >= 2 * WORK_MIN_SIDE else g, scale)
    if ink.no_digit:
        return Prepared(None, ink.no_digit)
    if g.shape == (IMAGE_SIZE, IMAGE_SIZE):
        native = 255.0 - g if is_dark_ink(g) else g
        return Prepared(np.rint(native).astype(np.uint8))
    return Prepared(center_digit(ink.image))


def prepare_image(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES,
                  max_pixels: int = DEFAULT_MAX_PIXELS) -> Prepared:
    """Image file bytes -> the model's 28x28 input (or "no digit"); `ImageError` for bad input."""
    decoded = decode_image(data, max_bytes=max_bytes, max_pixels=max_pixels)
    return prepare_gray(decoded.gray, decoded.scale)


def pixels_to_gray(pixels: object) -> np.ndarray:
    """A JSON-style 28x28 list of 0-255 numbers -> float32 (28, 28); `ImageError` ("invalid") otherwise."""
    if not isinstance(pixels, list) or len(pixels) != IMAGE_SIZE:
        raise InvalidImage("pixels must be a list of 28 rows of 28 numbers from 0 to 255.")
    for row in pixels:
        if not isinstance(row, list) or len(row) != IMAGE_SIZE:
            raise InvalidImage("pixels must be a list of 28 rows of 28 numbers from 0 to 255.")
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in row):
            raise InvalidImage("Every pixel must be a number from 0 to 255.")
    arr = np.asarray(pixels, dtype=np.float64)
    return _validated_gray(arr)
