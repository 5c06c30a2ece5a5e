"""Accessibility and phones: axe-core (pinned, checksum-verified at install) finds no serious or critical
violation in any state of the page, every control shows its focus, touch screens get touch wording and a
taller several-digits box."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from browser_env import expect, page_server, wait_answer
from image_files import png

from app.vendor import installed, manifest

pytestmark = pytest.mark.browser
ROOT = Path(__file__).resolve().parents[1]
PHONE = {"viewport": {"width": 375, "height": 740}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}
PHONE_ON_ITS_SIDE = {**PHONE, "viewport": {"width": 740, "height": 360}}


@pytest.fixture(scope="module")
def server(tmp_path_factory, service_model_dir):
    with page_server(service_model_dir, tmp_path_factory.mktemp("a11y")) as (base, _):
        yield base


def serious_violations(page) -> list[str]:
    if not installed("axe-core", manifest()["axe-core"]):
        pytest.fail("axe-core is not installed: run `make install` (python -m app.vendor)")
    page.add_script_tag(url="/static/vendor/axe-core/axe.min.js")  # served by the app: the CSP allows it
    result = page.evaluate("""async () => (await axe.run(document, {resultTypes: ["violations"]})).violations
        .filter(v => v.impact === "serious" || v.impact === "critical")
        .map(v => `${v.id}: ${v.nodes.map(n => n.target.join(" ")).join(", ")}`)""")
    return result


def upload(page, image: np.ndarray | bytes, name: str = "digit.png") -> None:
    data = image if isinstance(image, bytes) else png(255 - image)
    page.locator("#file").set_input_files(files=[{"name": name, "mimeType": "image/png", "buffer": data}])


def photo_violations(page, mnist_splits) -> list[str]:
    """The Photo mode with a page of numbers read and one digit chosen for correction."""
    from cnn_ocr.config import load_params
    from cnn_ocr.data.photo_sets import generate

    params = load_params(ROOT / "params.yaml").photos
    photo = generate(params, mnist_splits.test_x, mnist_splits.test_y, "pages", 4, megapixels=2.0)
    page.locator("#photo-file").set_input_files(files=[{"name": "page.jpg", "mimeType": "image/jpeg",
                                                        "buffer": photo.data}])
    expect()(page.locator(".photo-box")).to_have_count(sum(len(line.text) for line in photo.lines))
    page.locator(".photo-box").first.click()
    expect()(page.locator("#photo-fix")).to_be_visible()
    return serious_violations(page)


@pytest.mark.parametrize("viewport", ["desktop", "phone"])
def test_axe_finds_no_serious_violation_in_any_state(browser, server, mnist_splits, viewport):
    context = browser.new_context(**(PHONE if viewport == "phone" else {"viewport": {"width": 1100, "height": 900}}))
    page = context.new_page()
    try:
        page.goto(server)
        expect()(page.locator("#model-info")).not_to_have_text("Loading model…")
        found = {"start": serious_violations(page)}
        upload(page, mnist_splits.test_x[0])
        wait_answer(page)
        found["one digit"] = serious_violations(page)
        row = np.zeros((40, 130), np.uint8)
        for k in range(3):
            row[6:34, 8 + 40 * k:36 + 40 * k] = mnist_splits.test_x[10 + k]
        upload(page, row, "row.png")
        expect()(page.locator("#digits button")).to_have_count(3)
        page.locator("#digits button").first.click()
        found["row"] = serious_violations(page)
        upload(page, b"not an image", "x.png")
        expect()(page.locator("#error")).to_be_visible()
        found["error"] = serious_violations(page)
        found["photo"] = photo_violations(page, mnist_splits)
        assert found == {state: [] for state in found}
    finally:
        context.close()


def tab_through(page) -> list[str]:
    """Press Tab until focus leaves the page; check every element it lands on is visible and shows a focus
    ring; return their names in order."""
    seen = []
    for _ in range(40):
        page.keyboard.press("Tab")
        info = page.evaluate("""() => { const e = document.activeElement; const s = getComputedStyle(e);
            const name = e === document.body ? "BODY"
                : e.getAttribute("aria-label") || e.textContent.trim() || e.id || e.tagName;
            return {name,
                    hidden: e.offsetParent === null && e.tagName !== "BODY",
                    outline: s.outlineStyle, width: parseFloat(s.outlineWidth)}; }""")
        if info["name"] == "BODY":
            break
        seen.append(info["name"])
        assert not info["hidden"], f"focus landed on a hidden element: {info['name']}"
        assert info["outline"] != "none" and info["width"] >= 2, f"no visible focus on {info['name']}"
    return seen


def test_every_control_shows_its_focus(browser, server, mnist_splits):
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    try:
        page.goto(server)
        upload(page, mnist_splits.test_x[0])
        wait_answer(page)
        seen = tab_through(page)
        assert "Upload image…" in seen and "Undo" in seen and "API documentation" in seen
        assert any(name.startswith("The right digit is") for name in seen)
        row = np.zeros((40, 130), np.uint8)
        for k in range(3):
            row[6:34, 8 + 40 * k:36 + 40 * k] = mnist_splits.test_x[10 + k]
        upload(page, row, "row.png")
        expect()(page.locator("#digits button")).to_have_count(3)
        page.locator("#digits button").nth(1).click()
        page.get_by_role("button", name="The right digit is 4").click()
        expect()(page.locator("#feedback-status")).to_contain_text("saved as 4")
        page.locator("body").click(position={"x": 2, "y": 2})
        seen = tab_through(page)
        assert sum(name.startswith("Digit ") for name in seen) == 3, seen  # the row's digits, one stop each
        assert "This is not a digit" in seen
    finally:
        context.close()


def test_phone_gets_touch_wording_a_tall_row_box_and_an_announced_canvas(browser, server):
    context = browser.new_context(**PHONE)
    page = context.new_page()
    try:
        page.goto(server)
        hint = page.locator("#drop-hint").inner_text()
        assert "tap" in hint.lower() and "drop" not in hint.lower()
        page.get_by_role("radio", name="Several digits").check()
        assert page.locator("#pad").bounding_box()["height"] >= 200
        canvas = page.get_by_role("img", name="Drawing area")
        expect()(canvas).to_have_count(1)
        assert "Upload image" in page.locator("#" + canvas.get_attribute("aria-describedby")).inner_text()
        assert "mouse" not in canvas.get_attribute("aria-label")  # touch wording in the text alternative too
    finally:
        context.close()


@pytest.mark.parametrize("mode", ["Whatever is there", "Several digits"])
def test_a_phone_on_its_side_gets_a_tall_row_box_that_fits_the_screen(browser, server, mode):
    context = browser.new_context(**PHONE_ON_ITS_SIDE)
    page = context.new_page()
    try:
        page.goto(server)
        page.get_by_role("radio", name=mode).check()
        box = page.locator("#pad").bounding_box()
        assert box["height"] >= 200 and box["height"] <= 360 * 0.8, box
        assert box["width"] >= 1.9 * box["height"], box  # still a box for a row
    finally:
        context.close()
