"""The line recognizer registered and served: `ocr crnn train` registers it as its own model (alias
`production` when its ONNX parity holds) in a throwaway sqlite store, and `/read` on a real uvicorn server
with `OCR_RECOGNIZER_PATH` reads each line the way `ocr read --recognizer` does, saying who read it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from browser_env import page_server

from cnn_ocr.data.photo_sets import generate

pytestmark = pytest.mark.model
ROOT = Path(__file__).resolve().parents[1]
NAME = "OCR-Line-Recognizer"
# A small recognizer that learns to read in well under a minute on one thread (never the full size).
BRIEF = ["crnn.channels=[16, 32]", "crnn.hidden=32", "crnn.batch_size=16", "crnn.train_strings=2000",
         "crnn.max_digits=4", "crnn.steps=1200"]


def ocr(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from cnn_ocr.cli import app; app()", *args], env=env,
                          capture_output=True, text=True, timeout=900, cwd=ROOT)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_data_dir) -> dict:
    """`ocr crnn train` on the tiny data into a fresh sqlite store: its env, output folder and run id."""
    root = tmp_path_factory.mktemp("recognizer")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(root),
           "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}", "OCR_MLFLOW_ARTIFACT_ROOT": str(root / "art")}
    sets = [f"data.processed_dir={tiny_data_dir}", f"crnn.out_dir={root / 'crnn'}", *BRIEF]
    done = ocr("crnn", "train", *[a for s in sets for a in ("--set", s)], env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"registered {NAME} v1 from run " in done.stdout and "now production" in done.stdout, done.stdout
    run_id = done.stdout.split(" from run ")[1].split(":")[0]
    return {"env": env, "folder": root / "crnn", "run_id": run_id, "root": root}


@pytest.fixture()
def store(trained, monkeypatch):
    """This process pointed at the trained recognizer's store."""
    for key in ("MLFLOW_TRACKING_URI", "OCR_MLFLOW_ARTIFACT_ROOT"):
        monkeypatch.setenv(key, trained["env"][key])
    return trained


def test_training_registers_the_recognizer_with_its_onnx_folder_as_production(store, tmp_path):
    from app.model_store import load_recognizer
    from app.settings import Settings
    from cnn_ocr.line_model import SPEC_FILE
    from cnn_ocr.line_registry import fetch_recognizer
    from cnn_ocr.registry import REGISTERED_MODEL, list_versions, read_history

    versions = list_versions(NAME)
    assert [(v.version, v.run_id, v.aliases) for v in versions] == [(1, store["run_id"], ("production",))]
    spec = json.loads((store["folder"] / SPEC_FILE).read_text())
    tags = versions[0].tags
    assert tags["kind"] == "line_recognizer" and float(tags["parity_max_abs_diff"]) <= 1e-4
    assert float(tags["test_string_accuracy"]) == pytest.approx(spec["test_string_accuracy"])
    assert list_versions(REGISTERED_MODEL) == []  # the digit models' registered model is another one
    assert [(e["alias"], e["to"]) for e in read_history(NAME)] == [("production", 1)]
    got = fetch_recognizer(tmp_path / "cache", NAME, "production")  # what models:/NAME@production holds
    for file in ("model.onnx", SPEC_FILE):
        assert (got / file).read_bytes() == (store["folder"] / file).read_bytes()
    served = load_recognizer(Settings(recognizer_path=f"models:/{NAME}@production", model_cache_dir=tmp_path / "c2"))
    assert served.reader is not None and served.detail is None and served.spec == spec
    assert (tmp_path / "c2" / NAME / "1" / "model.onnx").is_file()


def test_register_moves_production_only_when_parity_holds(store):
    from cnn_ocr.registry import alias_version, list_versions

    env, run_id = store["env"], store["run_id"]
    done = ocr("crnn", "register", run_id, env=env)
    assert done.returncode == 0 and "v2" in done.stdout and "now production" in done.stdout, done.stderr
    assert alias_version(NAME, "production") == 2
    done = ocr("crnn", "register", run_id, "--set", "crnn.parity_tolerance=1e-12", env=env)
    assert done.returncode == 0 and "v3" in done.stdout and "not promoted" in done.stdout, done.stderr
    assert alias_version(NAME, "production") == 2 and len(list_versions(NAME)) == 3
    done = ocr("crnn", "register", "0123456789abcdef", env=env)
    assert done.returncode == 1 and done.stderr.startswith("error: run 0123456789abcdef holds no onnx/")
    assert done.stderr.strip().count("\n") == 0 and len(list_versions(NAME)) == 3


def _touching(project_params, mnist_splits, n: int) -> list[bytes]:
    x, y = mnist_splits.test_x, mnist_splits.test_y
    return [generate(project_params.photos, x, y, "touching", i, megapixels=2.0).data for i in range(n)]


def _expected(data: bytes, classifier, reader) -> list[tuple[str, str]]:
    """(text, who read it) per line, as `ocr read --recognizer` reads the image, in this process."""
    from cnn_ocr.line_read import ink_of, read_lines
    from cnn_ocr.page import find_lines
    from cnn_ocr.reader import ReadLimits

    limits = ReadLimits()
    lines = find_lines(ink_of(data, None, limits), limits.max_lines, limits.max_digits)
    return [(r.text, r.source) for r in read_lines(lines, classifier.predict, limits, reader) if r.digits]


