"""Whole pages through the real HTTP API: every line of digits, top to bottom and left to right, in `lines`;
a single row answers as it always did; too many lines is a one-line 422."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from browser_env import page_server
from image_files import png
from service_client import assert_error

from cnn_ocr.data.photo_sets import generate

pytestmark = pytest.mark.model
MAX_LINES = 4


@pytest.fixture(scope="module")
def base(tmp_path_factory, service_model_dir):
    with page_server(service_model_dir, tmp_path_factory.mktemp("lines"), OCR_READ_MAX_LINES=str(MAX_LINES)) as (
            url, _):
        yield url


def post(base: str, data: bytes, name: str = "page.jpg") -> httpx.Response:
    return httpx.post(f"{base}/read", files={"file": (name, data, "image/jpeg")}, timeout=60)


def overlap(a: list[int], b: list[int]) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0, x1 - x0) * max(0, y1 - y0)
    return inter / float(a[2] * a[3] + b[2] * b[3] - inter)


def check_lines_answer(body: dict) -> None:
    """`text` joins the lines, `digits` is every line's digits in order, each line's box holds its digits."""
    lines = body["lines"]
    assert body["text"] == "\n".join(line["text"] for line in lines)
    assert [d["prediction_id"] for d in body["digits"]] == [d["prediction_id"] for ln in lines for d in ln["digits"]]
    for line in lines:
        x, y, w, h = line["box"]
        for d in line["digits"]:
            bx, by, bw, bh = d["box"]
            assert x <= bx and y <= by and bx + bw <= x + w and by + bh <= y + h


def test_a_page_of_three_numbers_comes_back_as_three_lines_in_order(base, mnist_splits, project_params):
    photo = generate(project_params.photos, mnist_splits.test_x, mnist_splits.test_y, "pages", 4, megapixels=2.0)
    assert len(photo.lines) == 3
    r = post(base, photo.data)
    assert r.status_code == 200, r.text
    body = r.json()
    check_lines_answer(body)
    assert body["kind"] == "page" and len(body["lines"]) == 3
    for got, truth in zip(body["lines"], photo.lines, strict=True):
        assert overlap(got["box"], list(truth.box)) > 0.5, (got["box"], truth.box)
        assert len(got["digits"]) == len(truth.text)
    assert body["text"] == photo.text


def test_lines_side_by_side_are_read_left_to_right_within_their_band(base, mnist_splits):
    x, y = mnist_splits.test_x, mnist_splits.test_y
    page = np.zeros((260, 700), np.uint8)
    spots = {(20, 420): (0, 1), (30, 40): (2, 3, 4), (160, 200): (5, 6)}  # (top, left): digits; upper left second
    for (top, left), idx in spots.items():
        for k, i in enumerate(idx):
            page[top:top + 28, left + 32 * k:left + 32 * k + 28] = x[i]
    body = post(base, png(255 - page), "page.png").json()
    check_lines_answer(body)
    want = ["".join(str(y[i]) for i in spots[key]) for key in ((30, 40), (20, 420), (160, 200))]
    assert [line["text"] for line in body["lines"]] == want


def test_a_single_row_answers_as_before_with_one_line(base, mnist_splits, project_params):
    photo = generate(project_params.photos, mnist_splits.test_x, mnist_splits.test_y, "numbers", 1, megapixels=2.0)
    body = post(base, photo.data).json()
    assert body["kind"] == "row" and len(body["lines"]) == 1 and "\n" not in body["text"]
    assert body["lines"][0]["text"] == body["text"] == photo.text
    assert body["lines"][0]["digits"] == body["digits"]
    assert {"prediction_id", "text", "status", "digits", "model", "kind"} <= set(body)
    auto = httpx.post(f"{base}/read?mode=auto", files={"file": ("n.jpg", photo.data, "image/jpeg")}, timeout=60)
    assert auto.json()["kind"] == "row" and auto.json()["text"] == photo.text


def test_a_digit_drawn_in_two_stacked_pieces_is_one_line(base):
    yy, xx = np.mgrid[0:120, 0:80]
    ring = lambda cy: np.abs(np.hypot(yy - cy, xx - 40) - 20) < 5  # noqa: E731
    eight = np.where(ring(32) | ring(88), 0, 255).astype(np.uint8)
    eight[58:62] = 255  # the loops drawn apart: two pieces, one above the other
    body = post(base, png(eight), "eight.png").json()
    assert body["kind"] == "row" and len(body["lines"]) == 1 and len(body["digits"]) == 1


def test_a_page_digit_takes_feedback(base, mnist_splits, project_params):
    photo = generate(project_params.photos, mnist_splits.test_x, mnist_splits.test_y, "pages", 4, megapixels=2.0)
    digit = post(base, photo.data).json()["lines"][2]["digits"][0]
    fb = httpx.post(f"{base}/feedback", json={"prediction_id": digit["prediction_id"], "label": 4}, timeout=30)
    assert fb.status_code == 200 and fb.json()["label"] == 4


def test_more_lines_than_allowed_is_a_one_line_422(base, mnist_splits, project_params):
    photo = generate(project_params.photos, mnist_splits.test_x, mnist_splits.test_y, "pages", 1, megapixels=2.0)
    assert len(photo.lines) > MAX_LINES
    detail = assert_error(post(base, photo.data), 422)
    assert f"at most {MAX_LINES}" in detail and "OCR_READ_MAX_LINES" in detail
