"""Data layer: fetching MNIST-format datasets, the raw cache, and the processed versions."""

from cnn_ocr.data.versions import DataVersion, Splits, data_version, ensure_prepared, load_training_data, load_version

__all__ = ["DataVersion", "Splits", "data_version", "ensure_prepared", "load_training_data", "load_version"]