def test_read_keeps_the_recognizer_where_digits_touch_and_says_who_read_each_line(
        trained, service_model_dir, project_params, mnist_splits, tmp_path):
    from app.model_store import load_model_dir
    from cnn_ocr.line_model import LineRecognizer

    classifier = load_model_dir(service_model_dir, threads=1, source="test")
    reader = LineRecognizer(trained["folder"])
    sources = []
    with page_server(service_model_dir, tmp_path, OCR_RECOGNIZER_PATH=str(trained["folder"])) as (base, _):
        info = httpx.get(f"{base}/model", timeout=30).json()["recognizer"]
        spec = json.loads((trained["folder"] / "line_spec.json").read_text())
        assert info["loaded"] is True and info["source"] == str(trained["folder"]) and info["detail"] is None
        assert info["test_string_accuracy"] == pytest.approx(spec["test_string_accuracy"])
        for data in _touching(project_params, mnist_splits, 6):
            r = httpx.post(f"{base}/read", files={"file": ("p.jpg", data, "image/jpeg")}, timeout=120)
            assert r.status_code == 200, r.text
            body = r.json()
            assert [(ln["text"], ln["source"]) for ln in body["lines"]] == _expected(data, classifier, reader)
            assert body["text"] == "\n".join(ln["text"] for ln in body["lines"])
            for d in body["digits"]:
                assert len(d["box"]) == 4 and d["box"][2] > 0 and d["box"][3] > 0 and 0 <= d["confidence"] <= 1
                assert d["input_image"].startswith("data:image/png;base64,") and d["prediction_id"]
            sources += [ln["source"] for ln in body["lines"]]
            if body["lines"][0]["source"] == "recognizer":  # a digit the recognizer read takes a correction
                pid = body["lines"][0]["digits"][0]["prediction_id"]
                fb = httpx.post(f"{base}/feedback", json={"prediction_id": pid, "label": 3}, timeout=30)
                assert fb.status_code == 200, fb.text
    assert "recognizer" in sources  # touching digits: the recognizer's reading was kept at least once


def test_the_recognizer_refuses_marks_that_are_not_digits(trained, ood_model_dir):
    """With the detector's threshold above any score every mark is refused, whichever reader read it."""
    from app.model_store import load_model_dir
    from cnn_ocr.line_model import LineRecognizer
    from cnn_ocr.line_read import ink_of, recognized
    from cnn_ocr.reader import ReadLimits

    classifier = load_model_dir(ood_model_dir, threads=1, source="test")
    row = np.zeros((60, 200), np.uint8)
    for k in range(4):
        row[10:50, 15 + 45 * k:45 + 45 * k:6] = 255  # hatched blocks, not digits
        row[10:50:6, 15 + 45 * k:45 + 45 * k] = 255
    limits = ReadLimits(ood_threshold=1.5)
    reading = recognized(ink_of(None, 255 - row, limits), LineRecognizer(trained["folder"]), classifier.predict,
                         limits)
    assert reading.source == "recognizer" and len(reading.segments) == len(reading.digits)
    assert reading.digits and all(d["digit"] is None and d["status"] == "no_digit" and d["reason"] == "not_a_digit"
                                  and d["ood_score"] is not None for d in reading.digits)
    assert set(reading.text) == {"?"}


def test_a_broken_recognizer_is_left_out_with_one_log_line(trained, service_model_dir, tmp_path):
    from app.model_store import load_recognizer
    from app.settings import Settings

    assert load_recognizer(Settings(recognizer_path=None)) is None
    missing = load_recognizer(Settings(recognizer_path=str(tmp_path / "nowhere")))
    assert missing.reader is None and "has no model.onnx + line_spec.json" in missing.detail
    bad = load_recognizer(Settings(recognizer_path="models:/only-a-name"))
    assert bad.reader is None and "models:/NAME@ALIAS" in bad.detail
    broken = tmp_path / "broken"
    shutil.copytree(trained["folder"], broken)
    (broken / "model.onnx").write_bytes(b"not an onnx graph")
    with page_server(service_model_dir, tmp_path, OCR_RECOGNIZER_PATH=str(broken)) as (base, _):
        info = httpx.get(f"{base}/model", timeout=30).json()["recognizer"]
        assert info["loaded"] is False and info["source"] == str(broken) and info["detail"]
        pixels = np.zeros((28, 28), int)
        pixels[4:24, 12:16] = 255
        r = httpx.post(f"{base}/read", json={"pixels": pixels.tolist()}, timeout=60)
        assert r.status_code == 200 and [ln["source"] for ln in r.json()["lines"]] == ["segmentation"]
    lines = [ln for ln in (tmp_path / "server.log").read_text().splitlines() if "line recognizer" in ln]
    assert len(lines) == 1 and str(broken) in lines[0] and "not loaded" in lines[0], lines
