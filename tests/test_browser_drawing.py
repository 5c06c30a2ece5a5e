"""Real MNIST test digits drawn on the page with the mouse, as pen strokes, with the default pen, in the
default mode ("Whatever is there"): small digits, digits filling the box, and rows of 3-6 digits.

The measuring is `benchmarks.page`'s (which measures a production model: `python -m benchmarks page`). The
figures printed here are the page's accuracy with the small test model; the asserted floors sit a little
under what that model reliably reaches (its own accuracy on these pen-drawn digits drawn large is ~97 %).
"""

from __future__ import annotations

import pytest
from browser_env import expect, page_server

from benchmarks.page import digits_right, rows_right
from benchmarks.pen_strokes import pen_paths

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


def test_small_digits_with_the_default_pen(page, digits):
    small = digits_right(page, *digits, 0.3)
    print(f"\ndrawn at 30 % of the box: {small:.1%} right ({len(digits[1])} digits)")
    assert small >= 0.9


def test_digits_filling_the_box(page, digits):
    full = digits_right(page, *digits, 1.0)
    print(f"\ndrawn at 100 % of the box: {full:.1%} right ({len(digits[1])} digits)")
    assert full >= 0.9


def test_rows_of_three_to_six_digits_in_auto_mode(page, mnist_splits):
    rows = rows_right(page, mnist_splits.test_x[200:1200], mnist_splits.test_y[200:1200], N_ROWS)
    print(f"\nrows of 3-6 digits, whole string: {rows:.1%} right ({N_ROWS} rows)")
    assert rows >= 0.75


def test_the_page_benchmark_measures_the_model_it_is_pointed_at(browser, service_model_dir, mnist_splits, tmp_path,
                                                                monkeypatch):
    import json

    from benchmarks import page as page_bench

    monkeypatch.setenv(page_bench.MODEL_DIR_ENV, str(service_model_dir))
    data = json.loads(page_bench.run(smoke=True, out_dir=tmp_path, splits=mnist_splits,
                                      browser=browser).read_text())
    assert data["benchmark"] == "page" and data["mode"] == "smoke"
    assert data["settings"]["model_dir"] == str(service_model_dir) and data["settings"]["model"].startswith("Model: ")
    assert data["figures"]["n_digits"] == page_bench.SMOKE["digits"]
    assert [t["limit"] for t in data["targets"]] == [0.95, 0.99, 0.95]
    monkeypatch.setenv(page_bench.MODEL_DIR_ENV, str(tmp_path / "nothing"))
    with pytest.raises(RuntimeError, match="has no model.onnx"):
        page_bench.run(smoke=True, out_dir=tmp_path, splits=mnist_splits)
