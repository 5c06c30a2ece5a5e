"""The served model in words: spec.json's optional `trained_at` / `test_accuracy`, GET /model's summary and
details, and the page's header with the exact version in a tooltip."""

from __future__ import annotations

import json
import shutil

import pytest
from browser_env import expect, page_server
from service_client import make_client

from app.model_store import ModelInfo
from app.service import describe_model
from cnn_ocr.spec import SPEC_FILE, SpecError, read_spec, trained_at_from_ms, write_spec

TRAINED_AT = "2026-11-26T14:03:12+00:00"


def model_copy(src, dest, **model):
    """A copy of the test model folder whose spec's "model" block has `model` applied."""
    shutil.copytree(src, dest)
    write_spec(dest, read_spec(dest).with_model(**model))
    return dest


@pytest.fixture()
def described_dir(tmp_path, service_model_dir):
    """The test model as a registered improved CNN with its training date and test accuracy."""
    return model_copy(service_model_dir, tmp_path / "described", name="OCR-Production-Model", version="7",
                      alias="production", run_id="0123456789abcdef", family="improved_cnn",
                      test_accuracy=0.99637, trained_at=TRAINED_AT)


@pytest.fixture()
def old_spec_dir(tmp_path, service_model_dir):
    """The test model with a spec written before `trained_at` existed: no key at all, no test accuracy, no
    version (an unregistered folder)."""
    folder = model_copy(service_model_dir, tmp_path / "old", version=None, test_accuracy=None)
    data = json.loads((folder / SPEC_FILE).read_text())
    del data["model"]["trained_at"]
    (folder / SPEC_FILE).write_text(json.dumps(data))
    return folder


# ---------------------------------------------------------------- spec.json

def test_trained_at_round_trips_and_older_specs_still_read(described_dir, old_spec_dir):
    assert read_spec(described_dir).model.trained_at == TRAINED_AT
    assert read_spec(described_dir).model.test_accuracy == pytest.approx(0.99637)
    old = read_spec(old_spec_dir).model
    assert old.trained_at is None and old.test_accuracy is None and old.family == "base_cnn"


@pytest.mark.parametrize(("key", "value", "message"), [
    ("trained_at", "last tuesday", "model.trained_at must be null or an ISO 8601 time"),
    ("trained_at", 1764165792, "model.trained_at must be null or an ISO 8601 time"),
    ("test_accuracy", 99.6, "model.test_accuracy must be null or a share from 0 to 1"),
    ("test_accuracy", "high", "model.test_accuracy must be null or a share from 0 to 1"),
])
def test_a_bad_trained_at_or_accuracy_is_a_one_line_spec_error(described_dir, key, value, message):
    data = json.loads((described_dir / SPEC_FILE).read_text())
    data["model"][key] = value
    (described_dir / SPEC_FILE).write_text(json.dumps(data))
    with pytest.raises(SpecError, match=message) as err:
        read_spec(described_dir)
    assert "\n" not in str(err.value) and "ocr export" in str(err.value)


def test_trained_at_from_a_run_start_time():
    assert trained_at_from_ms(1764165792000) == "2025-11-26T14:03:12+00:00"
    assert trained_at_from_ms(0) is None and trained_at_from_ms(None) is None


# ---------------------------------------------------------------- GET /model

def test_model_says_family_date_and_accuracy_in_words(tmp_path, described_dir):
    with make_client(tmp_path, described_dir) as c:
        info = c.get("/model").json()
    assert info["family"] == "improved_cnn" and info["family_name"] == "improved CNN"
    assert info["trained_at"] == TRAINED_AT and info["test_accuracy"] == pytest.approx(0.99637)
    assert info["summary"] == "improved CNN, trained 2026-11-26, 99.6 % on MNIST test"
    assert info["details"].startswith("OCR-Production-Model, version 7 (alias production), run 0123456789abcdef, "
                                      "data v2.0, loaded ")


def test_model_without_date_or_accuracy_names_the_family_only(tmp_path, old_spec_dir):
    with make_client(tmp_path, old_spec_dir) as c:
        info = c.get("/model").json()
    assert info["trained_at"] is None and info["test_accuracy"] is None and info["version"] == "local"
    assert info["summary"] == "basic CNN"
    assert info["details"].startswith("test-cnn, an unregistered model folder, data v2.0, loaded ")
    assert "version local" not in info["summary"] + info["details"]


def test_an_unknown_family_is_shown_by_its_own_name(tmp_path, service_model_dir):
    folder = model_copy(service_model_dir, tmp_path / "odd", family="capsnet", test_accuracy=0.5)
    with make_client(tmp_path, folder) as c:
        assert c.get("/model").json()["summary"] == "capsnet, 50.0 % on MNIST test"


@pytest.mark.parametrize(("trained_at", "accuracy", "summary"), [
    ("2026-11-27T01:30:00+02:00", 0.996, "SVM, trained 2026-11-26, 99.6 % on MNIST test"),  # the UTC day
    ("2026-11-26T23:59:59+00:00", 0.99999, "SVM, trained 2026-11-26, 99.9 % on MNIST test"),  # never rounded up
    (None, 1.0, "SVM, 100.0 % on MNIST test"),
])
def test_summary_says_the_utc_day_and_never_rounds_the_accuracy_up(trained_at, accuracy, summary):
    info = ModelInfo(name="m", version="2", alias=None, run_id=None, family="svm", test_accuracy=accuracy,
                     data_version=None, source="test", fingerprint="0", trained_at=trained_at)
    assert describe_model(info)["summary"] == summary
    assert describe_model(info)["details"].startswith("m, version 2, loaded ")


# ---------------------------------------------------------------- the page's header

@pytest.mark.browser
def test_header_shows_the_model_in_words_and_the_version_in_a_tooltip(browser, described_dir, tmp_path):
    (tmp_path / "srv").mkdir()
    with page_server(described_dir, tmp_path / "srv") as (base, _):
        context = browser.new_context(viewport={"width": 1100, "height": 900})
        page = context.new_page()
        page.goto(base)
        header = page.locator("header #model-info")
        expect()(header).to_have_text("Model: improved CNN, trained 2026-11-26, 99.6 % on MNIST test")
        tooltip = header.get_attribute("title")
        assert tooltip.startswith("OCR-Production-Model, version 7 (alias production), run 0123456789abcdef")
        context.close()
