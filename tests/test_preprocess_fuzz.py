"""Preprocessing fuzzed with hypothesis: random arrays, sizes, dtypes, JSON values and image bytes.

Each function returns a valid result (a 28x28 uint8 image, or "no digit" with its reason) or raises the
project's own `ImageError` with a one-line message; never anything else.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from cnn_ocr.decode import ImageError, decode_image
from cnn_ocr.preprocess import pixels_to_gray, prepare_gray, prepare_image

# Pillow warns about the corrupt files it is fed here; the point is what decode_image does with them.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
FUZZ = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
DTYPES = st.sampled_from([np.uint8, np.uint16, np.int8, np.int32, np.int64, np.float16, np.float32, np.float64,
                          np.bool_, np.complex64])


def check_prepared(result) -> None:
    """A 28x28 uint8 image, or no image and a reason."""
    if result.image is None:
        assert result.no_digit in ("blank", "too small", "a dot"), result.no_digit
    else:
        assert result.image.shape == (28, 28) and result.image.dtype == np.uint8 and result.no_digit is None


def check_error(exc: ImageError) -> None:
    message = str(exc)
    assert message and "\n" not in message and exc.kind in ("undecodable", "too_large", "unsupported", "invalid")


@FUZZ
@given(arr=hnp.arrays(DTYPES, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=80)))
def test_prepare_gray_on_random_arrays(arr):
    try:
        check_prepared(prepare_gray(arr))
    except ImageError as exc:
        check_error(exc)


@FUZZ
@given(arr=hnp.arrays(np.float64, st.tuples(st.integers(1, 300), st.integers(1, 300)),
                      elements=st.floats(0, 255, allow_nan=False)),
       scale=st.floats(0.1, 8, allow_nan=False))
def test_prepare_gray_on_valid_ranges_always_answers(arr, scale):
    check_prepared(prepare_gray(arr, scale))


@FUZZ
@given(h=st.integers(1, 400), w=st.integers(1, 400), seed=st.integers(0, 2**32 - 1),
       kind=st.sampled_from(["noise", "stroke", "flat", "speck"]))
def test_prepare_gray_on_structured_images(h, w, seed, kind):
    rng = np.random.default_rng(seed)
    img = np.full((h, w), float(rng.integers(0, 256)), np.float32)
    if kind == "noise":
        img = rng.integers(0, 256, (h, w)).astype(np.float32)
    elif kind == "stroke":
        y0, x0 = rng.integers(0, h), rng.integers(0, w)
        img[y0:y0 + max(1, h // 3), x0:x0 + max(1, w // 10)] = 255 - img[0, 0]
    elif kind == "speck":
        img[rng.integers(0, h), rng.integers(0, w)] = 255 - img[0, 0]
    check_prepared(prepare_gray(img))


JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                      st.text(max_size=5))
JSON = st.recursive(JSON_LEAF, lambda inner: st.lists(inner, max_size=30) | st.dictionaries(st.text(max_size=3),
                                                                                             inner, max_size=3),
                    max_leaves=200)


@FUZZ
@given(value=JSON | st.lists(st.lists(JSON_LEAF, min_size=28, max_size=28), min_size=28, max_size=28))
def test_pixels_to_gray_on_random_json(value):
    try:
        arr = pixels_to_gray(value)
    except ImageError as exc:
        check_error(exc)
        return
    assert arr.shape == (28, 28) and np.isfinite(arr).all() and arr.min() >= 0 and arr.max() <= 255


def _png_bytes(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (int(rng.integers(1, 60)), int(rng.integers(1, 60))), dtype=np.uint8)).save(
        buf, rng.choice(["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"]))
    return buf.getvalue()


@FUZZ
@given(seed=st.integers(0, 2**32 - 1), flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)),
                                                        max_size=8), cut=st.integers(0, 10**6))
def test_decode_and_prepare_on_mutated_image_files(seed, flips, cut):
    data = bytearray(_png_bytes(seed))
    for pos, value in flips:
        data[pos % len(data)] = value
    data = bytes(data[: max(1, cut % (len(data) + 1))] if cut % 3 == 0 else data)
    try:
        decoded = decode_image(data)
        assert decoded.gray.ndim == 2 and decoded.gray.dtype == np.float32
        check_prepared(prepare_image(data))
    except ImageError as exc:
        check_error(exc)


@FUZZ
@given(data=st.binary(max_size=2048))
def test_decode_on_random_bytes(data):
    try:
        decode_image(data)
    except ImageError as exc:
        check_error(exc)
