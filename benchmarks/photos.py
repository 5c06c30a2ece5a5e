"""Photos of handwriting: accuracy on the generated evaluation photos, segmentation + classifier beside the
line recognizer (CRNN) on the same held-out strings, today's clean strips, and the `/read` path's latency.

Figures (all on MNIST **test** digits):
- one digit per photo, numbers of 3-8 digits (spaced / touching), the held-out paper: whole string right,
  through `cnn_ocr.reader` (what `/read` and `ocr read` run) and, beside it, the CRNN on the same ink;
- pages of 3-5 numbers: every number right, each line found and read as `/read` reads a page;
- synthetic strings of 1-10 digits (spaced and touching): segmentation + classifier vs CRNN;
- the clean strips of `tests/test_segment.py` (3-6 digits, 2-14 px gaps): whole string right;
- `/read` on a 12 MP JPEG photo: p50 ms on one core; a 280x280 canvas through `/predict`'s preprocessing
  with and without the photo check (same run).
The classifier is the model `ocr serve` would serve; when there is none, the small CNN the tests train
(`.cache/test-models`), said so in `settings.classifier`.
"""

from __future__ import annotations

import io
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import percentile, target, write_result

log = logging.getLogger(__name__)

FULL = {"strings": 400, "strips": 1000, "latency_runs": 15, "photos": None}
SMOKE = {"strings": 20, "strips": 20, "latency_runs": 3, "photos": 2}


def _classifier() -> tuple[Any, str]:
    from app.model_store import ModelLoadError, NoModelError, find_candidate, load_model_dir
    from app.settings import Settings

    try:
        candidate = find_candidate(Settings())
        return load_model_dir(candidate.folder, threads=1, source=candidate.source), str(candidate.folder)
    except (NoModelError, ModelLoadError):
        cached = sorted(Path(".cache/test-models").glob("*/spec.json"))
        if not cached:
            raise RuntimeError("no served model and no cached test model; run `make train` or the tests first") from None
        folder = cached[-1].parent
        return load_model_dir(folder, threads=1, source="test"), f"{folder} (small test CNN: no served model)"


def _recognizer(params: Any) -> Any | None:
    from cnn_ocr.line_model import SPEC_FILE, LineRecognizer

    folder = Path(params.crnn.out_dir)
    return LineRecognizer(folder) if (folder / SPEC_FILE).is_file() else None


def _readings(model: Any, recognizer: Any | None, data: bytes | None, gray: np.ndarray | None) -> dict[str, str]:
    """The text read by segmentation + classifier, by the CRNN and by the two combined (`ocr read
    --recognizer`), all from the same ink."""
    from cnn_ocr.line_read import choose, ink_of, recognized, segmented
    from cnn_ocr.reader import ReadLimits

    limits = ReadLimits()
    ink = ink_of(data, gray, limits)
    seg = segmented(ink, model.predict, limits)
    out = {"segmentation": seg.text}
    if recognizer is not None:
        rec = recognized(ink, recognizer, model.predict, limits) if ink.no_digit is None else seg
        out["crnn"] = rec.text
        out["combined"] = choose(seg, rec).text
    return out


def _page_readings(model: Any, recognizer: Any | None, data: bytes) -> dict[str, str]:
    """A page's text (lines joined by newlines) as `/read` reads it and with the recognizer beside it."""
    from cnn_ocr.line_read import read_line
    from cnn_ocr.reader import ReadLimits

    out = {"segmentation": read_line(data, None, model.predict, ReadLimits())["text"]}
    if recognizer is not None:
        out["combined"] = read_line(data, None, model.predict, ReadLimits(), recognizer)["text"]
    return out


def _score(rows: list[dict[str, str]], truths: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"n": len(truths)}
    for key in rows[0] if rows else ():
        out[key] = float(np.mean([r[key] == t for r, t in zip(rows, truths, strict=True)]))
    return out


