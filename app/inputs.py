"""Turning request bodies (multipart upload, JSON base64 / data: URL, JSON pixels) into image inputs.

Everything here only parses and checks sizes; decoding happens in `cnn_ocr.decode` inside a worker thread.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

import numpy as np
import orjson
from fastapi import HTTPException, Request
from starlette.datastructures import UploadFile

from app.errors import ApiError
from app.settings import Settings
from cnn_ocr.decode import ImageTooLarge, InvalidImage, UnsupportedImage
from cnn_ocr.preprocess import pixels_to_gray

_DATA_URL = re.compile(r"^data:([^;,]*)((?:;[^;,]*)*),", re.IGNORECASE)
_B64_CHARS = re.compile(rb"^[A-Za-z0-9+/_-]*={0,2}$")


@dataclass(frozen=True)
class ImageInput:
    """One image to read: file bytes, or a 28x28 grayscale array from JSON pixels."""

    data: bytes | None = None
    pixels: np.ndarray | None = None
    name: str = "image"


def decode_base64_image(text: str, max_bytes: int) -> bytes:
    """Bytes of a base64 string or a `data:image/...;base64,` URL; an `ImageError` when it is neither."""
    text = text.strip()
    match = _DATA_URL.match(text[:256])
    if match:
        mime, params = match.group(1).strip().lower(), match.group(2).lower()
        if mime and not mime.startswith("image/"):
            raise UnsupportedImage(f"The data: URL has type {mime[:40]!r}; only image/* is accepted.")
        if ";base64" not in params:
            raise InvalidImage("The data: URL must be base64-encoded (data:image/png;base64,...).")
        text = text[match.end():]
    if len(text) > (max_bytes * 4) // 3 + 8:
        raise ImageTooLarge(f"The image is larger than the limit of {max_bytes:,} bytes.")
    raw = "".join(text.split()).encode("ascii", errors="replace")
    if not _B64_CHARS.match(raw):
        raise InvalidImage("image must be base64 text or a data:image/...;base64 URL.")
    try:
        alt = b"-_" if (b"-" in raw or b"_" in raw) else None
        return base64.b64decode(raw + b"=" * (-len(raw) % 4), altchars=alt, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidImage("image is not valid base64.") from None


def _json_input(body: bytes, settings: Settings) -> ImageInput:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ApiError(422, "The body is not valid JSON (NaN and Infinity are not allowed).") from None
    if not isinstance(payload, dict) or len(payload) != 1 or not ({"image", "pixels"} & payload.keys()):
        raise ApiError(422, "Send a JSON object with exactly one field: \"image\" or \"pixels\".")
    if "image" in payload:
        if not isinstance(payload["image"], str):
            raise ApiError(422, "image must be a string (base64 or a data: URL).")
        return ImageInput(data=decode_base64_image(payload["image"], settings.max_bytes))
    return ImageInput(pixels=pixels_to_gray(payload["pixels"]))


async def _upload_bytes(upload: UploadFile, settings: Settings, label: str) -> bytes:
    data = await upload.read(settings.max_bytes + 1)
    if len(data) > settings.max_bytes:
        raise ImageTooLarge(f"{label} is larger than the limit of {settings.max_bytes:,} bytes.")
    return data


async def _form(request: Request, max_files: int):
    try:
        return await request.form(max_files=max_files, max_fields=8)
    except HTTPException as exc:  # starlette's multipart parser refusing the body
        text = str(exc.detail)
        if "Too many files" in text:
            raise ApiError(413, f"Too many files: at most {max_files - 1 or 1} per request.") from None
        raise ApiError(400, f"The multipart body cannot be parsed ({text.rstrip('.')}).") from None


def _content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def single_input(request: Request, settings: Settings) -> ImageInput:
    """The one image of a /predict or /read request."""
    kind = _content_type(request)
    if kind == "multipart/form-data":
        form = await _form(request, 2)
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ApiError(422, "The multipart form needs an image file in the field \"file\".")
        return ImageInput(data=await _upload_bytes(upload, settings, "The file"), name=upload.filename or "file")
    if kind == "application/json" or kind.endswith("+json"):
        return _json_input(await request.body(), settings)
    raise ApiError(415, "Send multipart/form-data with a field \"file\", or application/json with "
                   "\"image\" or \"pixels\".")


async def batch_inputs(request: Request, settings: Settings) -> list[ImageInput]:
    """The images of a /predict/batch request (multipart field `files`, repeatable)."""
    if _content_type(request) != "multipart/form-data":
        raise ApiError(415, "Send multipart/form-data with one or more fields named \"files\".")
    form = await _form(request, settings.batch_limit + 1)
    uploads = form.getlist("files")
    if not uploads:
        raise ApiError(422, "The multipart form needs at least one image file in the field \"files\".")
    if len(uploads) > settings.batch_limit:
        raise ApiError(413, f"Too many files: at most {settings.batch_limit} per batch.")
    inputs = []
    for i, upload in enumerate(uploads):
        if not isinstance(upload, UploadFile):
            raise ApiError(422, f"files[{i}] is not a file upload.")
        label = f"files[{i}] ({(upload.filename or 'file')[:60]})"
        inputs.append(ImageInput(data=await _upload_bytes(upload, settings, label), name=label))
    return inputs
