"""The line recognizer: line inputs, CTC decoding to digits with boxes, a few training steps, ONNX parity."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cnn_ocr.lines import BLANK, LINE_HEIGHT, SIDE_PAD, STRIDE, digits_with_boxes, greedy_decode, line_input


def test_line_input_keeps_the_ink_and_its_place():
    ink = np.zeros((100, 300), np.float32)
    ink[20:80, 50:70] = 255
    ink[20:80, 200:220] = 255
    line = line_input(ink)
    assert line.image.shape[0] == LINE_HEIGHT and line.image.dtype == np.uint8
    assert (line.x0, line.y0) == (50, 20)
    assert line.image[:, :SIDE_PAD].max() == 0 and line.image.max() == 255
    assert line_input(np.zeros((10, 10))) is None


def test_greedy_decode_collapses_runs_and_blanks():
    frames = [BLANK, 3, 3, BLANK, 3, 7, 7, BLANK]
    probs = np.full((len(frames), 11), 0.01)
    for t, c in enumerate(frames):
        probs[t, c] = 0.9
    found = greedy_decode(probs)
    assert [d for d, _, _ in found] == [3, 3, 7]
    assert [c for _, _, c in found] == [1, 4, 5]
    assert all(conf == pytest.approx(0.9) for _, conf, _ in found)


def test_boxes_come_from_the_frames_where_digits_are_emitted():
    ink = np.zeros((60, 200), np.float32)
    ink[10:50, 20:40] = 255   # left digit
    ink[10:50, 140:160] = 255  # right digit
    line = line_input(ink)
    t_total = line.image.shape[1] // STRIDE
    probs = np.full((t_total, 11), 0.01)
    probs[:, BLANK] = 0.9
    for x_src, digit in ((30, 1), (150, 4)):
        t = int((SIDE_PAD + (x_src - line.x0) * line.ratio) / STRIDE)
        probs[t] = 0.01
        probs[t, digit] = 0.95
    digits = digits_with_boxes(probs, line, ink, scale=2.0)
    assert [d.digit for d in digits] == [1, 4]
    assert digits[0].box == (40, 20, 40, 80) and digits[1].box == (280, 20, 40, 80)


@pytest.mark.model
def test_a_few_training_steps_and_an_onnx_export_with_parity(mnist_splits, project_params, tmp_path,
                                                           service_model_dir):
    from cnn_ocr.fit.ctc_loop import synthetic_strings, train_crnn
    from cnn_ocr.line_model import SPEC_FILE, LineRecognizer, export_line_model

    tiny = project_params.crnn.model_copy(update={"channels": [8, 16], "hidden": 16, "batch_size": 4,
                                                  "train_strings": 40, "max_digits": 4})
    model, losses = train_crnn(tiny, mnist_splits.train_x[:300], mnist_splits.train_y[:300], steps=3)
    assert len(losses) == 3 and all(np.isfinite(losses))
    held = synthetic_strings(mnist_splits.test_x[:100], mnist_splits.test_y[:100], 6, 4, np.random.default_rng(0))
    spec = export_line_model(model, tmp_path / "crnn", held.images, tolerance=1e-4)
    assert spec["parity_max_abs_diff"] <= 1e-4
    assert json.loads((tmp_path / "crnn" / SPEC_FILE).read_text())["kind"] == "line_recognizer"
    reader = LineRecognizer(tmp_path / "crnn")
    probs = reader.frame_probabilities(held.images)
    assert [p.shape for p in probs] == [(img.shape[1] // STRIDE, 11) for img in held.images]
    assert all(np.allclose(p.sum(1), 1, atol=1e-4) for p in probs)
    for d in reader.read(held.images[0].astype(np.float32)):  # whatever it reads comes with a box in the line
        x, y, w, h = d.box
        assert 0 <= x and x + w <= held.images[0].shape[1] and w >= 1 and 0 <= d.confidence <= 1
    _a_page_is_read_line_by_line_with_the_recognizer(reader, mnist_splits, project_params, service_model_dir)


def _a_page_is_read_line_by_line_with_the_recognizer(reader, mnist_splits, project_params, model_dir) -> None:
    from app.model_store import load_model_dir
    from cnn_ocr.data.photo_sets import generate
    from cnn_ocr.line_read import read_line
    from cnn_ocr.reader import ReadLimits

    classifier = load_model_dir(model_dir, threads=1, source="test")
    page = generate(project_params.photos, mnist_splits.test_x, mnist_splits.test_y, "pages", 4, megapixels=2.0)
    answer = read_line(page.data, None, classifier.predict, ReadLimits(), reader)
    assert len(answer["lines"]) == 3 and answer["text"] == "\n".join(line["text"] for line in answer["lines"])
    for got, truth in zip(answer["lines"], page.lines, strict=True):
        x, y, w, h = truth.box
        cx, cy = got["box"][0] + got["box"][2] / 2, got["box"][1] + got["box"][3] / 2
        assert x <= cx <= x + w and y <= cy <= y + h
