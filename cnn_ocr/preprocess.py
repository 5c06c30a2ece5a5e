"""The one preprocessing path from pixels to the model's input tensor.

Training data, canvas drawings and uploaded photos all end as a 28x28 uint8 image in MNIST's
convention (white ink on black, digit centred by centre of mass) and then go through `to_model_input`.
The normalization constants are defined here and nowhere else.
"""

from __future__ import annotations

import numpy as np

IMAGE_SIZE = 28
# Mean and std of MNIST's 60k training pixels scaled to [0, 1].
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081


def to_model_input(images: np.ndarray) -> np.ndarray:
    """uint8 images (N, 28, 28) or (28, 28) -> float32 (N, 1, 28, 28), normalized with MNIST's mean/std."""
    arr = np.asarray(images)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"expected images of shape (N, 28, 28), got {arr.shape}")
    out = arr.astype(np.float32) * np.float32(1 / 255.0)
    out -= np.float32(MNIST_MEAN)
    out *= np.float32(1 / MNIST_STD)
    return out[:, None]


def preprocessing_spec() -> dict:
    """Description of the input contract, stored with every exported model."""
    return {
        "image_size": IMAGE_SIZE,
        "layout": "NCHW",
        "ink": "white-on-black",
        "scale": 1 / 255.0,
        "mean": MNIST_MEAN,
        "std": MNIST_STD,
        "recipe": "crop to ink, longer side to 20 px, centre of mass at (14, 14) in 28x28",
    }
