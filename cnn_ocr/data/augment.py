"""Random affine (rotation, shift, scale, shear) and optional elastic distortion of 28x28 digits."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage

from cnn_ocr.config import AugmentParams

_CENTRE = np.array([13.5, 13.5])


def _affine_matrix(rng: np.random.Generator, p: AugmentParams) -> tuple[np.ndarray, np.ndarray]:
    """Draw one transform; return (matrix, offset) mapping output to input coordinates (row, col)."""
    theta = np.deg2rad(rng.uniform(-p.rotation_deg, p.rotation_deg))
    shear = np.tan(np.deg2rad(rng.uniform(-p.shear_deg, p.shear_deg)))
    scale = rng.uniform(p.scale_min, p.scale_max)
    shift = rng.uniform(-p.shift_px, p.shift_px, size=2)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    forward = rot @ np.array([[1.0, 0.0], [shear, 1.0]]) * scale
    inverse = np.linalg.inv(forward)
    return inverse, _CENTRE - inverse @ (_CENTRE + shift)


def _elastic(img: np.ndarray, rng: np.random.Generator, alpha: float, sigma: float) -> np.ndarray:
    dx = ndimage.gaussian_filter(rng.uniform(-1, 1, img.shape), sigma) * alpha
    dy = ndimage.gaussian_filter(rng.uniform(-1, 1, img.shape), sigma) * alpha
    rows, cols = np.meshgrid(np.arange(28), np.arange(28), indexing="ij")
    return ndimage.map_coordinates(img, [rows + dy, cols + dx], order=1, mode="constant")


def augment_images(images: np.ndarray, params: AugmentParams, seed: int,
                   on_progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Return one randomly transformed copy of each uint8 (N, 28, 28) image, deterministic for `seed`."""
    rng = np.random.default_rng(seed)
    out = np.empty_like(images)
    n = len(images)
    for i in range(n):
        matrix, offset = _affine_matrix(rng, params)
        img = ndimage.affine_transform(images[i].astype(np.float32), matrix, offset, order=1, mode="constant")
        if params.elastic:
            img = _elastic(img, rng, params.elastic_alpha, params.elastic_sigma)
        out[i] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
        if on_progress is not None and (i + 1) % 5000 == 0:
            on_progress(i + 1, n)
    if on_progress is not None:
        on_progress(n, n)
    return out
