"""Photo cleanup: ink from a phone photo of paper, for the one preprocessing path.

Only photo-like input takes this path (`is_photo`: a large frame whose paper is not one flat value, as a
camera's noise and light make it); canvas drawings, MNIST-format 28x28 images and clean scans keep the
global-Otsu path of `cnn_ocr.preprocess` unchanged. On a photo:

1. shrink early to `WORK_SIDE` (a box filter: cheap, and it averages the sensor noise away);
2. flatten the light: the paper's level is estimated at a large scale (a grey closing of a coarse copy,
   which removes dark strokes but keeps a gradient or a shadow) and divided out;
3. remove ruled and grid lines: the tilt that makes rows of dark pixels line up best (projection profiles
   over a few degrees) finds them; a row that is dark across most of the frame is a line: its darkness is
   divided out, and what stays faint there is wiped unless a stroke crosses it (dark above and below);
4. threshold locally (Sauvola) and keep the components connected to strong ink (hysteresis, specks out).

The result has `Ink`'s fields in the frame's coordinates (scale includes the shrink), so boxes map back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

# A photo: at least this large, and fewer than FLAT_SHARE of its pixels on the single most common value.
MIN_LONG_SIDE = 400
MIN_SHORT_SIDE = 200
FLAT_SHARE = 0.3
WORK_SIDE = 1024
# Light: the coarse copy is this many times smaller; the closing spans this many coarse pixels.
BG_FACTOR = 8
BG_CLOSING = 9
# Lines: tilts tried (degrees) and a row is a line when this share of the frame's width is dark on it.
TILTS = np.linspace(-6.0, 6.0, 49)
LINE_DARK = 0.08
LINE_COVER = 0.4
STROKE_DARK = 0.2
# Sauvola: window (share of the shorter side), k and dynamic range R of the normalized image; darkness
# (1 - level / paper) a pixel needs to be strong ink, and the share of that its soft edge keeps.
SAUVOLA_WINDOW = 0.06
SAUVOLA_K = 0.1
SAUVOLA_R = 0.5
STRONG_DARK = 0.2
EDGE_SHARE = 0.35
MIN_EXTENT = 6
# Ink at least this dark (the 90th percentile of the strong pixels) and pieces with this share of the
# largest piece's strong pixels, as on the global path.
MIN_CORE = 40 / 255
SPECK_SHARE = 0.02
SLIVER = 2


def is_photo(gray: np.ndarray) -> bool:
    """True for photo-like input: a large frame whose background is not one flat value."""
    h, w = gray.shape
    if max(h, w) < MIN_LONG_SIDE or min(h, w) < MIN_SHORT_SIDE:
        return False
    sample = gray[::4, ::4]
    counts = np.bincount(np.rint(sample).astype(np.intp).ravel().clip(0, 255), minlength=256)
    return counts.max() < FLAT_SHARE * sample.size


def _block_mean(g: np.ndarray, k: int) -> np.ndarray:
    if k <= 1:
        return g
    h, w = g.shape[0] // k * k, g.shape[1] // k * k
    return g[:h, :w].reshape(h // k, k, w // k, k).mean(axis=(1, 3), dtype=np.float32)


def shrink(gray: np.ndarray) -> tuple[np.ndarray, float]:
    """The frame reduced (box filter) so that its longer side is at most WORK_SIDE, and the factor."""
    from PIL import Image

    k = max(gray.shape) / WORK_SIDE
    if k <= 1:
        return gray, 1.0
    size = (max(1, round(gray.shape[1] / k)), max(1, round(gray.shape[0] / k)))
    small = Image.fromarray(np.ascontiguousarray(gray, dtype=np.float32), mode="F").resize(size, Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32), gray.shape[1] / size[0]


def paper_level(g: np.ndarray) -> np.ndarray:
    """The paper's brightness at every pixel (light and shadow, not ink), same shape as `g`."""
    from PIL import Image
    from scipy import ndimage

    coarse = _block_mean(g, BG_FACTOR)
    closed = ndimage.grey_closing(coarse, size=(BG_CLOSING, BG_CLOSING), mode="nearest")
    closed = ndimage.uniform_filter(closed, 3, mode="nearest")
    # the coarse grid covers whole blocks; stretched over them, the leftover rows / columns take the edge
    h, w = closed.shape[0] * BG_FACTOR, closed.shape[1] * BG_FACTOR
    full = np.asarray(Image.fromarray(closed, mode="F").resize((w, h), Image.Resampling.BILINEAR), np.float32)
    full = np.pad(full, ((0, max(0, g.shape[0] - h)), (0, max(0, g.shape[1] - w))), mode="edge")
    return np.maximum(full[:g.shape[0], :g.shape[1]], 1.0)


def line_tilt(dark: np.ndarray) -> float:
    """The tilt (degrees) at which dark pixels line up best in rows: the ruling's, or the writing's."""
    ys, xs = np.nonzero(dark > LINE_DARK)
    if ys.size < 50:
        return 0.0
    if ys.size > 200_000:
        pick = np.random.default_rng(0).choice(ys.size, 200_000, replace=False)
        ys, xs = ys[pick], xs[pick]
    best, best_score = 0.0, -1.0
    for deg in TILTS:
        rows = np.rint(ys - xs * np.tan(np.radians(deg))).astype(np.intp)
        hist = np.bincount(rows - rows.min())
        score = float(np.square(hist, dtype=np.float64).sum())
        if score > best_score:
            best, best_score = float(deg), score
    return best


