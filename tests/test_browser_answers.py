"""How answers look and change on the page: after the pen rests, sure vs not sure, errors replacing answers,
corrections marked, one mode that reads what is there, and changing mode re-reading the same input."""

from __future__ import annotations

import re

import httpx
import numpy as np
import pytest
from browser_env import expect, page_server, wait_answer
from image_files import png

from benchmarks.page import draw_row
from benchmarks.pen_strokes import pen_paths

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server(tmp_path_factory, service_model_dir):
    with page_server(service_model_dir, tmp_path_factory.mktemp("answers")) as running:
        yield running


def upload(page, image: np.ndarray | bytes, name: str = "digit.png") -> None:
    data = image if isinstance(image, bytes) else png(255 - image)
    page.locator("#file").set_input_files(files=[{"name": name, "mimeType": "image/png", "buffer": data}])


def row_of(digits: np.ndarray) -> np.ndarray:
    row = np.zeros((40, 40 * len(digits) + 10), np.uint8)
    for k, d in enumerate(digits):
        row[6:34, 8 + 40 * k:36 + 40 * k] = d
    return row


def vertical_bar(page, steps: int = 20, release: bool = True) -> None:
    box = page.locator("#pad").bounding_box()
    x = box["x"] + box["width"] / 2
    page.mouse.move(x, box["y"] + box["height"] * 0.15)
    page.mouse.down()
    for i in range(1, steps + 1):
        page.mouse.move(x + i * 0.3, box["y"] + box["height"] * (0.15 + 0.7 * i / steps))
    if release:
        page.mouse.up()


def test_answer_waits_for_the_pen_to_rest(page):
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if r.method == "POST" else None)
    vertical_bar(page, release=False)
    expect()(page.locator("#result")).to_have_attribute("data-state", "drawing")
    expect()(page.locator("#status")).to_contain_text("Still drawing")
    page.mouse.up()
    page.wait_for_timeout(150)
    assert asked == [], "the page asked before the pen rested"
    wait_answer(page)
    assert len(asked) == 1 and asked[0].endswith("/read?mode=auto")
    expect()(page.locator("#digit")).to_have_text("1")


def _uncertain_and_sure(server, splits) -> tuple[np.ndarray, np.ndarray]:
    """A real test digit the small model is unsure about, and one it is sure of (asked through the API)."""
    unsure = sure = None
    with httpx.Client(base_url=server[0], timeout=10) as client:
        for digit in splits.test_x[:600]:
            status = client.post("/predict", json={"pixels": digit.tolist()}).json()["status"]
            if status == "uncertain" and unsure is None:
                unsure = digit
            if status == "ok" and sure is None:
                sure = digit
            if unsure is not None and sure is not None:
                return unsure, sure
    pytest.fail("the test model was sure of all 600 test digits: no uncertain example to show")


def test_unsure_answers_look_different_and_corrections_are_marked(page, server, mnist_splits):
    unsure, sure = _uncertain_and_sure(server, mnist_splits)
    upload(page, sure)
    wait_answer(page)
    expect()(page.locator("#status")).to_contain_text("Sure:")
    sure_colour = page.locator("#digit").evaluate("e => getComputedStyle(e).color")
    upload(page, unsure)
    expect()(page.locator("#status")).to_have_text(re.compile(r"^Maybe \d — or \d\? \(\d+ %\)$"))
    expect()(page.locator("#digit")).to_have_text(re.compile(r"^\d\?$"))
    assert page.locator("#digit").evaluate("e => getComputedStyle(e).color") != sure_colour
    page.get_by_role("button", name="The right digit is 3").click()
    expect()(page.locator("#feedback-status")).to_have_text("Thanks: saved as 3.")
    pressed = page.locator(".digit-buttons button[aria-pressed=true]")
    expect()(pressed).to_have_count(1)
    expect()(pressed).to_have_text("3")


def _row_with_an_unsure_digit(server, splits) -> tuple[np.ndarray, int]:
    """A row of three real test digits in which the small model is unsure of one (asked through the API)."""
    with httpx.Client(base_url=server[0], timeout=10) as client:
        for start in range(0, 900, 3):
            row = row_of(splits.test_x[start:start + 3])
            got = client.post("/read", files={"file": ("row.png", png(255 - row), "image/png")}).json()
            unsure = [i for i, d in enumerate(got["digits"]) if d["status"] == "uncertain"]
            if len(got["digits"]) == 3 and unsure:
                return row, unsure[0]
    pytest.fail("the test model was sure of every digit in 300 rows: no unsure row digit to show")


def test_an_unsure_digit_of_a_row_says_maybe(page, server, mnist_splits):
    row, i = _row_with_an_unsure_digit(server, mnist_splits)
    upload(page, row, "row.png")
    expect()(page.locator("#digits button")).to_have_count(3)
    button = page.locator("#digits button").nth(i)
    expect()(button).to_contain_text(re.compile(r"Maybe \d\? · \d+%"))
    expect()(button).to_have_class("unsure")
    sure = [k for k in range(3) if "Maybe" not in page.locator("#digits button").nth(k).inner_text()]
    for k in sure:
        expect()(page.locator("#digits button").nth(k)).to_have_class("sure")


