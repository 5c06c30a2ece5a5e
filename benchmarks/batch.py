"""Batch OCR benchmark: images/s of `ocr batch`'s two engines (local process pool, Ray Data) on generated files.

Two workloads: 28x28 PNGs (MNIST test digits, half of them dark ink on white) and ~1 MP JPEG photos (an MNIST
digit, scaled up as dark ink, pasted on a paper-like background with shading and grain). Each run goes
through `run_batch` exactly as the command does, into a fresh output folder. Figures per run: end-to-end
images/s (start-up included) and the steady rate between 10 % and 90 % of the rows; Ray's start-up
(`ray.init` and a first trivial job) is timed on its own. The CPU time one process spends per file is
measured too: on a shared machine it says what the work costs when the cores are free
(`cpu_bound_images_per_s` = cores / CPU time per file).
"""

from __future__ import annotations

import io
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import core_count, summarize, target, write_result

log = logging.getLogger(__name__)

# batch: files per worker call; cpu_sample: files read in one process to measure the CPU cost per file.
FULL = {"pngs": 20_000, "photos": 1_000, "repeats": 2, "photo_size": (1152, 864),
        "batch": {"png": 128, "photo": 8}, "cpu_sample": {"png": 2000, "photo": 40}}
SMOKE = {"pngs": 200, "photos": 8, "repeats": 1, "photo_size": (1152, 864),
         "batch": {"png": 32, "photo": 2}, "cpu_sample": {"png": 50, "photo": 2}}


def _digits(n: int) -> np.ndarray:
    from cnn_ocr.config import load_params
    from cnn_ocr.data import ensure_prepared, load_version

    params = load_params()
    ensure_prepared(params.data)
    test_x = load_version("v2.0", params.data).test_x
    return test_x[np.arange(n) % len(test_x)]


def _pngs(folder: Path, n: int) -> None:
    from PIL import Image

    folder.mkdir()
    for i, img in enumerate(_digits(n)):
        Image.fromarray(img if i % 2 else 255 - img).save(folder / f"{i:06d}.png")


