"""`POST /read?mode=auto`: one digit is answered as /predict answers it, a row as /read answers it."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient
from image_files import png

from app.main import create_app
from app.settings import Settings

pytestmark = pytest.mark.api


@pytest.fixture()
def client(tmp_path, service_model_dir):
    settings = Settings(model_path=service_model_dir, feedback_db=tmp_path / "feedback.db", reload_interval_s=0)
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def _upload(client: TestClient, image: np.ndarray, query: str) -> dict:
    r = client.post(f"/read{query}", files={"file": ("img.png", png(255 - image), "image/png")})
    assert r.status_code == 200, r.text
    return r.json()


def test_auto_reads_one_digit_like_predict(client, mnist_splits):
    x = mnist_splits.test_x[:8]
    for digit in x:
        big = np.zeros((112, 112), np.uint8)
        big[14:98, 14:98] = np.kron(digit, np.ones((3, 3), np.uint8))
        auto = _upload(client, big, "?mode=auto")
        single = client.post("/predict", files={"file": ("img.png", png(255 - big), "image/png")}).json()
        assert auto["kind"] == "digit"
        assert auto["digit"] == single["digit"] and auto["probabilities"] == single["probabilities"]
        assert auto["input_image"] == single["input_image"]


def test_auto_reads_a_row_like_read(client, mnist_splits):
    x = mnist_splits.test_x[20:24]
    row = np.zeros((40, 4 * 40), np.uint8)
    for k in range(4):
        row[6:34, 6 + 40 * k:34 + 40 * k] = x[k]
    auto = _upload(client, row, "?mode=auto")
    plain = _upload(client, row, "")
    assert auto["kind"] == plain["kind"] == "row"
    assert auto["text"] == plain["text"] and len(auto["digits"]) == 4
    assert [d["box"] for d in auto["digits"]] == [d["box"] for d in plain["digits"]]


def test_auto_blank_is_no_digit_and_bad_mode_is_one_line_422(client):
    blank = _upload(client, np.zeros((60, 60), np.uint8), "?mode=auto")
    assert blank["kind"] == "digit" and blank["status"] == "no_digit" and blank["digit"] is None
    r = client.post("/read?mode=sideways", files={"file": ("b.png", png(np.full((30, 30), 255, np.uint8)), "image/png")})
    assert r.status_code == 422
    assert list(r.json()) == ["detail"] and "\n" not in r.json()["detail"]
