"""Photo cleanup: ruled lines go but the strokes crossing them stay, shadows are not ink, and canvas /
MNIST inputs take exactly the path they took before."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from cnn_ocr import photo
from cnn_ocr.decode import decode_image
from cnn_ocr.preprocess import extract_ink, prepare_gray, prepare_image


def paper(h: int = 900, w: int = 1200, seed: int = 0) -> np.ndarray:
    """Grey-white paper under uneven light with sensor noise (a photo-like background)."""
    rng = np.random.default_rng(seed)
    light = np.linspace(1.0, 0.7, w, dtype=np.float32)[None, :] * np.linspace(1.0, 0.9, h, dtype=np.float32)[:, None]
    return (235.0 * light + rng.normal(0, 3, (h, w))).astype(np.float32)


def draw_seven(gray: np.ndarray, x: int, y: int, size: int, level: float = 40.0) -> None:
    """A thick "7": a bar and a long diagonal, drawn as dark ink."""
    img = Image.fromarray(np.zeros(gray.shape, np.uint8))
    d = ImageDraw.Draw(img)
    d.line([(x, y), (x + size * 0.7, y)], fill=255, width=max(3, size // 9))
    d.line([(x + size * 0.7, y), (x + size * 0.25, y + size)], fill=255, width=max(3, size // 9))
    mask = np.asarray(img) > 0
    gray[mask] = level


def rule(gray: np.ndarray, pitch: int, start: int, darkness: float = 0.45, thick: int = 2) -> list[int]:
    rows = list(range(start, gray.shape[0], pitch))
    for r in rows:
        gray[r:r + thick] *= 1 - darkness
    return rows


def test_a_seven_crossed_by_a_ruled_line_survives_and_the_line_goes():
    gray = paper()
    rows = rule(gray, pitch=70, start=30)
    draw_seven(gray, 500, 360, 120)  # the diagonal crosses the lines at rows 380 and 450
    assert photo.is_photo(gray)
    ink = extract_ink(gray)
    assert ink.no_digit is None
    from scipy import ndimage

    labels, n = ndimage.label(ink.mask, structure=np.ones((3, 3), bool))
    assert n == 1  # the 7 is one piece: the line rows were not cut out of its stroke
    ys, xs = np.nonzero(ink.mask)
    sx = 1.0 / ink.scale
    assert ys.min() * ink.scale >= 340 and ys.max() * ink.scale <= 500  # nothing left of the lines elsewhere
    crossing = [r for r in rows if 360 < r < 480]
    for r in crossing:
        assert ink.mask[int(r * sx) - 1:int(r * sx) + 2].any()  # the stroke continues through each line


def test_a_shadow_is_not_ink():
    from scipy import ndimage

    gray = paper(seed=1)
    blob = np.zeros(gray.shape, np.float32)
    blob[100:700, 50:650] = 1.0
    gray *= 1.0 - 0.5 * ndimage.gaussian_filter(blob, 25)  # a hand's soft shadow taking half the light
    blank = extract_ink(gray.copy())
    assert blank.no_digit == "blank"
    draw_seven(gray, 800, 400, 110)
    ink = extract_ink(gray)
    ys, xs = np.nonzero(ink.mask)
    assert xs.min() * ink.scale >= 780 and ys.min() * ink.scale >= 380  # only the 7 is ink


def test_a_photo_digit_is_prepared_like_a_drawn_one():
    gray = paper(seed=2)
    draw_seven(gray, 300, 300, 150)
    prepared = prepare_gray(gray)
    assert prepared.image is not None and prepared.image.shape == (28, 28)
    assert prepared.image.max() == 255


def _jpeg(array: np.ndarray, quality: int = 80) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _canvas_inputs(mnist_x: np.ndarray) -> list[np.ndarray]:
    canvas = np.full((280, 280), 255.0, np.float32)
    draw_seven(canvas, 90, 60, 150, level=0.0)
    big = np.full((700, 1000), 255.0, np.float32)  # a large clean drawing: flat paper, not a photo
    draw_seven(big, 300, 200, 300, level=0.0)
    scan = decode_image(_jpeg(big.astype(np.uint8), 90)).gray
    return [canvas, 255.0 - canvas, big, scan, *[d.astype(np.float32) for d in mnist_x[:20]],
            *[255.0 - d.astype(np.float32) for d in mnist_x[20:30]]]


def test_canvas_and_mnist_inputs_give_exactly_what_they_gave(mnist_splits, monkeypatch):
    inputs = _canvas_inputs(mnist_splits.test_x)
    assert not any(photo.is_photo(g) for g in inputs)
    now = [prepare_gray(g) for g in inputs]
    inks = [extract_ink(g) for g in inputs]
    monkeypatch.setattr(photo, "is_photo", lambda gray: False)  # the path as it was before photo cleanup
    before = [prepare_gray(g) for g in inputs]
    for a, b in zip(now, before, strict=True):
        assert a.no_digit == b.no_digit
        assert (a.image is None and b.image is None) or np.array_equal(a.image, b.image)
    for a, g in zip(inks, inputs, strict=True):
        assert np.array_equal(a.image, extract_ink(g).image)


def test_a_12_megapixel_jpeg_is_decoded_small_and_boxes_scale_back():
    gray = paper(3000, 4000, seed=3)
    draw_seven(gray, 2000, 1500, 300)
    data = _jpeg(np.clip(gray, 0, 255).astype(np.uint8), 85)
    decoded = decode_image(data)
    assert max(decoded.gray.shape) <= 2048 and decoded.scale >= 2  # decoded at a reduced scale
    assert decoded.gray.shape[1] * decoded.scale == pytest.approx(4000, rel=0.01)
    ink = extract_ink(decoded.gray, decoded.scale)
    ys, xs = np.nonzero(ink.mask)
    assert abs(xs.min() * ink.scale - 2020) < 40 and abs(ys.min() * ink.scale - 1480) < 40
    assert prepare_image(data).image is not None
