"""The processed dataset versions by name, and where each one lives: shared by building and loading them."""

from __future__ import annotations

from pathlib import Path

from cnn_ocr.config import DataParams

VERSIONS = {
    "v2.0": "normalized, no augmentation",
    "v3.0": "augmented (v2.0 + random affine copies of the training split)",
}
META = "meta.json"


def version_dir(name: str, data: DataParams) -> Path:
    """Where a version lives: `<processed_dir>/<name>` for MNIST, `<processed_dir>/<dataset>/<name>` otherwise."""
    base = Path(data.processed_dir)
    return base / name if data.dataset == "mnist" else base / data.dataset / name
