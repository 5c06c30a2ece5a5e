"""The HTTP API against the real app (ONNX Runtime, SQLite), endpoint by endpoint and error by error."""

from __future__ import annotations

import base64
import io
import subprocess
import sys

import numpy as np
import pytest
from fastapi.testclient import TestClient
from image_files import png, png_header_only
from PIL import Image
from service_client import TOKEN, assert_error, make_client

from app.main import create_app
from app.model_store import NoModelError
from app.settings import Settings

pytestmark = pytest.mark.api


@pytest.fixture(scope="module")
def digits(mnist_splits):
    return mnist_splits.test_x[:20], mnist_splits.test_y[:20]


# ---------------------------------------------------------------- predict

def test_predict_multipart_json_base64_data_url_and_pixels_agree(client, digits):
    x, y = digits
    image = png(255 - x[0])  # dark ink on light paper
    b64 = base64.b64encode(image).decode()
    answers = [
        client.post("/predict", files={"file": ("d.png", image, "image/png")}),
        client.post("/predict", json={"image": b64}),
        client.post("/predict", json={"image": f"data:image/png;base64,{b64}"}),
        client.post("/predict", json={"pixels": x[0].tolist()}),
    ]
    for r in answers:
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["digit"] == y[0] and body["status"] == "ok"
        assert len(body["probabilities"]) == 10 and abs(sum(body["probabilities"]) - 1) < 1e-3
        assert body["confidence"] == pytest.approx(max(body["probabilities"]), abs=1e-6)
        assert body["model"] == {"name": "test-cnn", "version": "1"}
        assert body["input_image"].startswith("data:image/png;base64,")
    seen = np.asarray(Image.open(io.BytesIO(base64.b64decode(answers[0].json()["input_image"].split(",")[1]))))
    assert np.array_equal(seen, x[0])
    assert len({r.json()["prediction_id"] for r in answers}) == 4


def test_blank_is_no_digit(client):
    body = client.post("/predict", files={"file": ("b.png", png(np.full((100, 100), 255, np.uint8)), "image/png")}).json()
    assert body["status"] == "no_digit" and body["digit"] is None and body["confidence"] == 0.0
    assert body["input_image"] is None


def test_uncertain_below_threshold(tmp_path, client, service_model_dir, digits):
    """A threshold between two answers' confidences: the less sure one is `uncertain` (digit still given),
    the surer one stays `ok`."""
    x, y = digits
    confidences = [client.post("/predict", json={"pixels": img.tolist()}).json()["confidence"] for img in x]
    low, high = int(np.argmin(confidences)), int(np.argmax(confidences))
    assert confidences[low] < confidences[high], confidences
    threshold = (confidences[low] + confidences[high]) / 2
    (tmp_path / "t").mkdir()
    with make_client(tmp_path / "t", service_model_dir, uncertain_threshold=threshold) as c:
        unsure = c.post("/predict", json={"pixels": x[low].tolist()}).json()
        sure = c.post("/predict", json={"pixels": x[high].tolist()}).json()
        assert c.get("/model").json()["uncertain_threshold"] == pytest.approx(threshold)
    assert unsure["status"] == "uncertain" and unsure["confidence"] < threshold
    assert unsure["digit"] == int(np.argmax(unsure["probabilities"]))
    assert sure["status"] == "ok" and sure["digit"] == y[high] and sure["confidence"] >= threshold


def test_batch_keeps_order(client, digits):
    x, y = digits
    files = [("files", (f"{i}.png", png(x[i]), "image/png")) for i in range(8)]
    r = client.post("/predict/batch", files=files)
    assert r.status_code == 200
    assert [res["digit"] for res in r.json()["results"]] == list(y[:8])


def test_batch_limits_and_shape(tmp_path, service_model_dir, digits):
    with make_client(tmp_path, service_model_dir, batch_limit=3) as c:
        files = [("files", (f"{i}.png", png(digits[0][i]), "image/png")) for i in range(4)]
        assert "at most 3" in assert_error(c.post("/predict/batch", files=files), 413)
        assert_error(c.post("/predict/batch", files=[("other", ("a.png", b"x", "image/png"))]), 422)
        assert_error(c.post("/predict/batch", json={"image": "abc"}), 415)
        bad = [("files", ("ok.png", png(digits[0][0]), "image/png")), ("files", ("bad.png", b"nope", "image/png"))]
        assert_error(c.post("/predict/batch", files=bad), 400)


# ---------------------------------------------------------------- read

