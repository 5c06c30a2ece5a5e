"""The one preprocessing path: parity with training, real-world robustness, no-digit, decoding and refusals."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from image_files import encode, png_header_only
from PIL import Image

from cnn_ocr.decode import ImageError, decode_image
from cnn_ocr.preprocess import IMAGE_SIZE, pixels_to_gray, prepare_gray, prepare_image, to_model_input


def render(digit: np.ndarray, rng: np.random.Generator) -> tuple[bytes, str]:
    """An MNIST digit scaled, placed at a random spot of a larger canvas, in one of four real-world looks."""
    n = max(10, round(28 * rng.uniform(0.8, 5.0)))
    big = np.asarray(Image.fromarray(digit).resize((n, n), Image.Resampling.BICUBIC))
    height, width = n + int(rng.integers(0, 2 * n)), n + int(rng.integers(0, 2 * n))
    ink = np.zeros((height, width), np.uint8)
    top, left = int(rng.integers(0, height - n + 1)), int(rng.integers(0, width - n + 1))
    ink[top:top + n, left:left + n] = big
    kind = str(rng.choice(["white_on_black", "black_on_white", "jpeg", "transparent"]))
    if kind == "white_on_black":
        return encode(Image.fromarray(ink), "PNG"), kind
    if kind == "black_on_white":
        return encode(Image.fromarray(255 - ink), "PNG"), kind
    if kind == "jpeg":
        page = 255 - ink if rng.random() < 0.5 else ink
        return encode(Image.fromarray(page), "JPEG", quality=int(rng.integers(60, 95))), kind
    rgba = np.zeros((height, width, 4), np.uint8)
    rgba[..., 3] = ink  # black ink whose shape is only in the alpha channel
    return encode(Image.fromarray(rgba, "RGBA"), "PNG"), kind


# ---------------------------------------------------------------- parity with training

@pytest.mark.data
def test_mnist_png_reaches_the_training_tensor(mnist_splits):
    x = mnist_splits.test_x[:300]
    for i, digit in enumerate(x):
        prepared = prepare_image(encode(Image.fromarray(digit), "PNG"))
        assert prepared.image is not None, f"test image {i} was called no_digit"
        assert np.array_equal(to_model_input(prepared.image), to_model_input(digit)), f"test image {i} differs"


@pytest.mark.data
def test_pixels_and_inverted_28x28_reach_the_same_tensor(mnist_splits):
    digit = mnist_splits.test_x[7]
    assert np.array_equal(prepare_gray(pixels_to_gray(digit.tolist())).image, digit)
    dark_on_light = encode(Image.fromarray(255 - digit), "PNG")
    assert np.array_equal(prepare_image(dark_on_light).image, digit)


# ---------------------------------------------------------------- real-world agreement

@pytest.mark.model
def test_real_world_renderings_agree_with_plain_predictions(mnist_splits, service_model_dir):
    from app.model_store import load_model_dir

    model = load_model_dir(service_model_dir, threads=2, source="test")
    x = mnist_splits.test_x[:1000]
    plain = model.probabilities(x).argmax(1)
    rng = np.random.default_rng(2024)
    agree, per_kind = 0, {}
    for i, digit in enumerate(x):
        data, kind = render(digit, rng)
        prepared = prepare_image(data)
        got = -1 if prepared.image is None else int(model.probabilities(prepared.image[None]).argmax())
        agree += got == plain[i]
        ok, total = per_kind.get(kind, (0, 0))
        per_kind[kind] = (ok + (got == plain[i]), total + 1)
    rate = agree / len(x)
    print(f"\npreprocessing agreement on {len(x)} rendered MNIST test digits: {rate:.1%} "
          + ", ".join(f"{k} {ok}/{n}" for k, (ok, n) in sorted(per_kind.items())))
    assert rate >= 0.99


# ---------------------------------------------------------------- refusing to guess

def _canvas(value: int = 255, size: int = 280) -> np.ndarray:
    return np.full((size, size), value, np.float32)


@pytest.mark.parametrize("name", ["white", "black", "gray", "noise", "faint", "speck", "dot", "tiny_dot_28"])
def test_blank_near_blank_and_dots_are_no_digit(name):
    rng = np.random.default_rng(0)
    image = {
        "white": _canvas(255), "black": _canvas(0), "gray": _canvas(128),
        "noise": np.clip(_canvas(240) + rng.normal(0, 4, (280, 280)), 0, 255),
        "faint": _canvas(255),
        "speck": _canvas(255),
        "dot": _canvas(255),
        "tiny_dot_28": _canvas(0, 28),
    }[name]
    if name == "faint":
        image[100:180, 130:140] = 235  # a barely visible smudge
    if name == "speck":
        image[50:53, 60:63] = 0
    if name == "dot":
        yy, xx = np.mgrid[:280, :280]
        image[(yy - 140) ** 2 + (xx - 140) ** 2 <= 9 ** 2] = 0  # a dot drawn with the page's pen
    if name == "tiny_dot_28":
        image[13:15, 13:15] = 255
    prepared = prepare_gray(image)
    assert prepared.image is None and prepared.no_digit


def test_a_drawn_stroke_is_a_digit():
    image = _canvas(255)
    image[40:240, 130:150] = 0
    prepared = prepare_gray(image)
    assert prepared.image is not None and prepared.image.shape == (IMAGE_SIZE, IMAGE_SIZE)
    assert prepared.image.dtype == np.uint8
    rows = np.flatnonzero(prepared.image.any(1))
    assert rows[-1] - rows[0] + 1 == 20  # longer side scaled to 20 px


# ---------------------------------------------------------------- decoding

@pytest.fixture(scope="module")
def digit_image() -> np.ndarray:
    img = np.zeros((60, 40), np.uint8)
    img[10:50, 17:23] = 255  # a "1": tall and thin, white on black
    return img


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "WEBP", "TIFF", "GIF"])
def test_each_format_decodes(fmt, digit_image):
    out = prepare_image(encode(Image.fromarray(255 - digit_image), fmt))
    assert out.image is not None
    assert out.image[:, 14].sum() > out.image[:, 4].sum()


def test_special_modes_decode(digit_image):
    page = Image.fromarray(255 - digit_image)
    sixteen = Image.fromarray((255 - digit_image).astype(np.uint16) * 257)
    cmyk = page.convert("RGB").convert("CMYK")
    palette = page.convert("P")
    la = Image.merge("LA", [page, Image.fromarray(np.full_like(digit_image, 255))])
    for img, fmt in [(sixteen, "PNG"), (cmyk, "JPEG"), (palette, "GIF"), (la, "PNG"), (page.convert("1"), "PNG")]:
        assert prepare_image(encode(img, fmt)).image is not None, img.mode


def test_gif_first_frame_and_tiff_first_page(digit_image):
    first = Image.fromarray(255 - digit_image)
    blank = Image.fromarray(np.full_like(digit_image, 255))
    for fmt in ("GIF", "TIFF"):
        data = encode(first, fmt, save_all=True, append_images=[blank])
        assert prepare_image(data).image is not None, fmt
        data = encode(blank, fmt, save_all=True, append_images=[first])
        assert prepare_image(data).image is None, fmt


def test_exif_orientation_is_applied(digit_image):
    page = Image.fromarray(255 - digit_image)  # 40 wide, 60 tall
    rotated = page.transpose(Image.Transpose.ROTATE_90)  # stored lying down: 60 wide, 40 tall
    exif = Image.Exif()
    exif[0x0112] = 8  # "rotate 90 CW to view": undoes the stored rotation
    gray = decode_image(encode(rotated, "JPEG", exif=exif.tobytes())).gray
    assert gray.shape == (60, 40)


def test_white_ink_on_transparent_canvas_uses_alpha(digit_image):
    rgba = np.zeros((*digit_image.shape, 4), np.uint8)
    rgba[..., :3] = 255
    rgba[..., 3] = digit_image
    assert prepare_image(encode(Image.fromarray(rgba, "RGBA"), "PNG")).image is not None


# ---------------------------------------------------------------- refusals

@pytest.mark.parametrize(("data", "kind"), [
    (b"", "undecodable"),
    (bytes(np.random.default_rng(1).integers(0, 256, 4000, dtype=np.uint8)), "undecodable"),
    (b"%PDF-1.7\n1 0 obj\n", "unsupported"),
    (b'<svg xmlns="http://www.w3.org/2000/svg"><circle r="4"/></svg>', "unsupported"),
    (b"<?xml version='1.0'?><svg/>", "unsupported"),
])
def test_bad_bytes_raise_image_error(data, kind):
    with pytest.raises(ImageError) as info:
        prepare_image(data)
    assert info.value.kind == kind and str(info.value).endswith(".")


def test_truncated_files_are_undecodable(digit_image):
    for fmt in ("PNG", "JPEG"):
        data = encode(Image.fromarray(np.random.default_rng(0).integers(0, 256, (200, 200), dtype=np.uint8)), fmt)
        with pytest.raises(ImageError) as info:
            prepare_image(data[: len(data) // 2])
        assert info.value.kind == "undecodable", fmt


def test_decompression_bomb_is_refused_before_decoding():
    data = png_header_only(50_000, 50_000)
    start = time.perf_counter()
    with pytest.raises(ImageError) as info:
        prepare_image(data)
    assert info.value.kind == "too_large"
    assert time.perf_counter() - start < 0.5
    with pytest.raises(ImageError) as info:
        prepare_image(png_header_only(6000, 5000), max_pixels=25_000_000)
    assert info.value.kind == "too_large"


def test_byte_limit():
    with pytest.raises(ImageError) as info:
        prepare_image(b"\x89PNG" + b"\x00" * 2000, max_bytes=1024)
    assert info.value.kind == "too_large"


@pytest.mark.parametrize("pixels", [
    [[0] * 28] * 27, [[0] * 27] * 28, [[float("nan")] * 28] * 28, [[float("inf")] * 28] * 28,
    [[-1] * 28] * 28, [[256] * 28] * 28, [[[0]] * 28] * 28, [["a"] * 28] * 28, [[True] * 28] * 28, "x", None,
    {"rows": []},
])
def test_bad_pixels_are_invalid(pixels):
    with pytest.raises(ImageError) as info:
        pixels_to_gray(pixels)
    assert info.value.kind == "invalid"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hnp.arrays(dtype=st.sampled_from([np.uint8, np.int16, np.float32, np.float64, np.bool_]),
                  shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=64)))
def test_any_array_gives_28x28_or_image_error(arr):
    try:
        out = prepare_gray(arr)
    except ImageError:
        return
    assert out.image is None or (out.image.shape == (28, 28) and out.image.dtype == np.uint8)