def _photo_items(params: Any, cfg: dict, splits: Any, tmp: Path) -> list[Any]:
    from cnn_ocr.data.photo_sets import build_set, load_set

    if cfg["photos"] is None:
        return load_set(Path(params.photos.out_dir))
    n = cfg["photos"]
    style = params.photos.style.model_copy(update={"megapixels": (1.0, 2.0)})
    small = params.photos.model_copy(update={"style": style, "sizes": params.photos.sizes.model_copy(
        update={"digits": n, "numbers": n, "touching": n, "pages": n, "heldout": n})})
    return load_set(build_set(small, splits.test_x, splits.test_y, tmp / "photos"))


def photo_accuracy(items: list[Any], model: Any, recognizer: Any | None) -> dict[str, Any]:
    """Whole-string accuracy per kind of photo: segmentation + classifier, CRNN and combined; for pages,
    every number right (segmentation + classifier, and combined with the CRNN)."""
    out: dict[str, Any] = {}
    for kind in ("digits", "numbers", "touching", "heldout"):
        chosen = [i for i in items if i.kind == kind]
        if chosen:
            out[kind] = _score([_readings(model, recognizer, i.path.read_bytes(), None) for i in chosen],
                               [i.text for i in chosen])
            log.info("photos %s: %s", kind, out[kind])
    pages = [i for i in items if i.kind == "pages"]
    if pages:
        out["pages"] = _score([_page_readings(model, recognizer, i.path.read_bytes()) for i in pages],
                              [i.text for i in pages])
        log.info("photos pages: %s", out["pages"])
    return out


def string_comparison(splits: Any, model: Any, recognizer: Any | None, n: int) -> dict[str, Any]:
    """The same held-out strings (1-10 test digits) read by segmentation + classifier and by the CRNN."""
    from cnn_ocr.data.photos import compose_line

    rng = np.random.default_rng(11)
    out = {}
    for name, gaps in (("spaced", (0.1, 0.5)), ("touching", (-0.2, -0.05))):
        rows, truths = [], []
        for _ in range(n):
            k = int(rng.integers(1, 11))
            idx = rng.integers(0, len(splits.test_x), k)
            alpha, _ = compose_line([splits.test_x[i] for i in idx], int(rng.integers(28, 64)),
                                    rng.uniform(*gaps, k), rng)
            gray = np.pad(255.0 * (1.0 - alpha), 10, constant_values=255.0).astype(np.float32)
            rows.append(_readings(model, recognizer, None, gray))
            truths.append("".join(str(int(splits.test_y[i])) for i in idx))
        out[name] = _score(rows, truths)
        log.info("strings %s: %s", name, out[name])
    return out


def clean_strips(splits: Any, model: Any, recognizer: Any | None, n: int) -> dict[str, Any]:
    """tests/test_segment.py's strips: 3-6 test digits, 2-14 px gaps, white on black; whole string right."""
    rng = np.random.default_rng(7)
    x, y = splits.test_x, splits.test_y
    rows, truths = [], []
    for _ in range(n):
        k = int(rng.integers(3, 7))
        idx = rng.choice(len(x), k, replace=False)
        crops = []
        for i in idx:
            r, c = np.flatnonzero(x[i].any(1)), np.flatnonzero(x[i].any(0))
            crops.append(x[i][r[0]:r[-1] + 1, c[0]:c[-1] + 1])
        gaps = [int(rng.integers(2, 15)) for _ in idx]
        line = np.zeros((40, sum(c.shape[1] for c in crops) + sum(gaps) + 10), np.uint8)
        pos = 5
        for crop, gap in zip(crops, gaps, strict=True):
            top = int(rng.integers(0, 40 - crop.shape[0] + 1))
            region = line[top:top + crop.shape[0], pos:pos + crop.shape[1]]
            np.maximum(region, crop, out=region)
            pos += crop.shape[1] + gap
        rows.append(_readings(model, recognizer, None, 255.0 - line.astype(np.float32)))
        truths.append("".join(str(y[i]) for i in idx))
    return _score(rows, truths)


def _twelve_mp_jpeg(params: Any, splits: Any) -> bytes:
    from cnn_ocr.data.photo_sets import generate

    return generate(params.photos, splits.test_x, splits.test_y, "numbers", 0, megapixels=12.0).data