def test_read_returns_digits_left_to_right_with_boxes(client, digits):
    x, y = digits
    row = np.zeros((40, 3 * 40), np.uint8)
    for k in range(3):
        row[6:34, 6 + 40 * k:34 + 40 * k] = x[k]
    r = client.post("/read", files={"file": ("row.png", png(255 - row), "image/png")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["text"] == "".join(str(d) for d in y[:3])
    assert [d["box"][0] for d in body["digits"]] == sorted(d["box"][0] for d in body["digits"])
    assert all(len(d["box"]) == 4 and d["prediction_id"] for d in body["digits"])
    fb = client.post("/feedback", json={"prediction_id": body["digits"][1]["prediction_id"], "label": 3})
    assert fb.status_code == 200
    assert "one digit" in assert_error(client.post("/feedback", json={"prediction_id": body["prediction_id"],
                                                                     "label": 3}), 422)
    blank = client.post("/read", files={"file": ("b.png", png(np.zeros((40, 100), np.uint8)), "image/png")}).json()
    assert blank["status"] == "no_digit" and blank["text"] == "" and blank["digits"] == []


# ---------------------------------------------------------------- errors

def test_error_codes(client):
    bomb_header = png_header_only(50_000, 50_000)
    cases = [
        (client.post("/predict", files={"file": ("x.png", b"random bytes here", "image/png")}), 400),
        (client.post("/predict", files={"file": ("x.png", b"", "image/png")}), 400),
        (client.post("/predict", files={"file": ("x.png", bomb_header, "image/png")}), 413),
        (client.post("/predict", files={"file": ("x.svg", b"<svg xmlns='http://www.w3.org/2000/svg'/>",
                                                 "image/svg+xml")}), 415),
        (client.post("/predict", files={"file": ("x.pdf", b"%PDF-1.4 ...", "application/pdf")}), 415),
        (client.post("/predict", content=b"abc", headers={"content-type": "text/plain"}), 415),
        (client.post("/predict", json={"image": "data:text/plain;base64,aGVsbG8="}), 415),
        (client.post("/predict", json={"image": "not base64 !!"}), 422),
        (client.post("/predict", json={"image": 5}), 422),
        (client.post("/predict", json={"pixels": [[0] * 28] * 27}), 422),
        (client.post("/predict", json={"pixels": [[-3] * 28] * 28}), 422),
        (client.post("/predict", json={"pixels": [[0] * 28] * 28, "image": "x"}), 422),
        (client.post("/predict", json=[1, 2]), 422),
        (client.post("/predict", content=b'{"pixels": [[NaN]]}', headers={"content-type": "application/json"}), 422),
        (client.post("/predict", content=b"{not json", headers={"content-type": "application/json"}), 422),
        (client.post("/predict", files={"other": ("x.png", b"abc", "image/png")}), 422),
        (client.get("/nowhere"), 404),
        (client.get("/predict"), 405),
    ]
    for response, status in cases:
        assert_error(response, status)


def test_size_limits(tmp_path, service_model_dir):
    with make_client(tmp_path, service_model_dir, max_bytes=2048, max_pixels=10_000) as c:
        big = png(np.random.default_rng(0).integers(0, 256, (100, 100), dtype=np.uint8))
        assert "limit" in assert_error(c.post("/predict", files={"file": ("b.png", big, "image/png")}), 413)
        wide = png(np.zeros((10, 1001), np.uint8))
        assert "pixels" in assert_error(c.post("/predict", files={"file": ("w.png", wide, "image/png")}), 413)
        huge_json = b'{"image": "' + b"A" * 20_000 + b'"}'
        assert_error(c.post("/predict", content=huge_json, headers={"content-type": "application/json"}), 413)


def test_unexpected_errors_are_clean_json(client, monkeypatch):
    service = client.app.state.service

    def boom(*_args, **_kw):
        raise RuntimeError("internal detail that must not leak")

    monkeypatch.setattr(service, "predict", boom)
    detail = assert_error(client.post("/predict", json={"pixels": [[0] * 28] * 28}), 500)
    assert "internal detail" not in detail
    assert client.get("/health").status_code == 200


# ---------------------------------------------------------------- feedback

def test_feedback_stored_unknown_and_bad_label(client, digits, tmp_path):
    pid = client.post("/predict", json={"pixels": digits[0][0].tolist()}).json()["prediction_id"]
    r = client.post("/feedback", json={"prediction_id": pid, "label": 5})
    assert r.status_code == 200 and r.json()["stored"] and r.json()["label"] == 5
    assert_error(client.post("/feedback", json={"prediction_id": "0" * 32, "label": 5}), 404)
    assert_error(client.post("/feedback", json={"prediction_id": "x'); DROP TABLE feedback;--", "label": 1}), 404)
    for bad in (10, -1, "5", 2.5, None):
        assert_error(client.post("/feedback", json={"prediction_id": pid, "label": bad}), 422)
    assert_error(client.post("/feedback", json={"label": 3}), 422)
    blank = client.post("/predict", json={"pixels": [[0] * 28] * 28}).json()
    assert "nothing to correct" in assert_error(client.post("/feedback", json={"prediction_id": blank["prediction_id"],
                                                                                "label": 1}), 422)
    from cnn_ocr.feedback import FeedbackStore

    store = FeedbackStore(tmp_path / "feedback.db")
    images, labels, _ = store.feedback_arrays()
    store.close()
    assert labels.tolist() == [5] and np.array_equal(images[0], digits[0][0])


def test_feedback_rate_limit(tmp_path, service_model_dir, digits):
    with make_client(tmp_path, service_model_dir, feedback_rate_limit=2) as c:
        pid = c.post("/predict", json={"pixels": digits[0][0].tolist()}).json()["prediction_id"]
        for _ in range(2):
            assert c.post("/feedback", json={"prediction_id": pid, "label": 1}).status_code == 200
        r = c.post("/feedback", json={"prediction_id": pid, "label": 1})
        assert_error(r, 429)
        assert int(r.headers["retry-after"]) >= 1


# ---------------------------------------------------------------- model, health, metrics, docs

def test_model_health_metrics_docs(client, digits):
    info = client.get("/model").json()
    assert info["name"] == "test-cnn" and info["version"] == "1" and info["data_version"] == "v2.0"
    assert info["loaded_at"] and info["source"].startswith("OCR_MODEL_PATH")
    assert client.get("/health").json() == {"status": "ok", "model": {"name": "test-cnn", "version": "1"}}
    client.post("/predict", json={"pixels": digits[0][0].tolist()})
    text = client.get("/metrics").text
    assert 'ocr_requests_total{endpoint="/predict",method="POST",status="200"}' in text
    assert "ocr_request_duration_seconds_bucket" in text
    assert f'ocr_predictions_total{{digit="{digits[1][0]}",status="ok"}}' in text
    assert 'ocr_model_info{alias="",name="test-cnn"' in text and 'version="1"' in text
    assert 'ocr_model_reloads_total{result="reloaded"} 1.0' in text
    schema = client.get("/openapi.json").json()
    assert {"/predict", "/predict/batch", "/read", "/feedback", "/model", "/health", "/admin/reload"} <= set(
        schema["paths"])
    assert client.get("/docs").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and "<canvas" in page.text
    assert page.headers["x-content-type-options"] == "nosniff" and "default-src 'self'" in page.headers[
        "content-security-policy"]


def test_health_503_without_model(tmp_path):
    with make_client(tmp_path, tmp_path / "missing", allow_start_without_model=True) as c:
        assert_error(c.get("/health"), 503)
        assert_error(c.post("/predict", json={"pixels": [[0] * 28] * 28}), 503)
        assert_error(c.get("/model"), 503)


def test_startup_without_model_fails_with_one_line(tmp_path):
    app = create_app(Settings(model_path=tmp_path / "missing", feedback_db=tmp_path / "f.db", reload_interval_s=0))
    with pytest.raises(NoModelError, match="no model to serve: OCR_MODEL_PATH="), TestClient(app):
        pass
    assert "\n" not in app.state.startup_error


def test_ocr_serve_without_model_exits_with_one_line(tmp_path):
    env = {"PATH": "", "OCR_MODEL_PATH": str(tmp_path / "missing"), "HOME": str(tmp_path)}
    cmd = [sys.executable, "-c", "from cnn_ocr.cli import app; app()", "serve", "--port", "1"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "no model to serve" in lines[0], done.stderr


# ---------------------------------------------------------------- admin and CORS

def test_admin_reload_auth(client, tmp_path, service_model_dir):
    assert_error(client.post("/admin/reload"), 401)
    assert_error(client.post("/admin/reload", headers={"Authorization": "Bearer wrong"}), 401)
    assert_error(client.post("/admin/reload", headers={"Authorization": TOKEN}), 401)
    r = client.post("/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200 and r.json()["status"] == "unchanged"
    with make_client(tmp_path, service_model_dir, admin_token=None) as c:
        assert "disabled" in assert_error(c.post("/admin/reload", headers={"Authorization": "Bearer x"}), 404)


def test_cors_closed_by_default_and_configurable(client, tmp_path, service_model_dir):
    preflight = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    r = client.options("/predict", headers=preflight)
    assert "access-control-allow-origin" not in r.headers
    with make_client(tmp_path, service_model_dir, cors_origins=["https://ok.example"]) as c:
        r = c.options("/predict", headers={**preflight, "Origin": "https://ok.example"})
        assert r.headers["access-control-allow-origin"] == "https://ok.example"
        r = c.options("/predict", headers=preflight)
        assert "access-control-allow-origin" not in r.headers
