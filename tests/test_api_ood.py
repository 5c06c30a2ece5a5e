"""Not-a-digit refusals through the HTTP API: a small CNN whose graph outputs the score, served in process."""

from __future__ import annotations

import numpy as np
import pytest
from image_files import png
from service_client import make_client

pytestmark = pytest.mark.api

ABOVE_ANY_MSP = 1.5  # the detector is the top softmax probability (<= 1): this threshold refuses every mark


@pytest.fixture(scope="module")
def digits(mnist_splits):
    return mnist_splits.test_x[:20], mnist_splits.test_y[:20]


def _scribble() -> np.ndarray:
    """A 28x28 hatched grid, drawn white on black like the MNIST digits."""
    mark = np.zeros((28, 28), np.uint8)
    mark[4:24:4, 4:24] = 255
    mark[4:24, 4:24:4] = 255
    return mark


def _row(marks: list[np.ndarray]) -> bytes:
    row = np.zeros((40, 40 * len(marks)), np.uint8)
    for k, mark in enumerate(marks):
        row[6:34, 6 + 40 * k:34 + 40 * k] = mark
    return png(255 - row)


def _refusals(client, reason: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(f'ocr_refusals_total{{reason="{reason}"}}'):
            return float(line.split()[-1])
    return 0.0


def test_scores_come_with_every_answer_and_model_shows_the_detector(tmp_path, ood_model_dir, digits):
    from cnn_ocr.spec import read_spec

    x, y = digits
    stored = read_spec(ood_model_dir).ood
    with make_client(tmp_path, ood_model_dir) as c:
        body = c.post("/predict", json={"pixels": x[0].tolist()}).json()
        assert isinstance(body["ood_score"], float) and body["ood_score"] >= stored.threshold
        assert body["digit"] == y[0] and body["status"] in ("ok", "uncertain") and body["reason"] is None
        batch = c.post("/predict/batch", files=[("files", (f"{i}.png", png(x[i]), "image/png")) for i in range(3)])
        assert all(isinstance(r["ood_score"], float) for r in batch.json()["results"])
        model = c.get("/model").json()
        assert model["ood"] == {"detector": "msp", "threshold": pytest.approx(stored.threshold),
                                "threshold_source": "spec"}
        blank = c.post("/predict", json={"pixels": np.zeros((28, 28)).tolist()}).json()
        assert blank["status"] == "no_digit" and blank["reason"] == "blank" and blank["ood_score"] is None


def test_model_without_detector_answers_null_scores(client, digits):
    x, _ = digits
    assert client.post("/predict", json={"pixels": x[0].tolist()}).json()["ood_score"] is None
    assert client.get("/model").json()["ood"] is None


def test_threshold_override_refuses_a_real_digit_and_counts_it(tmp_path, ood_model_dir, digits):
    x, _ = digits
    with make_client(tmp_path, ood_model_dir, ood_threshold=ABOVE_ANY_MSP) as c:
        assert c.get("/model").json()["ood"]["threshold"] == ABOVE_ANY_MSP  # the environment wins over the spec
        assert c.get("/model").json()["ood"]["threshold_source"] == "OCR_OOD_THRESHOLD"
        before = _refusals(c, "not_a_digit")
        body = c.post("/predict", json={"pixels": x[0].tolist()}).json()
        assert body["status"] == "no_digit" and body["reason"] == "not_a_digit" and body["digit"] is None
        assert body["confidence"] == 0.0 and abs(sum(body["probabilities"]) - 1) < 1e-3  # probabilities still given
        assert body["ood_score"] < ABOVE_ANY_MSP
        assert _refusals(c, "not_a_digit") == before + 1
        c.post("/predict", json={"pixels": np.zeros((28, 28)).tolist()})
        assert _refusals(c, "blank") >= 1 and _refusals(c, "not_a_digit") == before + 1


def test_environment_variable_sets_the_override(monkeypatch):
    from app.settings import Settings

    monkeypatch.setenv("OCR_OOD_THRESHOLD", "0.25")
    assert Settings().ood_threshold == 0.25
    monkeypatch.setenv("OCR_OOD_THRESHOLD", "nan")
    with pytest.raises(ValueError):
        Settings()


def test_read_writes_a_question_mark_for_the_mark_that_is_not_a_digit(tmp_path, ood_model_dir, digits):
    x, y = digits
    image = _row([x[0], _scribble(), x[1]])
    with make_client(tmp_path, ood_model_dir) as c:
        scores = [d["ood_score"] for d in c.post("/read", files={"file": ("r.png", image, "image/png")}).json()["digits"]]
    assert len(scores) == 3 and scores[1] < min(scores[0], scores[2])  # the grid is the least digit-like mark
    between = (scores[1] + min(scores[0], scores[2])) / 2
    with make_client(tmp_path, ood_model_dir, ood_threshold=between) as c:
        body = c.post("/read", files={"file": ("r.png", image, "image/png")}).json()
        assert body["text"] == f"{y[0]}?{y[1]}" and body["status"] == "uncertain"
        marks = body["digits"]
        assert [d["status"] for d in marks][1] == "no_digit" and marks[1]["reason"] == "not_a_digit"
        assert marks[1]["digit"] is None and marks[0]["digit"] == y[0]
        assert _refusals(c, "not_a_digit") == 1
    with make_client(tmp_path, ood_model_dir, ood_threshold=ABOVE_ANY_MSP) as c:
        body = c.post("/read", files={"file": ("r.png", image, "image/png")}).json()
        assert body["text"] == "???" and body["status"] == "no_digit"


def test_batch_rows_carry_the_score_and_the_refusal(tmp_path, ood_model_dir, digits):
    from cnn_ocr.batch.rows import ModelRef, load_session_model, read_rows
    from cnn_ocr.reader import ReadLimits

    x, y = digits
    files = []
    for i, image in enumerate([png(255 - x[0]), _row([x[0], x[1]])]):
        files.append(tmp_path / f"{i}.png")
        files[-1].write_bytes(image)
    ref = ModelRef(str(ood_model_dir), "test-cnn-ood", "1")
    model = load_session_model(ref)
    rows = read_rows([str(f) for f in files], model, ref, ReadLimits()).to_pylist()
    assert [r["text"] for r in rows] == [str(y[0]), f"{y[0]}{y[1]}"]
    assert all(isinstance(r["ood_score"], float) for r in rows)
    refused = read_rows([str(f) for f in files], model, ref, ReadLimits(ood_threshold=ABOVE_ANY_MSP)).to_pylist()
    assert [r["text"] for r in refused] == ["?", "??"] and refused[0]["status"] == "no_digit"
    assert refused[1]["digits"][0]["digit"] is None and refused[1]["reason"] == "not_a_digit"
