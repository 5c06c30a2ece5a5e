"""`ocr read` on generated photos: the same answer as `/read`, digits with boxes where the truth is."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from cnn_ocr.data.photo_sets import generate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ocr(*args: str, tmp_path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": ROOT, "HOME": str(tmp_path), "OCR_FEEDBACK_DB": str(tmp_path / "f.db")}
    return subprocess.run([sys.executable, "-c", "from cnn_ocr.cli import app; app()", "read", *args], env=env,
                          capture_output=True, text=True, timeout=300, cwd=ROOT)


def overlap(a: list[int], b: list[int]) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0, x1 - x0) * max(0, y1 - y0)
    return inter / float(a[2] * a[3] + b[2] * b[3] - inter)


@pytest.mark.model
def test_a_generated_photo_is_read_with_boxes_on_the_digits(mnist_splits, project_params, service_model_dir,
                                                          tmp_path):
    x, y = mnist_splits.test_x, mnist_splits.test_y
    digit = generate(project_params.photos, x, y, "digits", 1, megapixels=3.0)
    number = generate(project_params.photos, x, y, "numbers", 1, megapixels=3.0)
    files = []
    for name, photo in (("digit.jpg", digit), ("number.jpg", number)):
        (tmp_path / name).write_bytes(photo.data)
        files.append(str(tmp_path / name))
    done = ocr(*files, "--model-path", str(service_model_dir), tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    assert [a["file"] for a in answers] == files
    for answer, photo in zip(answers, (digit, number), strict=True):
        truth = photo.lines[0]
        assert answer["error"] is None and answer["status"] in ("ok", "uncertain")
        assert answer["text"] == truth.text, (answer, photo.settings)
        for got, box in zip(answer["digits"], truth.boxes, strict=True):
            assert overlap(got["box"], list(box)) > 0.5 and 0 < got["confidence"] <= 1


@pytest.mark.model
def test_a_page_is_printed_line_by_line(mnist_splits, project_params, service_model_dir, tmp_path):
    photo = generate(project_params.photos, mnist_splits.test_x, mnist_splits.test_y, "pages", 4, megapixels=2.0)
    (tmp_path / "page.jpg").write_bytes(photo.data)
    done = ocr(str(tmp_path / "page.jpg"), "--model-path", str(service_model_dir), tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert [line["text"] for line in answer["lines"]] == [line.text for line in photo.lines]
    assert answer["text"] == photo.text
    for got, truth in zip(answer["lines"], photo.lines, strict=True):
        assert overlap(got["box"], list(truth.box)) > 0.5


def test_missing_file_and_not_an_image_are_one_line_errors(tmp_path, service_model_dir):
    done = ocr(str(tmp_path / "nope.jpg"), tmp_path=tmp_path)
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0 and "no such file" in done.stderr
    (tmp_path / "notes.txt").write_text("not an image")
    done = ocr(str(tmp_path / "notes.txt"), "--model-path", str(service_model_dir), tmp_path=tmp_path)
    assert done.returncode == 1
    answer = json.loads(done.stdout)
    assert answer["status"] == "error" and "undecodable" in answer["error"]


@pytest.mark.model
def test_read_line_without_a_recognizer_is_the_read_answer(mnist_splits, project_params, service_model_dir):
    from app.model_store import load_model_dir
    from cnn_ocr.line_read import read_line
    from cnn_ocr.reader import ReadLimits, read_many

    model = load_model_dir(service_model_dir, threads=1, source="test")
    x, y = mnist_splits.test_x, mnist_splits.test_y
    for kind, i in (("numbers", 2), ("touching", 2), ("heldout", 0), ("pages", 4)):
        data = generate(project_params.photos, x, y, kind, i, megapixels=2.0).data
        ours = read_line(data, None, model.predict, ReadLimits())
        theirs = read_many([data], model.predict, ReadLimits())[0]
        assert ours["source"] == "segmentation"
        assert {k: ours[k] for k in theirs} == theirs
        assert len(theirs["lines"]) == (3 if kind == "pages" else 1)


def test_the_recognizer_is_kept_for_touching_digits_else_the_surer_reading():
    from cnn_ocr.line_read import Reading, choose

    def reading(confs: list[float], source: str, width: int = 1) -> Reading:
        return Reading([{"digit": 1, "confidence": c, "status": "ok", "box": [0, 0, width, 2]} for c in confs],
                       source)

    rec_three = reading([0.6, 0.7, 0.8], "recognizer")
    assert choose(reading([0.99, 0.99], "segmentation", width=3), rec_three).source == "recognizer"  # a wide piece
    assert choose(reading([0.99, 0.99], "segmentation"), rec_three).source == "segmentation"
    assert choose(reading([0.5, 0.5], "segmentation"), rec_three).source == "recognizer"  # the surer one
    assert choose(reading([0.9, 0.5], "segmentation"), reading([0.8, 0.7], "recognizer")).source == "recognizer"
    assert choose(reading([0.9, 0.8], "segmentation"), reading([0.8, 0.7], "recognizer")).source == "segmentation"
    assert choose(reading([0.9], "segmentation"), reading([], "recognizer")).source == "segmentation"
