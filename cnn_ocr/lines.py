"""A written line as the line recognizer's input, and its CTC output back to digits with boxes.

The same `line_input` turns a synthetic training string and the ink of a photo into the network's input:
the ink cropped to its bounding box, scaled to `INK_HEIGHT` rows keeping the aspect ratio, padded to
`LINE_HEIGHT` rows and by `SIDE_PAD` columns on each side. The network emits one frame per `STRIDE`
columns; greedy CTC decoding keeps the frames where a digit is emitted, and each digit's box spans the
columns between the midpoints to its neighbours' emissions, tightened to the ink there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LINE_HEIGHT = 32
INK_HEIGHT = 24
SIDE_PAD = 8
STRIDE = 4
BLANK = 10  # CTC blank: the class after the ten digits
MAX_WIDTH = 1024


@dataclass(frozen=True)
class LineImage:
    """The network's input (uint8 (32, W), light ink on black) and how it maps back to the source."""

    image: np.ndarray
    x0: int  # source column of the crop's left edge
    y0: int
    ratio: float  # input pixels per source pixel


@dataclass(frozen=True)
class LineDigit:
    """One recognized digit: value, confidence and box (x, y, w, h) in the source's pixels."""

    digit: int
    confidence: float
    box: tuple[int, int, int, int]


def line_input(ink: np.ndarray) -> LineImage | None:
    """Light-on-black ink (float or uint8 (H, W)) -> the recognizer's input; None when there is no ink."""
    from PIL import Image

    rows, cols = np.flatnonzero(ink.max(1) > 0), np.flatnonzero(ink.max(0) > 0)
    if rows.size == 0:
        return None
    crop = np.asarray(ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1], np.float32)
    ratio = INK_HEIGHT / crop.shape[0]
    width = int(np.clip(round(crop.shape[1] * ratio), 1, MAX_WIDTH - 2 * SIDE_PAD))
    small = Image.fromarray(crop, mode="F").resize((width, INK_HEIGHT), Image.Resampling.BILINEAR)
    out = np.zeros((LINE_HEIGHT, width + 2 * SIDE_PAD), np.uint8)
    top = (LINE_HEIGHT - INK_HEIGHT) // 2
    out[top:top + INK_HEIGHT, SIDE_PAD:SIDE_PAD + width] = np.clip(np.rint(np.asarray(small)), 0, 255)
    return LineImage(out, int(cols[0]), int(rows[0]), width / crop.shape[1])


def to_network(images: list[np.ndarray]) -> np.ndarray:
    """Line inputs of any widths -> float32 (N, 1, 32, Wmax), MNIST-normalized, zero ink padded right."""
    from cnn_ocr.preprocess import MNIST_MEAN, MNIST_STD

    width = max(i.shape[1] for i in images)
    width += -width % STRIDE
    batch = np.zeros((len(images), 1, LINE_HEIGHT, width), np.float32)
    for k, img in enumerate(images):
        batch[k, 0, :, :img.shape[1]] = img
    return (batch / np.float32(255.0) - np.float32(MNIST_MEAN)) / np.float32(MNIST_STD)


def greedy_decode(probs: np.ndarray) -> list[tuple[int, float, int]]:
    """One line's frame probabilities (T, 11) -> [(digit, confidence, centre frame)] by greedy CTC."""
    best = probs.argmax(1)
    out: list[tuple[int, float, int]] = []
    t = 0
    while t < len(best):
        end = t
        while end + 1 < len(best) and best[end + 1] == best[t]:
            end += 1
        if best[t] != BLANK:
            run = probs[t:end + 1, best[t]]
            out.append((int(best[t]), float(run.max()), t + int(run.argmax())))
        t = end + 1
    return out


def digits_with_boxes(probs: np.ndarray, line: LineImage, ink: np.ndarray, scale: float = 1.0
                      ) -> list[LineDigit]:
    """Decoded digits of one line with their boxes in the source's pixels (times `scale`)."""
    found = greedy_decode(probs)
    centres = [(c + 0.5) * STRIDE for _, _, c in found]
    edges = [0.0] + [(a + b) / 2 for a, b in zip(centres, centres[1:], strict=False)] + [float(line.image.shape[1])]
    out = []
    for i, (digit, conf, _) in enumerate(found):
        x0 = line.x0 + max(0.0, (edges[i] - SIDE_PAD) / line.ratio)
        x1 = line.x0 + max(0.0, (edges[i + 1] - SIDE_PAD) / line.ratio)
        xa, xb = int(np.floor(x0)), max(int(np.ceil(x1)), int(np.floor(x0)) + 1)
        part = ink[:, xa:xb]
        rows, cols = np.flatnonzero(part.max(1) > 0) if part.size else [], np.flatnonzero(part.max(0) > 0) \
            if part.size else []
        if len(rows):
            xa, xb, ya, yb = xa + cols[0], xa + cols[-1] + 1, rows[0], rows[-1] + 1
        else:
            ya, yb = line.y0, line.y0 + round(INK_HEIGHT / line.ratio)
        out.append(LineDigit(digit, conf, (round(xa * scale), round(ya * scale), round((xb - xa) * scale),
                                           round((yb - ya) * scale))))
    return out
