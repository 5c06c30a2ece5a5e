"""A corpus of nasty inputs, each with the status code it must get; the service stays up throughout.

Every file is built here: truncated and bomb-sized headers by hand, exotic formats with Pillow.
"""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from image_files import encode, png, png_header_only
from PIL import Image
from service_client import assert_error, make_client

pytestmark = pytest.mark.api


@pytest.fixture(scope="module")
def digit(mnist_splits):
    """One MNIST test digit (white on black) and its label."""
    return mnist_splits.test_x[0], int(mnist_splits.test_y[0])


@pytest.fixture(scope="module")
def client(tmp_path_factory, service_model_dir):
    with make_client(tmp_path_factory.mktemp("nasty"), service_model_dir) as c:
        yield c


def big_paper(digit: np.ndarray, size: int = 112) -> np.ndarray:
    """The digit as dark ink on white paper, scaled up (what a photo or scan looks like)."""
    scaled = np.kron(digit, np.ones((size // 28, size // 28), np.uint8))
    return 255 - scaled


def exif_rotated_jpeg(paper: np.ndarray) -> bytes:
    """The image stored rotated 90 degrees clockwise with EXIF orientation 8 (display: rotate it back)."""
    img = Image.fromarray(np.rot90(paper, k=-1).copy())
    exif = Image.Exif()
    exif[0x0112] = 8
    return encode(img, "JPEG", quality=95, exif=exif.tobytes())


def image_files(digit: np.ndarray) -> dict[str, tuple[bytes, int]]:
    """name -> (file bytes, expected status) for the multipart upload corpus."""
    paper = big_paper(digit)
    gray = Image.fromarray(paper)
    png_ok, jpeg_ok = png(paper), encode(gray, "JPEG", quality=90)
    rng = np.random.default_rng(7)
    frames = [Image.fromarray(paper).convert("P"), Image.fromarray(np.full_like(paper, 255)).convert("P")]
    gif_anim = io.BytesIO()
    frames[0].save(gif_anim, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    tiff_pages = io.BytesIO()
    gray.save(tiff_pages, "TIFF", save_all=True, append_images=[Image.fromarray(np.full_like(paper, 255))])
    sixteen = Image.fromarray(paper.astype("<u2") * 257)
    return {
        "zero bytes": (b"", 400),
        "random bytes": (rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(), 400),
        "truncated PNG": (png_ok[: len(png_ok) // 2], 400),
        "truncated JPEG": (jpeg_ok[: len(jpeg_ok) // 2], 400),
        "PNG declaring 50,000 x 50,000": (png_header_only(50_000, 50_000), 413),
        "1x1 PNG": (png(np.zeros((1, 1), np.uint8)), 200),
        "16-bit PNG": (encode(sixteen, "PNG"), 200),
        "CMYK JPEG": (encode(gray.convert("CMYK"), "JPEG", quality=90), 200),
        "palette GIF": (encode(gray.convert("P"), "GIF"), 200),
        "animated GIF": (gif_anim.getvalue(), 200),
        "multi-page TIFF": (tiff_pages.getvalue(), 200),
        "EXIF-rotated JPEG": (exif_rotated_jpeg(paper), 200),
        "SVG": (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
                b'<circle cx="5" cy="5" r="4"/></svg>', 415),
        "PDF": (b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n", 415),
    }


def json_bodies() -> dict[str, tuple[bytes, int]]:
    """name -> (raw JSON body, expected status) for application/json requests."""
    row = ",".join(["0"] * 28)
    grid = "[" + ",".join([f"[{row}]"] * 28) + "]"
    ten_mb = b'{"pixels": [' + b",".join([b"[" + b",".join([b"255"] * 1000) + b"]"] * 2600) + b"]}"
    return {
        "pixels with NaN": (b'{"pixels": [[NaN' + (b",0" * 27) + b"]" + (b",[" + row.encode() + b"]") * 27 + b"]}",
                            422),
        "pixels with Infinity": (grid.replace("0", "Infinity", 1).join(['{"pixels": ', "}"]).encode(), 422),
        "pixels with 1e999": (grid.replace("0", "1e999", 1).join(['{"pixels": ', "}"]).encode(), 422),
        "negative pixels": (grid.replace("0", "-1", 1).join(['{"pixels": ', "}"]).encode(), 422),
        "pixels over 255": (grid.replace("0", "256", 1).join(['{"pixels": ', "}"]).encode(), 422),
        "27x28 pixels": (json.dumps({"pixels": [[0] * 28] * 27}).encode(), 422),
        "28x27 pixels": (json.dumps({"pixels": [[0] * 27] * 28}).encode(), 422),
        "nested junk": (json.dumps({"pixels": [[[{"a": [1, None]}]] * 28] * 28}).encode(), 422),
        "strings as pixels": (json.dumps({"pixels": [["12"] * 28] * 28}).encode(), 422),
        "booleans as pixels": (json.dumps({"pixels": [[True] * 28] * 28}).encode(), 422),
        "10 MB array": (ten_mb, 413),
        "huge base64 string": (b'{"image": "' + b"QUFB" * 2_000_000 + b'"}', 413),
        "data: URL with a wrong MIME type": (json.dumps({"image": "data:text/html;base64," + base64.b64encode(
            b"<script>alert(1)</script>").decode()}).encode(), 415),
        "data: URL of a PDF": (json.dumps({"image": "data:application/pdf;base64," + base64.b64encode(
            b"%PDF-1.4").decode()}).encode(), 415),
        "data: URL of an SVG claiming image/svg+xml": (json.dumps({"image": "data:image/svg+xml;base64," + base64.b64encode(
            b"<svg xmlns='http://www.w3.org/2000/svg'/>").decode()}).encode(), 415),
        "not JSON": (b"{\"pixels\": [[0, 0", 422),
        "JSON null": (b"null", 422),
        "deeply nested lists": (b"[" * 5000 + b"]" * 5000, 422),
    }


def test_image_file_corpus(client, digit):
    corpus = image_files(digit[0])
    seen: dict[str, int] = {}
    for name, (data, expected) in corpus.items():
        r = client.post("/predict", files={"file": ("upload", data, "application/octet-stream")})
        seen[name] = r.status_code
        if expected != 200:
            assert_error(r, expected)
        else:
            assert r.status_code == 200, f"{name}: {r.text}"
    print(f"\n{len(corpus)} nasty files: " + ", ".join(f"{k}={v}" for k, v in seen.items()))
    assert seen == {k: v[1] for k, v in corpus.items()}
    assert client.get("/health").status_code == 200


def test_readable_odd_formats_still_read_the_digit(client, digit):
    image, label = digit
    corpus = image_files(image)
    for name in ("16-bit PNG", "CMYK JPEG", "palette GIF", "animated GIF", "multi-page TIFF", "EXIF-rotated JPEG"):
        body = client.post("/predict", files={"file": ("f", corpus[name][0], "application/octet-stream")}).json()
        assert body["digit"] == label, f"{name}: read {body['digit']} ({body['status']}), expected {label}"
    tiny = client.post("/predict", files={"file": ("f", corpus["1x1 PNG"][0], "image/png")}).json()
    assert tiny["status"] == "no_digit" and tiny["digit"] is None


def test_json_corpus(client):
    corpus = json_bodies()
    for name, (body, expected) in corpus.items():
        r = client.post("/predict", content=body, headers={"content-type": "application/json"})
        detail = assert_error(r, expected)
        assert len(detail) < 300, f"{name}: {detail}"
    print(f"\n{len(corpus)} nasty JSON bodies refused with the expected 4xx")
    assert client.get("/health").status_code == 200


def test_corpus_through_read_and_batch(client, digit):
    corpus = image_files(digit[0])
    for name, (data, expected) in corpus.items():
        r = client.post("/read", files={"file": ("f", data, "application/octet-stream")})
        assert r.status_code == expected, f"/read {name}: {r.status_code} {r.text[:200]}"
        r = client.post("/predict/batch", files=[("files", ("ok.png", png(digit[0]), "image/png")),
                                                   ("files", ("f", data, "application/octet-stream"))])
        assert r.status_code == expected, f"/predict/batch {name}: {r.status_code} {r.text[:200]}"
    assert client.get("/health").status_code == 200
