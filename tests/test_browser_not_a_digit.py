"""The page in Chromium with a model that refuses what is not a digit: the words, no digit guess, and the
"Not a digit" correction stored as such. A scribble (every mark refused by an override) and a drawn letter,
refused at the threshold the model's spec holds."""

from __future__ import annotations

import re

import numpy as np
import pytest
from browser_env import expect, page_server, wait_answer

pytestmark = pytest.mark.browser

REFUSE_EVERYTHING = "1.5"  # the test model's detector is the top softmax probability (<= 1)
LETTER = ("scripts", "H")  # a handwriting-like Hershey capital H, unlike any digit


@pytest.fixture(scope="module")
def server(tmp_path_factory, ood_model_dir):
    with page_server(ood_model_dir, tmp_path_factory.mktemp("not-a-digit"), OCR_OOD_THRESHOLD=REFUSE_EVERYTHING) as running:
        yield running


@pytest.fixture(scope="module")
def spec_threshold_server(tmp_path_factory, ood_model_dir):
    """The same model served with the threshold its spec holds (no override)."""
    with page_server(ood_model_dir, tmp_path_factory.mktemp("spec-threshold")) as running:
        yield running


def letter_strokes(font: str, char: str) -> list[list[tuple[float, float]]]:
    """A Hershey glyph's strokes in units of its longer side, centred on (0, 0)."""
    from cnn_ocr.data.hershey import load_font

    strokes = load_font(font)[ord(char) - 32]
    pts = np.array([p for s in strokes for p in s], float)
    centre, size = (pts.min(0) + pts.max(0)) / 2, float((pts.max(0) - pts.min(0)).max())
    return [[((x - centre[0]) / size, (y - centre[1]) / size) for x, y in s] for s in strokes]


def draw_letter(page, strokes, share: float = 0.6) -> None:
    """Draw `strokes` with the mouse in the middle of the pad, spanning `share` of its height."""
    box = page.locator("#pad").bounding_box()
    size, cx, cy = share * box["height"], box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    for stroke in strokes:
        points = [(cx + x * size, cy + y * size) for x, y in stroke]
        page.mouse.move(*points[0])
        page.mouse.down()
        for point in points[1:]:
            page.mouse.move(*point, steps=2)
        page.mouse.up()


def scribble(page) -> None:
    """One connected zigzag stroke across the middle of the pad, the way a user scribbles."""
    box = page.locator("#pad").bounding_box()
    x0, y0, w, h = box["x"], box["y"], box["width"], box["height"]
    page.mouse.move(x0 + w * 0.3, y0 + h * 0.3)
    page.mouse.down()
    for i in range(1, 25):
        page.mouse.move(x0 + w * (0.3 + 0.4 * (i % 2)), y0 + h * (0.3 + 0.4 * i / 24), steps=4)
    page.mouse.up()


def test_a_refused_scribble_says_so_shows_no_digit_and_takes_not_a_digit(page, server):
    from cnn_ocr.feedback import FeedbackStore

    scribble(page)
    wait_answer(page)
    expect()(page.locator("#status")).to_contain_text(re.compile(r"(doesn't|don't) look like (a )?digits?"))
    expect()(page.locator("#status")).to_contain_text("reason")
    expect()(page.locator("#digit")).not_to_have_text(re.compile(r"\d"))
    expect()(page.locator("#top3 li")).to_have_count(0)
    if page.locator("#digits").is_visible():  # read as a row: each mark is shown as not a digit
        page.locator("#digits button").first.click()
    not_digit = page.get_by_role("button", name="This is not a digit")
    expect()(not_digit).to_be_visible()
    not_digit.click()
    expect()(page.locator("#feedback-status")).to_have_text("Thanks: saved as not a digit.")
    store = FeedbackStore(server[1])
    try:
        _, labels, _ = store.feedback_arrays()
    finally:
        store.close()
    assert labels.tolist() == [-1]  # stored as "not a digit"


def test_a_drawn_letter_is_refused_at_the_models_own_threshold(browser, spec_threshold_server):
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    try:
        page.goto(spec_threshold_server[0])
        draw_letter(page, letter_strokes(*LETTER))
        wait_answer(page)
        expect()(page.locator("#status")).to_contain_text(re.compile(r"(doesn't|don't) look like (a )?digits?"))
        expect()(page.locator("#status")).to_contain_text("reason")
        expect()(page.locator("#digit")).not_to_have_text(re.compile(r"\d"))
        expect()(page.locator("#top3 li")).to_have_count(0)
    finally:
        context.close()
