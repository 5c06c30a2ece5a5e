"""The versioned evaluation photos: a folder of JPEGs and `truth.json`, built from MNIST **test** digits.

Each photo has its own random stream (seed, kind, index), so a set is the same whatever order or process
builds it, and one photo can be regenerated alone. Kinds: `digits` (one digit per photo), `numbers` (3-8
digits, spaced), `touching` (3-8 digits with overlapping strokes), `pages` (3-5 numbers) and `heldout`
(numbers, half of them touching, on a paper colour and ruling never used in tuning).
"""

from __future__ import annotations

import json
import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnn_ocr.atomic_files import atomic_dir
from cnn_ocr.data.photos import Photo, random_ask, render
from cnn_ocr.photo_params import PhotosParams

KINDS = ("digits", "numbers", "touching", "pages", "heldout")
_ASK_KIND = {"digits": "digit", "numbers": "number", "touching": "touching", "pages": "page"}
TRUTH = "truth.json"


@dataclass(frozen=True)
class PhotoItem:
    """One photo of a set: where it is, its kind and its ground truth lines (text + digit boxes)."""

    path: Path
    kind: str
    lines: list[dict]
    settings: dict

    @property
    def text(self) -> str:
        """The lines' texts joined by newlines."""
        return "\n".join(line["text"] for line in self.lines)


def generate(params: PhotosParams, digits: np.ndarray, labels: np.ndarray, kind: str, index: int,
             megapixels: float | None = None) -> Photo:
    """Photo `index` of `kind` for these params; the same arguments give the same bytes."""
    rng = np.random.default_rng([params.seed, KINDS.index(kind), index])
    if kind == "heldout":
        ask = random_ask("touching" if index % 2 else "number", len(digits), rng)
        return render(digits, labels, ask, params.heldout_paper, params.style, rng, megapixels)
    return render(digits, labels, random_ask(_ASK_KIND[kind], len(digits), rng), params.paper, params.style, rng,
                  megapixels)


_WORKER: dict[str, Any] = {}  # a pool process's params and digits, set once by `_start_worker`


def _start_worker(params: PhotosParams, digits: np.ndarray, labels: np.ndarray) -> None:
    _WORKER.update(params=params, digits=digits, labels=labels)


def _generate_in_worker(job: tuple[str, int]) -> Photo:
    return generate(_WORKER["params"], _WORKER["digits"], _WORKER["labels"], *job)


def iter_set(params: PhotosParams, digits: np.ndarray, labels: np.ndarray,
             workers: int = 1) -> Iterator[tuple[str, int, Photo]]:
    """Every photo of the evaluation set, kind by kind, rendered by `workers` processes (the same bytes for
    any number: each photo has its own random stream)."""
    jobs = [(kind, i) for kind in KINDS for i in range(getattr(params.sizes, kind))]
    if workers <= 1 or len(jobs) <= 1:
        for kind, i in jobs:
            yield kind, i, generate(params, digits, labels, kind, i)
        return
    ctx = multiprocessing.get_context("spawn")  # no fork of a parent that may hold threads
    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=ctx, initializer=_start_worker,
                             initargs=(params, digits, labels)) as pool:
        for (kind, i), photo in zip(jobs, pool.map(_generate_in_worker, jobs), strict=True):
            yield kind, i, photo


def build_set(params: PhotosParams, digits: np.ndarray, labels: np.ndarray, out_dir: Path | None = None,
              workers: int | None = None) -> Path:
    """Write the evaluation set (JPEGs + truth.json) atomically into `out_dir` (default params.out_dir), with
    `workers` processes (default: one per core)."""
    final = Path(out_dir or params.out_dir)
    truth = []
    with atomic_dir(final) as tmp:
        for kind, i, photo in iter_set(params, digits, labels, workers or os.cpu_count() or 1):
            name = f"{kind}-{i:04d}.jpg"
            (tmp / name).write_bytes(photo.data)
            truth.append({"file": name, "kind": kind, "settings": photo.settings,
                          "lines": [{"text": line.text, "boxes": [list(b) for b in line.boxes]}
                                    for line in photo.lines]})
        (tmp / TRUTH).write_text(json.dumps({"seed": params.seed, "photos": truth}, indent=1))
    return final


def load_set(folder: Path) -> list[PhotoItem]:
    """The photos of a built set with their ground truth."""
    folder = Path(folder)
    try:
        meta = json.loads((folder / TRUTH).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"no photo set at {folder}: run `dvc repro photos` (or `ocr photos make`)") from None
    return [PhotoItem(folder / p["file"], p["kind"], p["lines"], p["settings"]) for p in meta["photos"]]
