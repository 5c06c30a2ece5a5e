"""Training the line recognizer with CTC on synthetic strings of MNIST digits.

A string is 1-`max_digits` digits composed like handwriting (`cnn_ocr.data.photos.compose_line`): random
spacing from overlapping strokes to wide gaps, varying size, baselines from steady to wandering; it goes through the same
`line_input` as a line of a photo. Training uses MNIST training digits; `string_accuracy` is measured on
strings of test digits.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from cnn_ocr.data.photos import compose_line
from cnn_ocr.lines import STRIDE, line_input, to_network
from cnn_ocr.photo_params import CrnnParams

log = logging.getLogger(__name__)

GAPS = (-0.25, 0.5)  # digit heights: overlapping .. wide
HEIGHTS = (28, 64)
BASELINES = (0.05, 0.5)  # how far (digit heights) each digit's baseline may wander


@dataclass(frozen=True)
class Strings:
    """Synthetic lines (uint8 (32, W_i)) and their texts."""

    images: list[np.ndarray]
    texts: list[str]


def synthetic_strings(x: np.ndarray, y: np.ndarray, n: int, max_digits: int, rng: np.random.Generator) -> Strings:
    """`n` strings of 1-`max_digits` digits drawn from (x, y), as the recognizer sees lines."""
    images, texts = [], []
    while len(images) < n:
        k = int(rng.integers(1, max_digits + 1))
        idx = rng.integers(0, len(x), k)
        height = int(rng.integers(*HEIGHTS))
        alpha, _ = compose_line([x[i] for i in idx], height, rng.uniform(*GAPS, k), rng, rng.uniform(*BASELINES))
        line = line_input(alpha * 255.0)
        if line is None:
            continue
        images.append(line.image)
        texts.append("".join(str(int(y[i])) for i in idx))
    return Strings(images, texts)


def _batch(strings: Strings, idx: np.ndarray):
    import torch

    images = [strings.images[i] for i in idx]
    x = torch.from_numpy(to_network(images))
    targets = torch.tensor([int(c) for i in idx for c in strings.texts[i]], dtype=torch.long)
    target_lengths = torch.tensor([len(strings.texts[i]) for i in idx], dtype=torch.long)
    input_lengths = torch.tensor([img.shape[1] // STRIDE for img in images], dtype=torch.long)
    return x, targets, input_lengths, target_lengths


def train_crnn(params: CrnnParams, train_x: np.ndarray, train_y: np.ndarray, steps: int | None = None):
    """A CRNN trained with CTC for `steps` (default params.steps) batches; returns (model, last losses)."""
    import torch
    import torch.nn.functional as F

    from cnn_ocr.models.crnn import build

    rng = np.random.default_rng(params.seed)
    torch.manual_seed(params.seed)
    torch.set_num_threads(params.threads)
    strings = synthetic_strings(train_x, train_y, params.train_strings, params.max_digits, rng)
    model = build(params)
    steps = steps or params.steps
    opt = torch.optim.Adam(model.parameters(), params.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, params.lr, total_steps=steps, pct_start=0.15)
    losses: list[float] = []
    model.train()
    for step in range(steps):
        x, targets, in_len, tgt_len = _batch(strings, rng.integers(0, len(strings.images), params.batch_size))
        log_probs = F.log_softmax(model(x), dim=2).permute(1, 0, 2)  # (T, N, C)
        loss = F.ctc_loss(log_probs, targets, in_len, tgt_len, blank=10, zero_infinity=True)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if step % 100 == 0:
            log.info("crnn step %d/%d: ctc loss %.3f", step, steps, float(np.mean(losses[-100:])))
    return model.eval(), losses


def frame_probabilities(model, images: list[np.ndarray]) -> list[np.ndarray]:
    """Per-line softmax frames (T_i, 11) from the PyTorch model."""
    import torch

    with torch.no_grad():
        logits = model(torch.from_numpy(to_network(images))).softmax(2).numpy()
    return [logits[i, :img.shape[1] // STRIDE] for i, img in enumerate(images)]


def string_accuracy(texts: list[str], predicted: list[str]) -> float:
    """Share of strings read exactly."""
    return float(np.mean([a == b for a, b in zip(texts, predicted, strict=True)])) if texts else 0.0
