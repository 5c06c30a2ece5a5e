"""Training negatives: marks that are not digits, generated from a seed and stored as their own data version.

Families (`FAMILIES`): pen scribbles, loose strokes, geometric shapes, hatching and grids, several overlapping
MNIST training digits, MNIST training digits cut, shuffled, blurred or noised beyond recognition, letters and
symbols of Hershey's single-stroke fonts. Each is drawn on a canvas-sized image with a canvas-like pen, in
one of three looks (light on dark, dark on light, a photo of paper) and passed through the service's
preprocessing (`drawing.to_input`); what the preprocessing already refuses (blank, a dot) is not kept.
Train and validation negatives come from different seeds; thresholds are fitted on the validation ones.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from cnn_ocr.atomic_files import atomic_dir
from cnn_ocr.config import DataParams, NegativesParams
from cnn_ocr.data import shapes
from cnn_ocr.data.drawing import apply_look, fit_strokes, pick_look, polyline, render, to_input
from cnn_ocr.data.hershey import Glyph, letter_glyphs, symbol_glyphs
from cnn_ocr.data.layout import META, version_dir
from cnn_ocr.data.raw_store import save_npy_set, verify_folder, write_json

log = logging.getLogger(__name__)

FAMILIES = ("scribbles", "strokes", "shapes", "hatching", "overlapping_digits", "corrupted_digits", "letters",
            "symbols")
SPLITS = ("train", "val")


@dataclass(frozen=True)
class Negatives:
    """One split of negatives: uint8 model inputs (N, 28, 28) and the index in FAMILIES of each."""

    x: np.ndarray
    family: np.ndarray

    def of(self, name: str) -> np.ndarray:
        """The inputs of one family."""
        return self.x[self.family == FAMILIES.index(name)]


@dataclass(frozen=True)
class Sources:
    """What the digit-based and glyph families draw from: MNIST training digits and Hershey glyphs."""

    digits: np.ndarray
    letters: list[Glyph]
    symbols: list[Glyph]


def _glyph_painter(glyph: Glyph):
    def paint(draw, rng, pen):
        for stroke in fit_strokes(glyph.strokes, rng, pen.side):
            polyline(draw, stroke, pen)
    return paint


def _digit_canvas(digit: np.ndarray, rng: np.random.Generator, side: int) -> np.ndarray:
    """An MNIST digit (28x28, light on black) scaled up to fill most of a canvas, at a random place."""
    size = int(side * rng.uniform(0.55, 0.9))
    big = np.asarray(Image.fromarray(digit).resize((size, size), Image.Resampling.BILINEAR), np.float32)
    out = np.zeros((side, side), np.float32)
    top, left = rng.integers(0, side - size + 1, 2)
    out[top:top + size, left:left + size] = big
    return out


def _overlapping(src: Sources, rng: np.random.Generator, side: int) -> np.ndarray:
    picks = rng.choice(len(src.digits), int(rng.integers(2, 5)), replace=False)
    return np.max([_digit_canvas(src.digits[i], rng, side) for i in picks], axis=0)


def _corrupted(src: Sources, rng: np.random.Generator, side: int) -> np.ndarray:
    digit = src.digits[rng.integers(len(src.digits))].astype(np.float32)
    how = rng.integers(3)
    if how == 0:  # shuffled tiles
        tiles = [t for band in np.split(digit, 4, 0) for t in np.split(band, 4, 1)]
        order = rng.permutation(16)
        digit = np.block([[tiles[order[r * 4 + c]] for c in range(4)] for r in range(4)])
    elif how == 1:  # halves swapped and slid apart
        digit = np.roll(np.roll(digit, 14, 0), int(rng.integers(6, 14)) * (1 if rng.random() < 0.5 else -1), 1)
        digit[:, : int(rng.integers(0, 6))] = 0
    else:  # noise and heavy blur: a smudge
        digit = np.clip(digit + (rng.random((28, 28)) < rng.uniform(0.3, 0.5)) * 255.0, 0, 255)
        digit = np.asarray(Image.fromarray(digit.astype(np.uint8)).filter(ImageFilter.GaussianBlur(rng.uniform(2.5, 4.0))),
                           np.float32)
    return _digit_canvas(digit.astype(np.uint8), rng, side)


def _one(family: str, src: Sources, rng: np.random.Generator, p: NegativesParams) -> np.ndarray:
    """One drawing of `family`, as the grey image a user would send."""
    look = pick_look(rng, p.dark_on_light, p.photo)
    side, width = p.canvas_px, (p.pen_width[0], p.pen_width[1])
    if family in ("overlapping_digits", "corrupted_digits"):
        ink = (_overlapping if family == "overlapping_digits" else _corrupted)(src, rng, side)
        return apply_look(ink, rng, look)
    if family in ("letters", "symbols"):
        glyphs = src.letters if family == "letters" else src.symbols
        return render(_glyph_painter(glyphs[rng.integers(len(glyphs))]), rng, side, width, look)
    return render(shapes.PAINTERS[family], rng, side, width, look)


def generate(family: str, count: int, seed: int, p: NegativesParams, src: Sources) -> np.ndarray:
    """`count` model inputs of one family, from `seed` (deterministic)."""
    rng = np.random.default_rng([seed, FAMILIES.index(family)])
    out: list[np.ndarray] = []
    for _ in range(count * 4):
        image = to_input(_one(family, src, rng, p))
        if image is not None:
            out.append(image)
            if len(out) == count:
                break
    if len(out) < count:
        raise RuntimeError(f"negatives family {family}: only {len(out)} of {count} drawings survived preprocessing")
    return np.stack(out)


def build(p: NegativesParams, digits: np.ndarray, hershey_dir: Path | None = None) -> dict[str, Negatives]:
    """Both splits: {'train': ..., 'val': ...} from MNIST training digits `digits` (uint8, N x 28 x 28)."""
    kw = {} if hershey_dir is None else {"folder": hershey_dir}
    src = Sources(digits, letter_glyphs(**kw), symbol_glyphs(**kw))
    out = {}
    for i, (split, count) in enumerate((("train", p.train_per_family), ("val", p.val_per_family))):
        xs = [generate(f, count, p.seed * 2 + i, p, src) for f in FAMILIES]
        fam = np.concatenate([np.full(len(x), k, np.int64) for k, x in enumerate(xs)])
        out[split] = Negatives(np.concatenate(xs), fam)
    return out


def write_negatives(p: NegativesParams, data: DataParams, digits: np.ndarray) -> Path:
    """Generate and write the version `p.version` atomically under `data.processed_dir`; return its folder."""
    splits = build(p, digits)
    folder = version_dir(p.version, data)
    arrays = {f"{s}_{k}": getattr(splits[s], k) for s in SPLITS for k in ("x", "family")}
    with atomic_dir(folder) as tmp:
        files = save_npy_set(tmp, arrays)
        content_hash = hashlib.sha256("".join(f"{k}:{v}\n" for k, v in sorted(files.items())).encode()).hexdigest()
        counts = {s: np.bincount(splits[s].family, minlength=len(FAMILIES)).tolist() for s in SPLITS}
        write_json(tmp / META, {"name": p.version, "description": "generated not-a-digit drawings",
                                "families": list(FAMILIES), "params": p.model_dump(mode="json"),
                                "files": files, "counts": counts, "content_hash": content_hash})
    log.info("wrote %s (%d train / %d val negatives)", p.version, len(splits["train"].x), len(splits["val"].x))
    return folder


def load_negatives(version: str, data: DataParams) -> dict[str, Negatives]:
    """Both splits of a written negatives version, after checking its files against their hashes."""
    folder = version_dir(version, data)
    verify_folder(folder, META)
    arr = {f.stem: np.load(f, allow_pickle=False) for f in folder.glob("*.npy")}
    return {s: Negatives(arr[f"{s}_x"], arr[f"{s}_family"]) for s in SPLITS}


def ensure_negatives(p: NegativesParams, data: DataParams) -> dict[str, Negatives]:
    """Load `p.version`, generating it first (from `p.source_version`'s training digits) when missing."""
    from cnn_ocr.data.versions import load_version

    if not (version_dir(p.version, data) / META).is_file():
        write_negatives(p, data, load_version(p.source_version, data).train_x)
    return load_negatives(p.version, data)
