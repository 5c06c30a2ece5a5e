"""Real MNIST test digits drawn on the page with the mouse, as pen strokes, with the default pen, in the
default mode ("Whatever is there"): small digits, digits filling the box, and rows of 3-6 digits.

The figures printed are the page's accuracy with the small test model; the asserted floors sit a little
under what that model reliably reaches (its own accuracy on these pen-drawn digits drawn large is ~97 %).
"""

from __future__ import annotations

import numpy as np
import pytest
from browser_env import expect, page_server, wait_answer
from pen_strokes import pen_paths

pytestmark = pytest.mark.browser
N_DIGITS = 40
N_ROWS = 12


@pytest.fixture(scope="module")
def page(tmp_path_factory, service_model_dir, browser):
    with page_server(service_model_dir, tmp_path_factory.mktemp("drawing")) as (base, _):
        context = browser.new_context(viewport={"width": 1100, "height": 900})
        page = context.new_page()
        page.goto(base)
        expect()(page.locator("#model-info")).not_to_have_text("Loading model…")
        yield page
        context.close()


@pytest.fixture(scope="module")
def digits(mnist_splits):
    """Test digits with their pen paths (every class present)."""
    x, y = mnist_splits.test_x[:N_DIGITS], mnist_splits.test_y[:N_DIGITS]
    return [pen_paths(d) for d in x], [int(v) for v in y]


def draw(page, strokes, cx: float, cy: float, size: float) -> None:
    """Draw strokes (units of the digit's size, centred on 0) with the mouse, centred at (cx, cy) px."""
    for stroke in strokes:
        points = [(cx + x * size, cy + y * size) for x, y in stroke]
        page.mouse.move(*points[0])
        page.mouse.down()
        for point in points[1:]:
            page.mouse.move(*point)
        page.mouse.up()


def read_back(page) -> str:
    wait_answer(page)
    text = page.locator("#digit").inner_text().replace("?", "").strip()
    page.get_by_role("button", name="Clear").click()
    return text


def accuracy_at(page, digits, share: float) -> float:
    paths, labels = digits
    box = page.locator("#pad").bounding_box()
    pen = 0.07 * box["height"]
    size = share * box["height"] - pen  # the ink, pen included, spans `share` of the box's height
    right = 0
    for strokes, label in zip(paths, labels, strict=True):
        draw(page, strokes, box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, size)
        right += read_back(page) == str(label)
    return right / len(labels)


def test_small_digits_with_the_default_pen(page, digits):
    small = accuracy_at(page, digits, 0.3)
    print(f"\ndrawn at 30 % of the box: {small:.1%} right ({len(digits[1])} digits)")
    assert small >= 0.9


def test_digits_filling_the_box(page, digits):
    full = accuracy_at(page, digits, 1.0)
    print(f"\ndrawn at 100 % of the box: {full:.1%} right ({len(digits[1])} digits)")
    assert full >= 0.9


def _extent(strokes) -> tuple[float, float]:
    xs = [x for s in strokes for x, _ in s]
    return min(xs), max(xs)


def test_rows_of_three_to_six_digits_in_auto_mode(page, mnist_splits):
    rng = np.random.default_rng(7)
    box = page.locator("#pad").bounding_box()
    right = 0
    for _ in range(N_ROWS):
        idx = rng.choice(np.arange(200, 1200), int(rng.integers(3, 7)), replace=False)
        paths = [pen_paths(mnist_splits.test_x[i]) for i in idx]
        widths = [hi - lo for lo, hi in (_extent(p) for p in paths)]
        gap = 0.35
        size = min(0.6 * box["height"], 0.9 * box["width"] / (sum(widths) + gap * (len(paths) - 1)))
        x = box["x"] + (box["width"] - size * (sum(widths) + gap * (len(paths) - 1))) / 2
        for strokes, width in zip(paths, widths, strict=True):
            lo, _ = _extent(strokes)
            draw(page, strokes, x - lo * size, box["y"] + box["height"] / 2, size)
            x += (width + gap) * size
        right += read_back(page) == "".join(str(int(mnist_splits.test_y[i])) for i in idx)
    print(f"\nrows of 3-6 digits, whole string: {right / N_ROWS:.1%} right ({N_ROWS} rows)")
    assert right / N_ROWS >= 0.75