def remove_lines(dark: np.ndarray, deg: float) -> np.ndarray:
    """`dark` with the rows that are dark across the frame (at tilt `deg`) taken out, strokes on them kept."""
    from scipy import ndimage

    h, w = dark.shape
    shift = np.rint(np.arange(w) * np.tan(np.radians(deg))).astype(np.intp)  # row offset per column
    rows = np.arange(h)[:, None] - shift[None, :]  # each pixel's row in the straightened frame
    lo = int(rows.min())
    hits = np.bincount((rows - lo)[dark > LINE_DARK], minlength=h + int(rows.max()) - lo + 1)
    is_line = hits > LINE_COVER * w
    if not is_line.any():
        return dark
    is_line = ndimage.binary_dilation(is_line)  # a tilted line's pixels round into the neighbouring rows
    on_line = is_line[rows - lo]
    # a stroke crosses where the pixels just beyond the line's band, above and below, are ink
    reach = int(is_line.sum() // max(1, ndimage.label(is_line)[1])) + 2  # a line's thickness, and a bit
    wide = ndimage.maximum_filter1d(dark, 5, axis=1)
    above = np.pad(wide, ((reach, 0), (0, 0)), mode="edge")[:h]
    below = np.pad(wide, ((0, reach), (0, 0)), mode="edge")[reach:]
    crossing = (above > STROKE_DARK) & (below > STROKE_DARK)
    # on the line, divide the line's own darkness out (ink over a line: 1 - d = (1 - line) (1 - ink)), so a
    # stroke running along a line keeps its ink; what stays faint and crosses nothing is the line itself
    values = dark[on_line]
    strength = float(np.percentile(values[values > LINE_DARK], 75)) if (values > LINE_DARK).any() else 0.0
    ink = np.clip(1.0 - (1.0 - values) / max(1.0 - strength, 0.05), 0.0, 1.0)
    ink[(ink < STROKE_DARK) & ~crossing[on_line]] = 0.0
    out = dark.copy()
    out[on_line] = ink
    return out


def sauvola(level: np.ndarray, window: int) -> np.ndarray:
    """Sauvola's local threshold of a normalized image (paper ~1): True where a pixel is ink."""
    from scipy import ndimage

    mean = ndimage.uniform_filter(level, window, mode="nearest")
    sq = ndimage.uniform_filter(level * level, window, mode="nearest")
    std = np.sqrt(np.maximum(sq - mean * mean, 0.0))
    return level < mean * (1.0 + SAUVOLA_K * (std / SAUVOLA_R - 1.0))


def clean(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """A photo -> (darkness 0..1 with light flattened and lines removed, local ink mask, shrink factor)."""
    g, k = shrink(gray)
    dark = np.clip(1.0 - g / paper_level(g), 0.0, 1.0).astype(np.float32)
    deg = line_tilt(dark)
    dark = remove_lines(remove_lines(dark, deg).T, -deg).T  # rows, then columns (squared paper)
    window = max(15, int(SAUVOLA_WINDOW * min(dark.shape)) | 1)
    local = sauvola(1.0 - dark, window) & (dark > STROKE_DARK * EDGE_SHARE)
    return dark, local, k


@dataclass(frozen=True)
class PhotoInk:
    """A photo's ink (light on black, float32), the kept strokes, the strong pixels, why there is no digit
    (None when there is one) and the factor back to the original's pixels; `cnn_ocr.preprocess.Ink`'s fields."""

    image: np.ndarray
    mask: np.ndarray
    strong: np.ndarray
    no_digit: str | None
    scale: float


def photo_ink(gray: np.ndarray, scale: float, judge: Callable[[np.ndarray], str | None]) -> PhotoInk:
    """A photo's ink in the frame's coordinates; `judge` says why a mask of ink is no digit (a dot, ...)."""
    dark, local, k = clean(gray)
    scale *= k
    strong = local & (dark > STRONG_DARK)
    empty = np.zeros(dark.shape, bool)
    if strong.sum() < MIN_EXTENT:
        return PhotoInk(np.zeros_like(dark), empty, empty, "blank", scale)
    core = float(np.percentile(dark[strong], 90))
    if core < MIN_CORE:
        return PhotoInk(np.zeros_like(dark), empty, empty, "blank", scale)
    mask = _without_slivers(_connected_to_strong(local & (dark > EDGE_SHARE * core), strong))
    strong &= mask
    image = np.clip(dark * (255.0 / core), 0, 255).astype(np.float32)
    image[~mask] = 0
    return PhotoInk(image, mask, strong, _reason(mask, judge), scale)


def _connected_to_strong(candidate: np.ndarray, strong: np.ndarray) -> np.ndarray:
    """Hysteresis: the candidate pieces holding enough strong pixels (specks, a few, are dropped)."""
    from scipy import ndimage

    labels, n = ndimage.label(candidate, structure=np.ones((3, 3), bool))
    counts = np.bincount(labels[strong & candidate], minlength=n + 1)
    counts[0] = 0
    keep = counts >= max(2, SPECK_SHARE * counts.max())
    return keep[labels]


def _reason(mask: np.ndarray, judge: Callable[[np.ndarray], str | None]) -> str | None:
    """Why there is no digit: judged on the writing's own neighbourhood, not the whole frame."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if rows.size == 0:
        return "blank"
    h, w = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
    if max(h, w) < MIN_EXTENT:
        return "too small"
    return judge(mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1])


def _without_slivers(mask: np.ndarray) -> np.ndarray:
    """Drop pieces at most SLIVER pixels thick: what is left of a ruled line, never a pen stroke."""
    from scipy import ndimage

    labels, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    keep = np.zeros(n + 1, bool)
    for i, sl in enumerate(ndimage.find_objects(labels), start=1):
        keep[i] = min(sl[0].stop - sl[0].start, sl[1].stop - sl[1].start) > SLIVER
    return keep[labels]
