"""Shared fixtures: the real MNIST data (prepared once), small real slices, and a throwaway MLflow store."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
# Params paths are relative to the project root, as for every `ocr` command.
os.chdir(ROOT)


@pytest.fixture(scope="session")
def project_params():
    """The project's params.yaml, validated."""
    from cnn_ocr.config import load_params

    return load_params(ROOT / "params.yaml")


@pytest.fixture(scope="session")
def prepared_data(project_params):
    """Fetch and prepare the real data into the project's data/ folder once per test session."""
    from cnn_ocr.data import ensure_prepared

    ensure_prepared(project_params.data)
    return project_params.data


@pytest.fixture(scope="session")
def mnist_splits(prepared_data):
    """The real v2.0 splits (55k / 5k / 10k)."""
    from cnn_ocr.data import load_version

    return load_version("v2.0", prepared_data)


def _stratified(x: np.ndarray, y: np.ndarray, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    idx = np.concatenate([np.flatnonzero(y == c)[:per_class] for c in range(10)])
    idx.sort()
    return x[idx], y[idx]


@pytest.fixture(scope="session")
def tiny_splits(mnist_splits):
    """A small stratified slice of the real data: 600 train / 200 val / 500 test, same version info."""
    tr = _stratified(mnist_splits.train_x, mnist_splits.train_y, 60)
    va = _stratified(mnist_splits.val_x, mnist_splits.val_y, 20)
    te = _stratified(mnist_splits.test_x, mnist_splits.test_y, 50)
    return replace(mnist_splits, train_x=tr[0], train_y=tr[1], val_x=va[0], val_y=va[1], test_x=te[0], test_y=te[1])


@pytest.fixture()
def tracking_uri(tmp_path, monkeypatch):
    """A fresh sqlite MLflow store in tmp_path. Sets MLFLOW_TRACKING_URI and, for the artifact root,
    OCR_MLFLOW_ARTIFACT_ROOT (tmp_path/artifacts)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("OCR_MLFLOW_ARTIFACT_ROOT", str(tmp_path / "artifacts"))
    return uri


@pytest.fixture(scope="session")
def fashion_dir() -> Path:
    """Debian's dataset-fashion-mnist IDX files (installed by `make test`)."""
    if not (FASHION_DIR / "train-images-idx3-ubyte.gz").is_file():
        if os.environ.get("CI"):
            pytest.fail(f"{FASHION_DIR} is missing: `make test` installs the Debian package dataset-fashion-mnist")
        pytest.skip("Debian package dataset-fashion-mnist is not installed")
    return FASHION_DIR


@pytest.fixture(scope="session")
def tiny_data_dir(tiny_splits, tmp_path_factory) -> Path:
    """`tiny_splits` written to disk as processed versions v2.0 and v3.0 (same arrays) in a temporary folder.

    For code that loads data by version, e.g. `ocr ... --set data.processed_dir=<this folder>`."""
    from cnn_ocr.data.prepare import write_version

    root = tmp_path_factory.mktemp("tiny-processed")
    arrays = {k: getattr(tiny_splits, k) for k in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")}
    for name in ("v2.0", "v3.0"):
        write_version(root / name, arrays, {"name": name, "description": f"tiny slice of {name}", "dataset": "mnist",
                                            "slice_of": tiny_splits.version.content_hash})
    return root


@pytest.fixture(scope="session")
def tiny_overrides(tiny_data_dir) -> list[str]:
    """`--set` overrides for fast CPU runs on `tiny_data_dir`: one short epoch, few latency probes."""
    return [f"data.processed_dir={tiny_data_dir}", "device=cpu", "models.evaluation.latency_runs=5",
            "models.evaluation.train_eval_samples=200", "models.base_cnn.epochs=1", "models.improved_cnn.epochs=1",
            "models.improved_cnn.epoch_samples=null", "models.improved_cnn.patience=null",
            "models.improved_cnn.conv_filters=[8, 8, 16, 16]", "models.improved_cnn.dense_units=[32, 16]",
            "select.latency_budget_ms=10000", "export.parity_images=300"]


# --- OCR service: a small real CNN exported to ONNX (trained once, cached under .cache/test-models/) ---
@pytest.fixture(scope="session")
def service_model_dir(mnist_splits) -> Path:
    """Folder with model.onnx + spec.json of a small CNN trained briefly on real MNIST."""
    from service_model import trained_model_dir

    return trained_model_dir(mnist_splits)


# --- a real PostgreSQL server (Debian package `postgresql`), one per test session ---
@pytest.fixture(scope="session")
def postgres():
    """A running throwaway PostgreSQL (`tests/pg_server.py`); skipped locally when it is not installed."""
    from pg_server import find_bin_dir, postgres_server

    bin_dir = find_bin_dir()
    if bin_dir is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is missing: `make test` installs the Debian package postgresql")
        pytest.skip("Debian package postgresql is not installed")
    with postgres_server(bin_dir) as server:
        yield server