def test_an_error_replaces_the_previous_answer(page, mnist_splits):
    upload(page, mnist_splits.test_x[0])
    wait_answer(page)
    expect()(page.locator("#digit")).to_have_text(str(mnist_splits.test_y[0]))
    upload(page, b"this is not an image", "notes.png")
    expect()(page.locator("#error")).to_be_visible()
    for old in ("#digit", "#top3 li", "#seen", "#feedback", "#digits"):
        expect()(page.locator(old).first).to_be_hidden()
    vertical_bar(page)
    wait_answer(page)
    expect()(page.locator("#error")).to_be_hidden()
    expect()(page.locator("#digit")).to_have_text("1")


def overlay_ink(page) -> int:
    """How many pixels of the overlay (the row's boxes and digits drawn over the box) are not transparent."""
    return page.locator("#overlay").evaluate("""c => { const d = c.getContext("2d")
        .getImageData(0, 0, c.width, c.height).data; let n = 0;
        for (let i = 3; i < d.length; i += 4) n += d[i] > 0; return n; }""")


def test_an_error_or_a_new_drawing_clears_a_row_and_its_boxes(page, mnist_splits):
    upload(page, row_of(mnist_splits.test_x[60:63]), "row.png")
    expect()(page.locator("#digits button")).to_have_count(3)
    assert overlay_ink(page) > 0
    upload(page, b"this is not an image", "notes.png")
    expect()(page.locator("#error")).to_be_visible()
    expect()(page.locator("#digits")).to_be_hidden()
    assert overlay_ink(page) == 0
    draw_row(page, [pen_paths(d) for d in mnist_splits.test_x[60:63]])  # a drawn row: no upload to replace
    wait_answer(page)
    expect()(page.locator("#error")).to_be_hidden()
    assert page.locator("#digits button").count() >= 2 and overlay_ink(page) > 0
    vertical_bar(page, release=False)
    expect()(page.locator("#result")).to_have_attribute("data-state", "drawing")
    assert overlay_ink(page) == 0
    page.mouse.up()


def test_auto_mode_reads_a_row_and_every_digit_can_be_corrected(page, server, mnist_splits):
    from cnn_ocr.feedback import FeedbackStore

    x, y = mnist_splits.test_x[30:34], mnist_splits.test_y[30:34]
    upload(page, row_of(x), "row.png")
    wait_answer(page)
    expect()(page.locator("#digits button")).to_have_count(4)
    expect()(page.locator("#feedback")).to_be_hidden()
    third = page.locator("#digits button").nth(2)
    third.click()
    expect()(third).to_have_attribute("aria-pressed", "true")
    expect()(page.locator("#feedback-label")).to_contain_text("Digit 3 of 4")
    wrong = (int(y[2]) + 1) % 10
    page.get_by_role("button", name=f"The right digit is {wrong}").click()
    expect()(page.locator("#feedback-status")).to_have_text(f"Thanks: saved as {wrong}.")
    expect()(third).to_contain_text(f"{wrong} ✓")
    store = FeedbackStore(server[1])
    images, labels, _ = store.feedback_arrays()
    store.close()
    assert labels.tolist()[-1] == wrong and images[-1].shape == (28, 28)


def test_a_digit_of_a_row_shows_its_saved_correction_when_chosen_again(page, mnist_splits):
    x, y = mnist_splits.test_x[50:53], mnist_splits.test_y[50:53]
    upload(page, row_of(x), "row.png")
    expect()(page.locator("#digits button")).to_have_count(3)
    pressed = page.locator(".digit-buttons button[aria-pressed=true]")
    second = page.locator("#digits button").nth(1)
    second.click()
    expect()(pressed).to_have_count(0)
    wrong = (int(y[1]) + 1) % 10
    page.get_by_role("button", name=f"The right digit is {wrong}").click()
    expect()(page.locator("#feedback-status")).to_have_text(f"Thanks: saved as {wrong}.")
    expect()(pressed).to_have_text(str(wrong))
    page.locator("#digits button").first.click()
    expect()(pressed).to_have_count(0)  # another digit: nothing chosen for it yet
    expect()(page.locator("#feedback-status")).to_have_text("")
    second.click()
    expect()(pressed).to_have_count(1)
    expect()(pressed).to_have_text(str(wrong))
    expect()(page.locator("#feedback-status")).to_have_text(f"Saved as {wrong}.")
    page.get_by_role("button", name="This is not a digit").click()
    expect()(page.locator("#feedback-status")).to_have_text("Thanks: saved as not a digit.")
    expect()(pressed).to_have_count(1)
    expect()(pressed).to_have_text("Not a digit")


def test_changing_mode_rereads_the_same_upload_and_drawing(page, mnist_splits):
    x, y = mnist_splits.test_x[40:43], mnist_splits.test_y[40:43]
    upload(page, row_of(x), "row.png")
    wait_answer(page)
    text = "".join(str(d) for d in y)
    expect()(page.locator("#digits button")).to_have_count(3)
    page.get_by_role("radio", name="One digit").check()
    expect()(page.locator("#digits")).to_be_hidden()
    expect()(page.locator("#top3 li")).to_have_count(3)
    page.get_by_role("radio", name="Several digits").check()
    expect()(page.locator("#digits button")).to_have_count(3)
    assert page.locator("#digit").inner_text().replace("?", "") == text
    page.get_by_role("button", name="Clear").click()
    page.get_by_role("radio", name="Whatever is there").check()
    vertical_bar(page)
    wait_answer(page)
    expect()(page.locator("#digit")).to_have_text("1")
    page.get_by_role("radio", name="One digit").check()
    expect()(page.locator("#result")).to_have_attribute("data-state", "done")
    expect()(page.locator("#digit")).to_have_text("1")
    expect()(page.locator("#seen")).to_be_visible()
