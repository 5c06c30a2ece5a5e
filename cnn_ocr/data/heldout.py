"""Held-out non-digits: families never used for training or for fitting a threshold, to measure how far
not-a-digit detection generalizes. Each is loaded separately and passes through the service's preprocessing.

- `fashion`: Fashion-MNIST test images (Debian `dataset-fashion-mnist`), as 28x28 uploads.
- `handwriting`: letters (ambiguous ones left out) in the handwriting TTF fonts of Debian `fonts-dkg-handwriting`.
- `pictograms`: Font Awesome icons (Debian `fonts-font-awesome`): objects and pictograms, unlike any negative.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cnn_ocr.data.drawing import apply_look, empty_batch, pick_look, to_input
from cnn_ocr.data.hershey import AMBIGUOUS_LETTERS
from cnn_ocr.data.idx import read_idx

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
HANDWRITING_DIR = Path("/usr/share/fonts/truetype/fifthhorseman")
AWESOME_TTF = Path("/usr/share/fonts/truetype/font-awesome/fontawesome-webfont.ttf")
AWESOME_CSS = Path("/usr/share/fonts-font-awesome/css/font-awesome.css")
CANVAS_PX = 280
HANDWRITING_LETTERS = "".join(c for c in string.ascii_letters if c not in AMBIGUOUS_LETTERS)


@dataclass(frozen=True)
class Family:
    """A held-out family: the model inputs, and how many images the preprocessing refused before the model."""

    x: np.ndarray
    refused_before_model: int

    @property
    def total(self) -> int:
        """Images drawn, refused or not."""
        return len(self.x) + self.refused_before_model


class HeldoutError(FileNotFoundError):
    """A held-out family's files are missing (its Debian package is not installed)."""


def _need(path: Path, package: str) -> Path:
    if not path.exists():
        raise HeldoutError(f"{path} not found: install the Debian package {package}")
    return path


def _prepared(grays: list[np.ndarray]) -> Family:
    kept = [img for img in (to_input(g) for g in grays) if img is not None]
    return Family(np.stack(kept) if kept else empty_batch(), len(grays) - len(kept))


def fashion(n: int, seed: int = 0, folder: Path = FASHION_DIR) -> Family:
    """`n` Fashion-MNIST test images (seeded choice) through the preprocessing."""
    images = read_idx(_need(Path(folder) / "t10k-images-idx3-ubyte.gz", "dataset-fashion-mnist"))
    idx = np.sort(np.random.default_rng(seed).choice(len(images), min(n, len(images)), replace=False))
    return _prepared([images[i].astype(np.float32) for i in idx])


def _glyph_canvas(font: ImageFont.FreeTypeFont, text: str, rng: np.random.Generator) -> np.ndarray:
    """`text` in `font`, light on black, fitted into a canvas at a random size, place and slight tilt."""
    left, top, right, bottom = font.getbbox(text)
    tile = Image.new("L", (right - left + 8, bottom - top + 8), 0)
    ImageDraw.Draw(tile).text((4 - left, 4 - top), text, fill=255, font=font)
    tile = tile.rotate(rng.uniform(-10, 10), resample=Image.Resampling.BILINEAR, expand=True)
    scale = rng.uniform(0.45, 0.8) * CANVAS_PX / max(tile.size)
    tile = tile.resize((max(1, round(tile.width * scale)), max(1, round(tile.height * scale))), Image.Resampling.BILINEAR)
    canvas = Image.new("L", (CANVAS_PX, CANVAS_PX), 0)
    canvas.paste(tile, (int(rng.integers(0, CANVAS_PX - tile.width + 1)), int(rng.integers(0, CANVAS_PX - tile.height + 1))))
    return np.asarray(canvas, np.float32)


def _rendered(n: int, seed: int, fonts: list[ImageFont.FreeTypeFont], texts: list[str]) -> Family:
    rng = np.random.default_rng(seed)
    grays = []
    for _ in range(n):
        ink = _glyph_canvas(fonts[rng.integers(len(fonts))], texts[rng.integers(len(texts))], rng)
        grays.append(apply_look(ink, rng, pick_look(rng, 0.5, 0.2)))
    return _prepared(grays)


def handwriting(n: int, seed: int = 0, folder: Path = HANDWRITING_DIR) -> Family:
    """`n` letters (HANDWRITING_LETTERS) in the dkg handwriting fonts, drawn on a canvas and preprocessed."""
    paths = sorted(_need(Path(folder), "fonts-dkg-handwriting").glob("dkg*.ttf"))
    if not paths:
        raise HeldoutError(f"no dkg*.ttf in {folder}: install the Debian package fonts-dkg-handwriting")
    fonts = [ImageFont.truetype(str(p), 160) for p in paths]
    return _rendered(n, seed, fonts, list(HANDWRITING_LETTERS))


def awesome_codepoints(css: Path = AWESOME_CSS) -> list[str]:
    """The icon characters Font Awesome's stylesheet names (one per distinct codepoint)."""
    text = _need(css, "fonts-font-awesome").read_text()
    return sorted({chr(int(code, 16)) for code in re.findall(r'content:\s*"\\(f[0-9a-f]{3})"', text)})


def pictograms(n: int, seed: int = 0, ttf: Path = AWESOME_TTF, css: Path = AWESOME_CSS) -> Family:
    """`n` Font Awesome pictograms (seeded), drawn on a canvas and preprocessed."""
    font = ImageFont.truetype(str(_need(ttf, "fonts-font-awesome")), 160)
    return _rendered(n, seed, [font], awesome_codepoints(css))


LOADERS: dict[str, Callable[..., Family]] = {"fashion": fashion, "handwriting": handwriting,
                                                 "pictograms": pictograms}


def load_heldout(n: int, seed: int = 0) -> dict[str, Family]:
    """Every held-out family, `n` images each (fewer when the preprocessing refuses some before the model)."""
    return {name: load(n, seed) for name, load in LOADERS.items()}
