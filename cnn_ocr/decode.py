"""Decoding untrusted image bytes into one grayscale array, with size limits checked before decoding.

Accepted: PNG, JPEG, GIF (first frame), BMP, WebP and TIFF (first page). The declared width x height is read
from the header and refused when over the pixel limit, so a decompression bomb is never expanded. EXIF
orientation is applied, transparency is flattened onto white, and the result is grayscale float32 in
[0, 255] where 0 is black.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from PIL import Image, ImageOps

log = logging.getLogger(__name__)

ALLOWED_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")
DEFAULT_MAX_BYTES = 5 * 1024 * 1024
DEFAULT_MAX_PIXELS = 25_000_000
# Larger images are reduced before analysis: a digit needs far fewer pixels than a 25 MP photo.
MAX_WORK_SIDE = 2048
# A JPEG over twice this on its longer side is decoded at a reduced scale (1/2 to 1/8), at least this large.
DRAFT_SIDE = 960

# Magic numbers of formats that are recognisably not one of ours (answered 415, not 400).
_OTHER_FORMATS: tuple[tuple[bytes, str], ...] = (
    (b"%PDF", "PDF"), (b"%!PS", "PostScript"), (b"8BPS", "PSD"), (b"\x00\x00\x01\x00", "ICO"),
    (b"II*\x00\x10\x00\x00\x00CR", "RAW"), (b"\xff\x0a", "JPEG XL"), (b"\x00\x00\x00\x0cJXL ", "JPEG XL"),
    (b"PK\x03\x04", "ZIP"), (b"\x1f\x8b", "gzip"), (b"qoif", "QOI"), (b"P1", "PBM"), (b"P4", "PBM"),
    (b"P2", "PGM"), (b"P5", "PGM"), (b"P3", "PPM"), (b"P6", "PPM"),
)


class ImageError(ValueError):
    """Input that cannot be turned into a digit image; the message is one sentence saying what was wrong.

    Each subclass names one kind of problem (`kind`); the service decides how to answer each one.
    """

    kind: ClassVar[str] = "invalid"


class UndecodableImage(ImageError):
    """The bytes are not a readable image (empty, corrupt, truncated or an unreadable pixel format)."""

    kind = "undecodable"


class ImageTooLarge(ImageError):
    """The file or the image it declares is over the size limits."""

    kind = "too_large"


class UnsupportedImage(ImageError):
    """A recognisable file that is not one of the accepted image formats (PDF, SVG, ...)."""

    kind = "unsupported"


class InvalidImage(ImageError):
    """Pixels or a drawing that cannot be read as digits (wrong shape, out of range, far too many marks)."""

    kind = "invalid"


@dataclass(frozen=True)
class Decoded:
    """A decoded image: grayscale float32 (H, W) in [0, 255], and the factor it was reduced by."""

    gray: np.ndarray
    scale: float
    format: str


def _sniff_other_format(data: bytes) -> str | None:
    head = data[:64]
    for magic, name in _OTHER_FORMATS:
        if head.startswith(magic):
            return name
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<svg", b"<?xml", b"<!doctype svg")):
        return "SVG"
    if text.startswith((b"<html", b"<!doctype html")):
        return "HTML"
    if len(data) >= 12 and data[4:8] == b"ftyp":
        return "HEIF/AVIF"
    return None


def _open(data: bytes) -> Image.Image:
    try:
        return Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except Image.DecompressionBombError:
        raise ImageTooLarge("The image declares far too many pixels to decode safely.") from None
    except Exception:
        other = _sniff_other_format(data)
        if other:
            raise UnsupportedImage(f"{other} files are not supported; send PNG, JPEG, GIF, BMP, "
                             "WebP or TIFF.") from None
        raise UndecodableImage("The file is not a readable image (PNG, JPEG, GIF, BMP, WebP "
                         "or TIFF).") from None


def _check_size(img: Image.Image, max_pixels: int) -> None:
    width, height = img.size
    if width < 1 or height < 1:
        raise UndecodableImage("The image has no pixels.")
    if width * height > max_pixels:
        raise ImageTooLarge(f"The image is {width}x{height} pixels; the limit is "
                         f"{max_pixels:,} pixels in total.")


def _load(img: Image.Image) -> Image.Image:
    if img.format == "JPEG" and max(img.size) > 2 * DRAFT_SIDE:  # decode at a reduced scale: faster, same digit
        ratio = DRAFT_SIDE / max(img.size)
        img.draft("RGB", (max(1, round(img.size[0] * ratio)), max(1, round(img.size[1] * ratio))))
    try:
        img.seek(0)
        img.load()
    except Exception:
        raise UndecodableImage("The image data is corrupt or truncated.") from None
    try:
        return ImageOps.exif_transpose(img) or img
    except Exception:  # a malformed EXIF block is no reason to refuse the pixels
        log.debug("ignoring unreadable EXIF orientation")
        return img


def _reduce(img: Image.Image) -> tuple[Image.Image, float]:
    factor = int(np.ceil(max(img.size) / MAX_WORK_SIDE))
    if factor <= 1:
        return img, 1.0
    return img.reduce(factor), float(factor)


def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def _high_bit_depth(img: Image.Image) -> np.ndarray:
    arr = np.asarray(img, dtype=np.float64)
    if img.mode == "F":
        arr = np.nan_to_num(arr, nan=0.0, posinf=255.0, neginf=0.0)
        if 0.0 <= arr.min() and arr.max() <= 1.0:
            arr = arr * 255.0
        return np.clip(arr, 0, 255).astype(np.float32)
    peak = 65535.0 if arr.max() > 255 else 255.0
    return np.clip(arr * (255.0 / peak), 0, 255).astype(np.float32)


def to_gray(img: Image.Image) -> np.ndarray:
    """Grayscale float32 (H, W) in [0, 255]; transparency flattened onto white.

    When the opaque content has no contrast but the alpha channel does (ink drawn only with alpha, e.g.
    white strokes on a transparent canvas), the alpha channel itself is the drawing.
    """
    if img.mode in ("L", "1"):
        return np.asarray(img.convert("L"), dtype=np.float32)
    if img.mode.startswith("I") or img.mode == "F":
        return _high_bit_depth(img)
    has_alpha = img.mode in ("RGBA", "RGBa", "LA", "La", "PA") or (img.mode == "P" and "transparency" in img.info)
    if not has_alpha:
        return _luma(np.asarray(img.convert("RGB"), dtype=np.float32)).astype(np.float32)
    rgba = np.asarray(img.convert("RGBA"), dtype=np.float32)
    alpha = rgba[..., 3] / 255.0
    flat = _luma(rgba[..., :3]) * alpha + 255.0 * (1.0 - alpha)
    if np.ptp(flat) < 32 and np.ptp(alpha) * 255 >= 32:
        flat = 255.0 - alpha * 255.0  # the shape is only in the alpha channel: treat it as dark ink
    return flat.astype(np.float32)


def decode_image(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> Decoded:
    """Decode untrusted bytes into grayscale; raises `ImageError` (never anything else) for bad input."""
    if not data:
        raise UndecodableImage("The file is empty.")
    if len(data) > max_bytes:
        raise ImageTooLarge(f"The file is {len(data):,} bytes; the limit is {max_bytes:,} bytes.")
    img = _open(data)
    fmt = img.format or ""
    _check_size(img, max_pixels)
    declared = max(img.size)
    img = _load(img)
    _check_size(img, max_pixels)
    drafted = declared / max(img.size)  # JPEG decoded at 1/2, 1/4 or 1/8 scale
    try:
        if img.mode == "P":
            img = img.convert("RGBA")
        elif img.mode.startswith("I;16"):
            img = img.convert("I")
        img, scale = _reduce(img)
        return Decoded(to_gray(img), scale * drafted, fmt)
    except ImageError:
        raise
    except Exception:
        raise UndecodableImage(f"The image's pixel format ({img.mode}) cannot be read.") from None