def latency(params: Any, splits: Any, model: Any, runs: int) -> dict[str, Any]:
    """p50 ms: `/read`'s path on a 12 MP JPEG; a 280x280 canvas through `/predict`'s path, with the photo
    check and without it (the path as it was)."""
    from PIL import Image, ImageDraw

    from cnn_ocr import photo
    from cnn_ocr.preprocess import prepare_image
    from cnn_ocr.reader import ReadLimits, read_many

    jpeg = _twelve_mp_jpeg(params, splits)
    read_ms = []
    for _ in range(runs):
        start = time.perf_counter()
        read_many([jpeg], model.predict, ReadLimits())
        read_ms.append(1000 * (time.perf_counter() - start))
    canvas = Image.new("L", (280, 280), 255)
    ImageDraw.Draw(canvas).line([(80, 60), (200, 60), (120, 230)], fill=0, width=18)
    buf = io.BytesIO()
    canvas.save(buf, "PNG")
    png = buf.getvalue()

    def predict_ms() -> float:
        start = time.perf_counter()
        model.probabilities(prepare_image(png).image[None])
        return 1000 * (time.perf_counter() - start)

    with_check, without, original = [], [], photo.is_photo
    try:
        for _ in range(runs * 20):  # interleaved, so both see the same machine load
            with_check.append(predict_ms())
            photo.is_photo = lambda gray: False
            without.append(predict_ms())
            photo.is_photo = original
    finally:
        photo.is_photo = original
    return {"read_12mp_jpeg_ms": {"p50": percentile(read_ms, 50), "values": [round(v, 1) for v in read_ms],
                                  "bytes": len(jpeg)},
            "predict_canvas_ms": {"p50": percentile(with_check, 50)},
            "predict_canvas_without_photo_check_ms": {"p50": percentile(without, 50)}}


def run(smoke: bool = False, out_dir: Path | None = None) -> Path:
    """Run the photo benchmark and write `photos.json`."""
    import onnxruntime  # noqa: F401  (fail early when the runtime is missing)

    from benchmarks.common import RESULTS_DIR
    from cnn_ocr.config import load_params
    from cnn_ocr.data import load_version

    cfg = SMOKE if smoke else FULL
    params = load_params(Path("params.yaml"))
    splits = load_version("v2.0", params.data)
    model, classifier = _classifier()
    recognizer = _recognizer(params)
    with tempfile.TemporaryDirectory() as tmp:
        items = _photo_items(params, cfg, splits, Path(tmp))
        photos = photo_accuracy(items, model, recognizer)
    strings = string_comparison(splits, model, recognizer, cfg["strings"])
    strips = clean_strips(splits, model, recognizer, cfg["strips"])
    speed = latency(params, splits, model, cfg["latency_runs"])
    figures = {"photos": photos, "strings": strings, "clean_strips_whole_string": strips, "latency": speed}
    best = {k: v.get("combined", v["segmentation"]) for k, v in photos.items()}  # what `ocr read` ships
    targets = [
        target("one digit per photo", best.get("digits"), 0.98, "share", True),
        target("3-8 digit number per photo, whole string", best.get("numbers"), 0.93, "share", True),
        target("3-8 digit number, touching digits", best.get("touching"), 0.90, "share", True),
        target("page of 3-5 numbers: every number right", best.get("pages"), 0.85, "share", True),
        target("held-out paper, whole string", best.get("heldout"), 0.90, "share", True,
               "reported separately; no target of its own in the issue"),
        target("clean strips, whole string", strips.get("combined", strips["segmentation"]), 0.97, "share", True),
        target("/read on a 12 MP JPEG, p50", speed["read_12mp_jpeg_ms"]["p50"], 150.0, "ms", False),
        target("280x280 canvas /predict, p50, no slower than without the photo check",
               speed["predict_canvas_ms"]["p50"], speed["predict_canvas_without_photo_check_ms"]["p50"] * 1.05, "ms",
               False, "limit: the same run without the photo check, +5 % timing noise"),
    ]
    settings = {"classifier": classifier, "crnn": str(params.crnn.out_dir) if recognizer else None,
                "photo_set": str(params.photos.out_dir) if cfg["photos"] is None else "generated small (smoke)",
                **cfg}
    return write_result("photos", "smoke" if smoke else "full", figures, targets, "cpu", settings,
                        out_dir or RESULTS_DIR)
