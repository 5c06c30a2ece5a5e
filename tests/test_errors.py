"""Domain errors over HTTP: each one the library raises is answered with its one status (from the single
table in `app/errors.py`) and a one-line JSON body; and routes take what they need through dependencies
that a test can replace."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient
from image_files import png

from app.deps import app_metrics, get_service
from app.errors import DOMAIN_STATUS, status_for
from app.main import create_app
from app.metrics import Metrics
from app.middleware import BodyTooLarge
from app.model_store import ModelStore, NoModelError
from app.service import OcrService
from app.settings import Settings
from cnn_ocr.decode import ImageError, ImageTooLarge, InvalidImage, UndecodableImage, UnsupportedImage
from cnn_ocr.feedback import (
    FeedbackError,
    FeedbackStore,
    InvalidFeedback,
    NoFeedback,
    StoreUnavailable,
    UnknownPrediction,
)

pytestmark = pytest.mark.api

# The statuses the API documents for each domain error.
DOCUMENTED = {UndecodableImage: 400, ImageTooLarge: 413, UnsupportedImage: 415, InvalidImage: 422,
              UnknownPrediction: 404, InvalidFeedback: 422, NoFeedback: 404, BodyTooLarge: 413, NoModelError: 503,
              StoreUnavailable: 503}


def instance(error: type[Exception]) -> Exception:
    """One error of each domain type, built as the code that raises it does."""
    return error(1) if error is BodyTooLarge else error() if error is StoreUnavailable else error("x")


def settings_for(tmp_path, model_dir, **overrides) -> Settings:
    return Settings(model_path=model_dir, feedback_db=tmp_path / "feedback.db", reload_interval_s=0,
                    **overrides)


def one_line(response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["detail"] and body["detail"] and "\n" not in body["detail"]
    assert "Traceback" not in body["detail"]
    return body["detail"]


def all_subclasses(cls: type) -> set[type]:
    found = set(cls.__subclasses__())
    return found | {sub for child in found for sub in all_subclasses(child)}


def test_the_table_holds_every_domain_error_with_its_documented_status():
    domain = all_subclasses(ImageError) | all_subclasses(FeedbackError) | {BodyTooLarge, NoModelError}
    assert domain == set(DOCUMENTED)
    assert {error: status_for(instance(error)) for error in domain} == DOCUMENTED
    assert DOMAIN_STATUS == DOCUMENTED
    assert status_for(ValueError("not a domain error")) is None


@pytest.fixture()
def small_client(tmp_path, service_model_dir):
    with TestClient(create_app(settings_for(tmp_path, service_model_dir, max_bytes=2048)),
                    raise_server_exceptions=False) as client:
        yield client


def test_image_errors_over_http(small_client):
    def upload(data: bytes):
        return small_client.post("/predict", files={"file": ("f.png", data, "image/png")})

    cases = [
        (upload(b"plainly not an image"), UndecodableImage, "not a readable image"),
        (upload(png(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8))), ImageTooLarge,
         "larger than the limit"),
        (upload(b"%PDF-1.7\n1 0 obj\n"), UnsupportedImage, "PDF files are not supported"),
        (small_client.post("/predict", json={"pixels": [[0] * 27] * 28}), InvalidImage, "28 rows"),
    ]
    documented = small_client.get("/openapi.json").json()["paths"]["/predict"]["post"]["responses"]
    for response, error, words in cases:
        assert words in one_line(response, DOCUMENTED[error])
        assert str(DOCUMENTED[error]) in documented


def test_an_oversized_streamed_body_closes_the_connection(small_client):
    def chunks():
        for _ in range(40):
            yield b" " * 4096

    response = small_client.post("/predict", content=chunks(), headers={"content-type": "application/json"})
    assert "request body is larger" in one_line(response, DOCUMENTED[BodyTooLarge])
    assert response.headers["connection"] == "close"


def test_feedback_errors_over_http(small_client):
    blank = small_client.post("/predict", json={"pixels": [[0] * 28] * 28}).json()["prediction_id"]
    unknown = small_client.post("/feedback", json={"prediction_id": "0" * 32, "label": 1})
    nothing = small_client.post("/feedback", json={"prediction_id": blank, "label": 1})
    assert "Unknown prediction_id" in one_line(unknown, DOCUMENTED[UnknownPrediction])
    assert "nothing to correct" in one_line(nothing, DOCUMENTED[InvalidFeedback])
    documented = small_client.get("/openapi.json").json()["paths"]["/feedback"]["post"]["responses"]
    assert {"404", "422"} <= set(documented)


def test_no_model_is_503(tmp_path):
    app = create_app(settings_for(tmp_path, tmp_path / "missing", allow_start_without_model=True))
    with TestClient(app, raise_server_exceptions=False) as client:
        assert "No model is loaded" in one_line(client.post("/predict", json={"pixels": [[0] * 28] * 28}),
                                                DOCUMENTED[NoModelError])


@pytest.mark.parametrize("error", list(DOMAIN_STATUS), ids=lambda e: e.__name__)
def test_every_table_entry_is_rendered_as_one_line(tmp_path, error):
    """Raised from inside a route's dependency, each domain error comes out with its status and message."""
    exc = error(4096) if error is BodyTooLarge else error() if error is StoreUnavailable else error(
        "The thing cannot be done; do the other thing.")

    def failing_service():
        raise exc

    app = create_app(settings_for(tmp_path, tmp_path / "unused"))
    app.dependency_overrides[get_service] = failing_service
    response = TestClient(app, raise_server_exceptions=False).get("/model")
    assert one_line(response, DOCUMENTED[error]) == str(exc)


def test_a_route_served_with_overridden_dependencies(tmp_path, service_model_dir, mnist_splits):
    """Without the lifespan, /predict answers 503; with the service and metrics handed in, it reads digits."""
    settings = settings_for(tmp_path, service_model_dir)
    app = create_app(settings)
    client = TestClient(app, raise_server_exceptions=False)  # not entered: the lifespan never runs
    pixels = {"pixels": mnist_splits.test_x[0].tolist()}
    assert "starting" in one_line(client.post("/predict", json=pixels), 503)

    metrics, store = Metrics(), ModelStore(settings)
    assert store.reload().status == "reloaded"
    feedback = FeedbackStore(tmp_path / "own.db")
    app.dependency_overrides[get_service] = lambda: OcrService(settings, store, feedback, metrics)
    app.dependency_overrides[app_metrics] = lambda: metrics
    try:
        body = client.post("/predict", json=pixels).json()
        assert body["digit"] == mnist_splits.test_y[0] and body["model"]["name"] == "test-cnn"
        assert f'ocr_predictions_total{{digit="{body["digit"]}",status="{body["status"]}"}} 1.0' in client.get(
            "/metrics").text
        assert feedback.count_feedback() == 0
        assert client.post("/feedback", json={"prediction_id": body["prediction_id"], "label": 3}).status_code == 200
        assert feedback.count_feedback() == 1
    finally:
        feedback.close()
