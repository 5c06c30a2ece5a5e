"""Stroke width does not decide the answer: thick strokes are thinned, normal ones are left alone, and
"a dot" is said only of dots."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter

from benchmarks.pen_strokes import pen_paths, render_strokes
from cnn_ocr import stroke
from cnn_ocr.preprocess import extract_ink, prepare_gray, to_model_input

BOX = (360, 360)


def crop(image: np.ndarray) -> np.ndarray:
    rows, cols = np.flatnonzero(image.any(1)), np.flatnonzero(image.any(0))
    return image[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].astype(np.float32)


def drawn(digit: np.ndarray, share: float, pen_share: float) -> np.ndarray:
    """An MNIST digit drawn on a 360-px canvas: ink `share` of the box high, pen `pen_share` of the box."""
    pen = pen_share * BOX[1]
    return render_strokes(pen_paths(digit), BOX, share * BOX[1] - pen, pen)


def blurry_scan(digit: np.ndarray, pixels: int) -> np.ndarray:
    small = Image.fromarray(255 - digit).resize((pixels, pixels), Image.Resampling.BILINEAR)
    return np.asarray(small.resize((120, 120), Image.Resampling.BICUBIC).filter(ImageFilter.GaussianBlur(4)))


@pytest.mark.data
def test_mnist_strokes_are_below_the_thick_limit(mnist_splits):
    ratios = np.array([stroke.stroke_ratio(crop(d)) for d in mnist_splits.train_x[:300]])
    assert 0.08 <= float(np.median(ratios)) <= 0.14
    assert (ratios > stroke.THICK_RATIO).mean() < 0.03


def test_normal_drawings_are_left_exactly_as_they_are(mnist_splits):
    for digit in mnist_splits.test_x[:10]:
        ink = extract_ink(drawn(digit, 0.9, 0.07))
        patch = crop(ink.image)
        assert stroke.normalize_stroke(patch) is patch


def test_thick_strokes_are_thinned_to_mnist_width(mnist_splits):
    for digit in mnist_splits.test_x[:10]:
        patch = crop(extract_ink(drawn(digit, 0.9, 0.25)).image)
        assert stroke.stroke_ratio(patch) > stroke.THICK_RATIO
        thinned = stroke.normalize_stroke(patch)
        assert thinned is not patch
        assert stroke.stroke_ratio(crop(thinned)) <= stroke.THICK_RATIO


@pytest.fixture(scope="module")
def onnx_digits(service_model_dir):
    """The service's test model in ONNX Runtime: images (N, 1, 28, 28) -> predicted digits."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(service_model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda batch: session.run(None, {name: batch})[0].argmax(1)


def _accuracy(model, images, labels) -> float:
    prepared = [prepare_gray(img).image for img in images]
    assert all(p is not None for p in prepared), "a digit was answered as no digit"
    return float((model(to_model_input(np.stack(prepared))) == labels).mean())


@pytest.mark.model
def test_bold_and_blurry_digits_read_at_least_as_well_thinned(mnist_splits, onnx_digits, monkeypatch):
    x, y = mnist_splits.test_x[:60], mnist_splits.test_y[:60]
    sets = {"bold": [drawn(d, 0.9, 0.25) for d in x], "blurry": [blurry_scan(d, 12) for d in x]}
    for name, images in sets.items():
        thinned = _accuracy(onnx_digits, images, y)
        monkeypatch.setattr(stroke, "THICK_RATIO", 10.0)  # thinning off
        plain = _accuracy(onnx_digits, images, y)
        monkeypatch.undo()
        print(f"\n{name}: {plain:.1%} as drawn, {thinned:.1%} thinned")
        assert thinned >= plain - 0.02 and thinned >= 0.85


def test_a_pen_tap_is_a_dot_but_a_small_thick_eight_is_not(mnist_splits):
    tap = np.full(BOX, 255, np.uint8)
    yy, xx = np.mgrid[:BOX[0], :BOX[1]]
    tap[(yy - 180) ** 2 + (xx - 180) ** 2 <= 12 ** 2] = 0  # the page's default pen, one tap
    assert prepare_gray(tap).no_digit == "a dot"
    eights = mnist_splits.test_x[mnist_splits.test_y == 8][:10]
    for digit in eights:
        assert prepare_gray(drawn(digit, 0.25, 0.07)).no_digit is None
        assert prepare_gray(blurry_scan(digit, 10)).no_digit is None
