"""Reading a row of digits: merging pieces of one digit, splitting touching digits, real MNIST strips."""

from __future__ import annotations

import numpy as np
import pytest

from cnn_ocr.preprocess import extract_ink
from cnn_ocr.segment import segment_digits


def crop(image: np.ndarray) -> np.ndarray:
    rows, cols = np.flatnonzero(image.any(1)), np.flatnonzero(image.any(0))
    return image[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def strip(digits: list[np.ndarray], gaps: list[int], rng: np.random.Generator, height: int = 40) -> np.ndarray:
    """Digits (cropped to their ink) side by side with the given gaps and random vertical offsets."""
    width = sum(d.shape[1] for d in digits) + sum(gaps) + 10
    out = np.zeros((height, width), np.uint8)
    x = 5
    for digit, gap in zip(digits, gaps, strict=True):
        y = int(rng.integers(0, height - digit.shape[0] + 1))
        region = out[y:y + digit.shape[0], x:x + digit.shape[1]]
        np.maximum(region, digit, out=region)
        x += digit.shape[1] + gap
    return out


def segments_of(white_on_black: np.ndarray, scale: float = 1.0):
    return segment_digits(extract_ink(255.0 - white_on_black.astype(np.float32), scale))


def test_blank_has_no_segments():
    assert segments_of(np.zeros((40, 200), np.uint8)) == []


def test_pieces_of_one_digit_are_merged():
    five = np.zeros((40, 40), np.uint8)
    five[8:11, 14:30] = 255      # the bar of a 5, not touching the body
    five[13:22, 14:17] = 255     # its left stem
    five[20:23, 14:28] = 255     # the belly's top
    five[22:32, 26:29] = 255
    five[30:33, 12:28] = 255
    four = np.zeros((40, 30), np.uint8)
    four[6:24, 6:9] = 255        # first stroke of a 4: down, then across
    four[21:24, 6:24] = 255
    four[4:19, 18:21] = 255      # second stroke, written in two pieces that miss the bar
    four[26:36, 18:21] = 255
    line = np.concatenate([five, np.zeros((40, 8), np.uint8), four], axis=1)
    segments = segments_of(line)
    assert len(segments) == 2
    assert segments[0].box[0] < segments[1].box[0]


def test_touching_digits_are_split(mnist_splits):
    x, y = mnist_splits.test_x, mnist_splits.test_y
    zero, one = crop(x[np.flatnonzero(y == 0)[0]]), crop(x[np.flatnonzero(y == 0)[1]])
    row = np.zeros((24, zero.shape[1] + one.shape[1] + 4), np.uint8)
    row[2:2 + zero.shape[0], 2:2 + zero.shape[1]] = zero
    start = 2 + zero.shape[1] - 2  # overlapping by 2 px: one connected component
    region = row[2:2 + one.shape[0], start:start + one.shape[1]]
    np.maximum(region, one, out=region)
    assert len(segments_of(row)) == 2


def test_specks_are_dropped_and_boxes_scale_back():
    line = np.zeros((40, 120), np.uint8)
    line[5:35, 20:26] = 255
    line[5:35, 80:86] = 255
    line[20:22, 50:52] = 255  # a speck between two "1"s
    segments = segments_of(line, scale=2.0)
    assert len(segments) == 2
    assert segments[0].box == (40, 10, 12, 60)


def test_far_too_many_marks_is_a_clear_error():
    from cnn_ocr.decode import ImageError

    dots = np.zeros((200, 200), np.uint8)
    for dy in range(2):
        for dx in range(2):
            dots[dy::5, dx::5] = 255  # 1,600 separate 2x2 marks
    with pytest.raises(ImageError):
        segment_digits(extract_ink(dots.astype(np.float32)), max_digits=8)


@pytest.mark.model
def test_mnist_strips_whole_string_accuracy(mnist_splits, service_model_dir):
    from app.model_store import load_model_dir

    model = load_model_dir(service_model_dir, threads=2, source="test")
    x, y = mnist_splits.test_x, mnist_splits.test_y
    rng = np.random.default_rng(7)
    n_strips, right, count_right, digits_right, digits_total = 1000, 0, 0, 0, 0
    for _ in range(n_strips):
        k = int(rng.integers(3, 7))
        idx = rng.choice(len(x), k, replace=False)
        line = strip([crop(x[i]) for i in idx], [int(rng.integers(2, 15)) for _ in idx], rng)
        segments = segments_of(line)
        truth = "".join(str(y[i]) for i in idx)
        digits_total += k
        if len(segments) != k:
            continue
        count_right += 1
        read = "".join(str(d) for d in model.probabilities(np.stack([s.image for s in segments])).argmax(1))
        right += read == truth
        digits_right += sum(a == b for a, b in zip(read, truth, strict=True))
    accuracy = right / n_strips
    print(f"\n/read on {n_strips} MNIST strips of 3-6 digits: whole-string accuracy {accuracy:.1%}, "
          f"digit count right {count_right / n_strips:.1%}, per-digit accuracy {digits_right / digits_total:.2%}")
    assert accuracy >= 0.95
