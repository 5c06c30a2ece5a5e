"""The draw-a-digit page as people use it, measured in Chromium: real MNIST test digits drawn with the mouse as
pen strokes, with the default pen, in the default mode ("Whatever is there").

Figures: digits drawn at 30 % and at 100 % of the box's height (share read right), and rows of 3-6 drawn
digits (share of rows whose whole string is right). The model served is `OCR_FIGURES_MODEL_DIR` (a folder
with model.onnx + spec.json), else params.yaml's `export.production_dir`:

    OCR_FIGURES_MODEL_DIR=models/production python -m benchmarks page   # writes benchmarks/results/page.json

The browser test `tests/test_browser_drawing.py` runs the same measurements on the small test model.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import RESULTS_DIR, target, write_result
from benchmarks.pen_strokes import pen_paths

log = logging.getLogger(__name__)
MODEL_DIR_ENV = "OCR_FIGURES_MODEL_DIR"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking"]
DEFAULT_PEN = 0.07  # the page's "Normal" pen, as a share of the box's height
ROW_GAP = 0.35  # space between the digits of a row, in units of a digit's size
FULL = {"digits": 300, "rows": 100}
SMOKE = {"digits": 10, "rows": 3}
ANSWERED = "#result[data-state=done], #result[data-state=error]"

Strokes = list[list[tuple[float, float]]]


def draw(page: Any, strokes: Strokes, cx: float, cy: float, size: float) -> None:
    """Draw strokes (units of the digit's size, centred on 0) with the mouse, centred at (cx, cy) px."""
    for stroke in strokes:
        points = [(cx + x * size, cy + y * size) for x, y in stroke]
        page.mouse.move(*points[0])
        page.mouse.down()
        for point in points[1:]:
            page.mouse.move(*point)
        page.mouse.up()


def read_back(page: Any, timeout_ms: float = 20_000) -> str:
    """The digits the page shows once the pen has rested ("?" marks dropped); then clear the box."""
    page.wait_for_selector(ANSWERED, timeout=timeout_ms)
    text = page.locator("#digit").inner_text().replace("?", "").strip()
    page.get_by_role("button", name="Clear").click()
    return text


def digits_right(page: Any, paths: list[Strokes], labels: list[int], share: float) -> float:
    """Share of digits read right when each is drawn alone so that its ink (pen included) spans `share` of the
    box's height, in the box's centre."""
    box = page.locator("#pad").bounding_box()
    size = share * box["height"] - DEFAULT_PEN * box["height"]
    right = 0
    for strokes, label in zip(paths, labels, strict=True):
        draw(page, strokes, box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, size)
        right += read_back(page) == str(label)
    return right / len(labels)


def _extent(strokes: Strokes) -> tuple[float, float]:
    xs = [x for s in strokes for x, _ in s]
    return min(xs), max(xs)


def draw_row(page: Any, paths: list[Strokes]) -> None:
    """Draw digits left to right across the box, as large as fits (at most 60 % of its height)."""
    box = page.locator("#pad").bounding_box()
    widths = [hi - lo for lo, hi in (_extent(p) for p in paths)]
    span = sum(widths) + ROW_GAP * (len(paths) - 1)
    size = min(0.6 * box["height"], 0.9 * box["width"] / span)
    x = box["x"] + (box["width"] - size * span) / 2
    for strokes, width in zip(paths, widths, strict=True):
        lo, _ = _extent(strokes)
        draw(page, strokes, x - lo * size, box["y"] + box["height"] / 2, size)
        x += (width + ROW_GAP) * size


def rows_right(page: Any, images: np.ndarray, labels: np.ndarray, n_rows: int, seed: int = 7) -> float:
    """Share of rows of 3-6 digits (drawn from `images`) whose whole string the page reads right."""
    rng = np.random.default_rng(seed)
    right = 0
    for _ in range(n_rows):
        idx = rng.choice(len(images), int(rng.integers(3, 7)), replace=False)
        draw_row(page, [pen_paths(images[i]) for i in idx])
        right += read_back(page) == "".join(str(int(labels[i])) for i in idx)
    return right / n_rows


def measure(page: Any, test_x: np.ndarray, test_y: np.ndarray, n_digits: int, n_rows: int) -> dict[str, Any]:
    """All three figures on an open page: the first `n_digits` test digits at 30 % and 100 %, then `n_rows`
    rows drawn from the next 1000 test digits."""
    paths, labels = [pen_paths(d) for d in test_x[:n_digits]], [int(v) for v in test_y[:n_digits]]
    rows_x, rows_y = test_x[n_digits:n_digits + 1000], test_y[n_digits:n_digits + 1000]
    return {"digits_30pct": digits_right(page, paths, labels, 0.3),
            "digits_100pct": digits_right(page, paths, labels, 1.0),
            "rows_3_to_6_whole_string": rows_right(page, rows_x, rows_y, n_rows),
            "n_digits": n_digits, "n_rows": n_rows}


def model_dir() -> Path:
    """The model folder to measure: `OCR_FIGURES_MODEL_DIR`, else params.yaml's `export.production_dir`."""
    from cnn_ocr.config import load_params
    from cnn_ocr.spec import is_model_folder

    folder = Path(os.environ.get(MODEL_DIR_ENV) or load_params(Path("params.yaml")).export.production_dir)
    if not is_model_folder(folder):
        raise RuntimeError(f"{folder} has no model.onnx + spec.json: set {MODEL_DIR_ENV} to a model folder "
                           "(e.g. `ocr export --alias production`)")
    return folder


def _measure_served(browser: Any, base: str, splits: Any, cfg: dict[str, int]) -> tuple[str, dict[str, Any]]:
    """(the page's model header, the figures) on a fresh desktop-sized page of the service at `base`."""
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    try:
        page = context.new_page()
        page.goto(base)
        # a locator wait, not a string predicate: the page's CSP (script-src 'self') forbids evaluating strings
        page.locator("#model-info").filter(has_not_text=re.compile(r"^\s*Loading")).wait_for()
        summary = page.locator("#model-info").inner_text()
        return summary, measure(page, splits.test_x, splits.test_y, cfg["digits"], cfg["rows"])
    finally:
        context.close()


def _in_chromium(base: str, splits: Any, cfg: dict[str, int], browser: Any) -> tuple[str, dict[str, Any]]:
    if browser is not None:
        return _measure_served(browser, base, splits, cfg)
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.is_file():
        raise RuntimeError(f"{CHROMIUM} is missing: `make system-deps` installs the Debian package chromium")
    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            return _measure_served(launched, base, splits, cfg)
        finally:
            launched.close()


def run(smoke: bool = False, out_dir: Path | None = None, splits: Any = None, browser: Any = None) -> Path:
    """Measure the page in Chromium with the model of `model_dir()` and write `page.json` (test digits from
    `splits`, else the local data version v2.0; in `browser`, else a Chromium of its own)."""
    from benchmarks.service import _start, _stop
    from cnn_ocr.config import load_params
    from cnn_ocr.data import load_version

    cfg, folder = SMOKE if smoke else FULL, model_dir()
    if splits is None:
        splits = load_version("v2.0", load_params(Path("params.yaml")).data)
    with tempfile.TemporaryDirectory() as tmp:
        proc, base = _start(folder, 1, Path(tmp))
        try:
            summary, figures = _in_chromium(base, splits, cfg, browser)
        finally:
            _stop(proc)
    log.info("page figures for %s: %s", folder, figures)
    targets = [target("drawn digits at 30 % of the box, default pen", figures["digits_30pct"], 0.95, "share", True),
               target("drawn digits at 100 % of the box", figures["digits_100pct"], 0.99, "share", True),
               target("rows of 3-6 drawn digits, auto mode, whole string", figures["rows_3_to_6_whole_string"],
                      0.95, "share", True)]
    settings = {"model_dir": str(folder), "model": summary, "viewport": "1100x900", **cfg}
    return write_result("page", "smoke" if smoke else "full", figures, targets, "cpu", settings,
                        out_dir or RESULTS_DIR)
