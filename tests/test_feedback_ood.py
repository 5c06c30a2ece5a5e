"""`"not_a_digit"` corrections: accepted by the store (SQLite and PostgreSQL) and the API, exported as negatives."""

from __future__ import annotations

import json

import numpy as np
import pytest
from service_client import assert_error, make_client

from cnn_ocr.config import load_params
from cnn_ocr.feedback import (
    NOT_A_DIGIT,
    FeedbackStore,
    InvalidFeedback,
    PredictionRecord,
    export_feedback,
    load_feedback_negatives,
)


def _image(value: int) -> np.ndarray:
    img = np.zeros((28, 28), np.uint8)
    img[4:24, 4 + value:8 + value] = 100 + value
    return img


def _round_trip(target, processed) -> None:
    store = FeedbackStore(target)
    store.record_predictions([PredictionRecord(str(i), "digit", _image(i), 7, 0.9, "ok", "m", "1") for i in range(4)])
    assert store.add_feedback("0", NOT_A_DIGIT).public_label == NOT_A_DIGIT
    store.add_feedback("1", 5)
    store.add_feedback("2", NOT_A_DIGIT)
    store.add_feedback("3", 3)
    store.add_feedback("3", NOT_A_DIGIT)  # a second correction replaces the first, also with "not a digit"
    for bad in ("not a digit", "7", 3.0, True, -1):
        with pytest.raises(InvalidFeedback, match="not_a_digit"):
            store.add_feedback("1", bad)
    store.close()
    name, folder, count = export_feedback(target, processed)
    assert count == 4
    from cnn_ocr.data import load_version

    splits = load_version(name, load_params().data.model_copy(update={"processed_dir": processed}))  # verified
    assert splits.train_y.tolist() == [5] and np.array_equal(splits.train_x[0], _image(1))
    negatives = load_feedback_negatives(folder)
    assert negatives.dtype == np.uint8 and [n.max() for n in negatives] == [100, 102, 103]
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["n_negatives"] == 3 and meta["n_feedback"] == 4 and "negatives_x.npy" in meta["files"]


def test_not_a_digit_round_trips_into_the_exported_version_sqlite(tmp_path):
    _round_trip(tmp_path / "fb.db", tmp_path / "processed")


def test_not_a_digit_round_trips_into_the_exported_version_postgres(postgres, tmp_path):
    _round_trip(postgres.new_database("fb_not_a_digit"), tmp_path / "processed")


def test_older_exports_have_no_negatives(tmp_path):
    assert load_feedback_negatives(tmp_path).shape == (0, 28, 28)


def test_api_takes_not_a_digit_for_a_refused_mark(tmp_path, ood_model_dir, mnist_splits):
    x = mnist_splits.test_x[0]
    with make_client(tmp_path, ood_model_dir, ood_threshold=1.5) as c:  # every mark refused
        answer = c.post("/predict", json={"pixels": x.tolist()}).json()
        assert answer["reason"] == "not_a_digit"
        fb = c.post("/feedback", json={"prediction_id": answer["prediction_id"], "label": "not_a_digit"})
        assert fb.status_code == 200, fb.text
        assert fb.json()["label"] == "not_a_digit" and fb.json()["predicted"] is None
        assert 'ocr_feedback_total{agrees="true"} 1.0' in c.get("/metrics").text
        assert c.post("/feedback", json={"prediction_id": answer["prediction_id"], "label": 4}).json()["label"] == 4
        for bad in ("letter", "4", -1, 10, None):
            assert_error(c.post("/feedback", json={"prediction_id": answer["prediction_id"], "label": bad}), 422)
        c.post("/feedback", json={"prediction_id": answer["prediction_id"], "label": "not_a_digit"})
    _, folder, _ = export_feedback(tmp_path / "feedback.db", tmp_path / "processed")
    assert np.array_equal(load_feedback_negatives(folder), x[None])


def test_outlier_exposure_trains_on_the_feedback_negatives(tmp_path, tiny_data_dir, tiny_overrides, tracking_uri):
    import shutil

    from mlflow import MlflowClient

    from cnn_ocr.ood.run import training_negatives
    from cnn_ocr.train import train_model

    processed = tmp_path / "processed"  # the tiny slice and the feedback version, in this test's own folder
    shutil.copytree(tiny_data_dir / "v2.0", processed / "v2.0")
    store = FeedbackStore(tmp_path / "fb.db")
    store.record_predictions([PredictionRecord(str(i), "digit", _image(i), 7, 0.9, "ok", "m", "1") for i in range(3)])
    store.add_feedback("0", NOT_A_DIGIT)
    store.add_feedback("1", 5)
    store.add_feedback("2", NOT_A_DIGIT)
    store.close()
    name, _, _ = export_feedback(tmp_path / "fb.db", processed)
    base = [o for o in tiny_overrides if not o.startswith("data.processed_dir=")] + [f"data.processed_dir={processed}"]
    params = load_params(overrides=[*base, f"data.extra_train_versions=[{name}]"])

    with_feedback, from_feedback = training_negatives(params, params.models.base_cnn)
    generated, none = training_negatives(load_params(overrides=base), params.models.base_cnn)
    assert (from_feedback, none) == (2, 0)
    assert np.array_equal(with_feedback, np.concatenate([generated, _image(0)[None], _image(2)[None]]))

    run = MlflowClient(tracking_uri).get_run(train_model("base_cnn", params).run_id)
    assert run.data.params["outlier_exposure.feedback_negatives"] == "2"
    assert run.data.params["outlier_exposure.negatives_used"] == str(len(with_feedback))
    assert run.data.params["data_version_used"] == f"v2.0+{name}"