def _photo(digit: np.ndarray, size: tuple[int, int], rng: np.random.Generator) -> bytes:
    """A ~1 MP JPEG: light, unevenly lit paper with grain and a dark handwritten-like digit."""
    from PIL import Image

    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    paper = 215 + 25 * (xx / w) - 15 * (yy / h) + rng.normal(0, 4, (h, w)).astype(np.float32)
    side = int(rng.integers(h // 4, h // 2))
    ink = np.asarray(Image.fromarray(digit).resize((side, side), Image.Resampling.BICUBIC), np.float32) / 255.0
    y0, x0 = int(rng.integers(0, h - side)), int(rng.integers(0, w - side))
    region = paper[y0:y0 + side, x0:x0 + side]
    paper[y0:y0 + side, x0:x0 + side] = region * (1 - ink) + 35 * ink
    rgb = np.clip(np.stack([paper, paper * 0.98, paper * 0.93], axis=-1), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=88)
    return buf.getvalue()


def _photos(folder: Path, n: int, size: tuple[int, int]) -> None:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, digit in enumerate(_digits(n)):
        (folder / f"{i:05d}.jpg").write_bytes(_photo(digit, size, rng))


def _one_run(paths: list[str], out: Path, ref: Any, engine: str, workers: int, batch: int) -> dict[str, float]:
    from cnn_ocr.batch.job import BatchOptions, run_batch
    from cnn_ocr.reader import ReadLimits

    marks: list[tuple[float, int]] = []
    start = time.perf_counter()
    summary = run_batch(paths, out, ref, ReadLimits(), BatchOptions(engine=engine, workers=workers, batch_size=batch),
                        on_progress=lambda n: marks.append((time.perf_counter(), n)))
    end = time.perf_counter()
    if summary.written != len(paths):
        raise RuntimeError(f"{engine} engine wrote {summary.written} rows for {len(paths)} files")
    return {"seconds": end - start, "images_per_s": len(paths) / (end - start),
            "steady_images_per_s": _steady_rate(marks, len(paths)), "first_result_s": marks[0][0] - start,
            "errors": summary.errors}


def _steady_rate(marks: list[tuple[float, int]], total: int) -> float | None:
    """Images/s between 10 % and 90 % of the rows done: start-up and the last stragglers left out."""
    done, points = 0, []
    for t, n in marks:
        done += n
        points.append((t, done))
    lo = next(((t, d) for t, d in points if d >= 0.1 * total), None)
    hi = next(((t, d) for t, d in points if d >= 0.9 * total), None)
    if lo is None or hi is None or hi[0] <= lo[0]:
        return None  # too few results to tell (smoke sizes)
    return (hi[1] - lo[1]) / (hi[0] - lo[0])


def _measure(paths: list[str], tmp: Path, ref: Any, engine: str, workers: int, batch: int,
             repeats: int) -> dict[str, Any]:
    runs = [_one_run(paths, tmp / f"out-{engine}-{time.monotonic_ns()}", ref, engine, workers, batch)
            for _ in range(repeats)]
    return {"files": len(paths), **{k: summarize([r[k] for r in runs if r[k] is not None]) for k in runs[0]}}


def _cpu_ms_per_image(paths: list[str], ref: Any) -> float:
    """CPU time of one process reading `paths` (what the work costs, whatever else the machine runs)."""
    from cnn_ocr.batch.rows import load_session_model, read_rows
    from cnn_ocr.reader import ReadLimits

    model = load_session_model(ref)
    read_rows(paths[:2], model, ref, ReadLimits())
    start = time.process_time()
    read_rows(paths, model, ref, ReadLimits())
    return 1000 * (time.process_time() - start) / len(paths)


def _ray_startup(workers: int) -> float:
    import ray

    from cnn_ocr.batch.engines import start_ray

    start = time.perf_counter()
    start_ray(None, workers)
    ray.data.range(workers).materialize()  # a first trivial job: the worker processes exist
    return time.perf_counter() - start


def _targets(fig: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for kind, label, limit in (("png", "28x28 PNGs", 1500), ("photo", "1 MP JPEG photos", 100)):
        bound = fig[kind]["cpu_bound_images_per_s"]
        out.append(target(f"ocr batch --engine local, {label}", fig[kind]["local"]["images_per_s"]["median"], limit,
                          "img/s", True, f"CPU-bound rate on free cores: {bound:,.0f} img/s"))
    for kind in ("png", "photo"):
        ray, local = fig[kind].get("ray"), fig[kind]["local"]
        if ray:
            pair = ray["steady_images_per_s"]["median"], local["steady_images_per_s"]["median"]
            ratio = round(100 * pair[0] / pair[1], 1) if None not in pair else None
            out.append(target(f"Ray / local steady rate, {kind}s", ratio, 70, "%", True,
                              "once started (10-90 % of rows); Ray start-up measured separately"))
    return out


def run(smoke: bool = False, out_dir: Path | None = None) -> Path:
    """Run the batch benchmark and write `batch.json`; returns its path."""
    from benchmarks.service import _model_dir
    from cnn_ocr.batch.rows import ModelRef, load_session_model

    cfg = SMOKE if smoke else FULL
    workers = core_count()
    fig: dict[str, Any] = {"workers": workers}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        folder, fig["model"] = _model_dir(tmp)
        info = load_session_model(ModelRef(str(folder), "", "")).info
        ref = ModelRef(str(folder), info.name, info.version)
        _pngs(tmp / "pngs", cfg["pngs"])
        _photos(tmp / "photos", cfg["photos"], cfg["photo_size"])
        fig["photo_bytes_mean"] = float(np.mean([p.stat().st_size for p in (tmp / "photos").iterdir()]))
        sets = {"png": sorted(str(p) for p in (tmp / "pngs").iterdir()),
                "photo": sorted(str(p) for p in (tmp / "photos").iterdir())}
        for kind, paths in sets.items():
            cpu_ms = _cpu_ms_per_image(paths[:cfg["cpu_sample"][kind]], ref)
            fig[kind] = {"cpu_ms_per_image": cpu_ms, "cpu_bound_images_per_s": workers * 1000 / cpu_ms,
                         "local": _measure(paths, tmp, ref, "local", workers, cfg["batch"][kind], cfg["repeats"])}
        try:
            import ray
        except ImportError:
            fig["ray"] = "not installed (optional extra `batch`)"
        else:
            fig["ray_startup_s"] = _ray_startup(workers)
            try:
                for kind, paths in sets.items():
                    fig[kind]["ray"] = _measure(paths, tmp, ref, "ray", workers, cfg["batch"][kind], cfg["repeats"])
            finally:
                ray.shutdown()
    from benchmarks.common import RESULTS_DIR

    settings = {"smoke": smoke, **cfg, "workers": workers, "chunk_size": 2048}
    return write_result("batch", "smoke" if smoke else "full", fig, _targets(fig), "cpu", settings,
                        out_dir or RESULTS_DIR)
