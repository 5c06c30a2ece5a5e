"""The page in Chromium with a model that refuses what is not a digit: the words, no digit guess, and the
"Not a digit" correction stored as such."""

from __future__ import annotations

import re

import pytest
from browser_env import expect, page_server, wait_answer

pytestmark = pytest.mark.browser

REFUSE_EVERYTHING = "1.5"  # the test model's detector is the top softmax probability (<= 1)


@pytest.fixture(scope="module")
def server(tmp_path_factory, ood_model_dir):
    with page_server(ood_model_dir, tmp_path_factory.mktemp("not-a-digit"), OCR_OOD_THRESHOLD=REFUSE_EVERYTHING) as running:
        yield running


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
