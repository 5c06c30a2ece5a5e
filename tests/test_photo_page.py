"""The page's Photo mode in headless Chromium against a real uvicorn server: a generated photo of a page of
numbers is uploaded, a box sits over each digit and each line's text shows, and a digit corrected on the photo
reaches the feedback store."""

from __future__ import annotations

import pytest
from browser_env import expect, page_server

from cnn_ocr.data.photo_sets import generate

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server(tmp_path_factory, service_model_dir):
    with page_server(service_model_dir, tmp_path_factory.mktemp("photo-page")) as running:
        yield running


@pytest.fixture(scope="module")
def photo(mnist_splits, project_params):
    """A page of three numbers, 2 MP."""
    made = generate(project_params.photos, mnist_splits.test_x, mnist_splits.test_y, "pages", 4, megapixels=2.0)
    assert len(made.lines) == 3
    return made


def upload(page, data: bytes) -> None:
    page.locator("#photo-file").set_input_files(files=[{"name": "page.jpg", "mimeType": "image/jpeg", "buffer": data}])


def shown_box(page, i: int) -> tuple[float, float, float, float]:
    """Box `i` on the displayed photo, in the photo's own pixels."""
    return page.evaluate("""i => { const img = document.getElementById("photo-img");
        const r = img.getBoundingClientRect(), b = document.querySelectorAll(".photo-box")[i].getBoundingClientRect();
        const k = img.naturalWidth / r.width;
        return [(b.left - r.left) * k, (b.top - r.top) * k, b.width * k, b.height * k]; }""", i)


def test_a_photo_shows_boxes_over_the_digits_and_the_text_of_each_line(page, photo):
    upload(page, photo.data)
    boxes = page.locator(".photo-box")
    truth_boxes = [b for line in photo.lines for b in line.boxes]
    expect()(boxes).to_have_count(len(truth_boxes))
    expect()(page.locator(".photo-text")).to_have_text([line.text for line in photo.lines])
    for i, (x, y, w, h) in enumerate(truth_boxes):
        bx, by, bw, bh = shown_box(page, i)
        cx, cy = bx + bw / 2, by + bh / 2
        assert x <= cx <= x + w and y <= cy <= y + h, (i, (bx, by, bw, bh), (x, y, w, h))
    assert "3 lines" in page.locator("#photo-status").inner_text()


def test_tapping_a_digit_and_choosing_the_right_one_sends_feedback(page, server, photo):
    from cnn_ocr.feedback import FeedbackStore

    upload(page, photo.data)
    second_line = photo.lines[1].text
    box = page.get_by_role("button", name="Line 2, digit 1:")
    expect()(box).to_have_count(1)
    box.click()
    expect()(page.locator("#photo-fix-label")).to_contain_text("Line 2, digit 1")
    expect()(page.get_by_role("button", name="Correct to 0")).to_be_focused()
    wrong = (int(second_line[0]) + 1) % 10
    page.get_by_role("button", name=f"Correct to {wrong}").click()
    expect()(page.locator("#photo-fix-status")).to_have_text(f"Thanks: saved as {wrong}.")
    expect()(page.locator(".photo-text").nth(1)).to_have_text(str(wrong) + second_line[1:])
    expect()(box).to_have_attribute("aria-label", f"Line 2, digit 1: corrected to {wrong}")
    store = FeedbackStore(server[1])
    _, labels, _ = store.feedback_arrays()
    store.close()
    assert labels.tolist()[-1] == wrong


def test_the_photo_mode_works_from_the_keyboard(page, photo):
    page.get_by_role("button", name="Take or choose a photo…").focus()
    upload(page, photo.data)
    expect()(page.locator(".photo-box")).to_have_count(sum(len(line.text) for line in photo.lines))
    page.locator(".photo-box").first.focus()
    page.keyboard.press("Enter")
    expect()(page.locator("#photo-fix")).to_be_visible()
    outline = page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"


def test_a_file_that_is_not_an_image_is_a_readable_error(page):
    page.locator("#photo-file").set_input_files(files=[{"name": "notes.jpg", "mimeType": "image/jpeg",
                                                        "buffer": b"not an image"}])
    expect()(page.locator("#photo-error")).to_be_visible()
    assert page.locator("#photo-view").is_hidden()
