"""The draw-a-digit page in headless Chromium against a real uvicorn server."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from browser_env import expect, page_server, wait_answer
from image_files import png

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server(tmp_path_factory, service_model_dir):
    with page_server(service_model_dir, tmp_path_factory.mktemp("browser")) as running:
        yield running


def draw_one(page) -> None:
    """A vertical stroke through the middle of the pad, drawn with the mouse (pointer events)."""
    box = page.locator("#pad").bounding_box()
    x = box["x"] + box["width"] / 2
    page.mouse.move(x, box["y"] + box["height"] * 0.15)
    page.mouse.down()
    for i in range(1, 21):
        page.mouse.move(x + i * 0.3, box["y"] + box["height"] * (0.15 + 0.7 * i / 20))
    page.mouse.up()


def test_draw_shows_prediction_bars_and_model_input(page):
    expect()(page.locator("#model-info")).to_contain_text("basic CNN")
    assert "test-cnn, version 1" in page.locator("#model-info").get_attribute("title")
    draw_one(page)
    wait_answer(page)
    expect()(page.locator("#digit")).to_have_text("1")
    expect()(page.locator("#top3 li")).to_have_count(3)
    width = page.locator("#top3 li .bar span").first.evaluate("e => parseFloat(e.style.width)")
    assert width > 50
    expect()(page.locator("#seen")).to_be_visible()
    assert page.locator("#seen").get_attribute("src").startswith("data:image/png;base64,")
    page.get_by_role("button", name="Undo").click()
    expect()(page.locator("#digit")).to_have_text("–")


def test_upload_and_feedback(page, server, mnist_splits):
    from cnn_ocr.feedback import FeedbackStore

    digit, label = mnist_splits.test_x[1], int(mnist_splits.test_y[1])
    page.locator("#file").set_input_files(files=[{"name": "digit.png", "mimeType": "image/png",
                                                  "buffer": png(255 - digit)}])
    expect()(page.locator("#digit")).to_have_text(str(label))
    wrong = (label + 1) % 10
    page.get_by_role("button", name=f"The right digit is {wrong}").click()
    expect()(page.locator("#feedback-status")).to_have_text(f"Thanks: saved as {wrong}.")
    store = FeedbackStore(server[1])
    images, labels, _ = store.feedback_arrays()
    store.close()
    assert labels.tolist()[-1] == wrong and np.array_equal(images[-1], digit)


def test_drag_and_drop_and_several_digits(page, mnist_splits):
    x, y = mnist_splits.test_x, mnist_splits.test_y
    row = np.zeros((40, 130), np.uint8)
    for k in range(3):
        row[6:34, 8 + 40 * k:36 + 40 * k] = x[10 + k]
    page.get_by_label("Several digits").check()
    payload = base64.b64encode(png(255 - row)).decode()
    page.evaluate("""async (b64) => {
        const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
        const dt = new DataTransfer();
        dt.items.add(new File([bytes], "row.png", {type: "image/png"}));
        document.getElementById("drop-zone").dispatchEvent(new DragEvent("drop", {dataTransfer: dt, bubbles: true}));
    }""", payload)
    expect()(page.locator("#digit")).to_have_text("".join(str(d) for d in y[10:13]))
    expect()(page.locator("#digits li")).to_have_count(3)
    expect()(page.locator("#seen-figure")).to_be_hidden()
    expect()(page.locator("#feedback")).to_be_hidden()
    drawn = page.evaluate("""() => { const c = document.getElementById("overlay");
        const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n; }""")
    assert drawn > 0, "no boxes were drawn"


def test_phone_width_touch_and_keyboard(browser, server):
    context = browser.new_context(viewport={"width": 375, "height": 740}, device_scale_factor=2, is_mobile=True,
                                  has_touch=True)
    page = context.new_page()
    page.goto(server[0])
    try:
        assert page.evaluate("document.documentElement.scrollWidth") <= 375
        box = page.locator("#pad").bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 375 and box["width"] >= 250
        cdp = context.new_cdp_session(page)
        x = box["x"] + box["width"] / 2
        points = [(x, box["y"] + box["height"] * (0.15 + 0.7 * i / 20)) for i in range(21)]
        cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": points[0][0],
                                                                                     "y": points[0][1]}]})
        for px, py in points[1:]:
            cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [{"x": px, "y": py}]})
        cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
        expect()(page.locator("#digit")).to_have_text("1")
        for name in ("Undo", "Clear", "The right digit is 0", "The right digit is 9"):
            button = page.get_by_role("button", name=name)
            expect()(button).to_be_visible()
            bb = button.bounding_box()
            assert bb["x"] + bb["width"] <= 375 and bb["height"] >= 40
        focused = []
        for _ in range(12):
            page.keyboard.press("Tab")
            focused.append(page.evaluate("document.activeElement.textContent.trim() || document.activeElement.id"))
        assert "Undo" in focused and "Clear" in focused
        page.keyboard.press("Shift+Tab")
        page.get_by_role("button", name="Clear").focus()
        page.keyboard.press("Enter")
        expect()(page.locator("#digit")).to_have_text("–")
    finally:
        context.close()
