"""Shared fixtures: the real MNIST data (prepared once per session in a temporary folder), small real slices,
a throwaway MLflow store, the small served model and the service's clients.

Under CI (`CI` set, as `.ci/run` does) a missing tool fails its tests instead of skipping them.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parents[1]
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
# The raw MNIST download, verified by its manifest, is kept between sessions (never in the project's data/).
RAW_CACHE = ROOT / ".cache" / "test-data" / "raw"
# Params paths are relative to the project root, as for every `ocr` command.
os.chdir(ROOT)
# The same examples on every run and machine: a failure found once is found again.
settings.register_profile("project", derandomize=True, database=None, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("project")


def require_tool(present: bool, name: str, why: str) -> None:
    """Skip the calling test when `name` is missing, or fail it under CI, where every tool must be there.

    `why` says what provides the tool, e.g. "`make system-deps` installs the Debian package wrk"."""
    if present:
        return
    message = f"{name} is missing: {why}"
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def require_command(command: str, why: str) -> str:
    """The path of `command` on PATH (see `require_tool`)."""
    path = shutil.which(command)
    require_tool(path is not None, command, why)
    return str(path)


@pytest.fixture(scope="session")
def project_params():
    """The project's params.yaml, validated."""
    from cnn_ocr.config import load_params

    return load_params(ROOT / "params.yaml")


@pytest.fixture(scope="session")
def prepared_data(project_params, tmp_path_factory):
    """The real data prepared once per test session into a temporary folder (the raw download is cached)."""
    from cnn_ocr.data import ensure_prepared

    data = project_params.data.model_copy(update={"raw_dir": RAW_CACHE,
                                                  "processed_dir": tmp_path_factory.mktemp("processed")})
    ensure_prepared(data)
    return data


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
def wrk() -> str:
    """Path of Debian's wrk load generator."""
    return require_command("wrk", "`make system-deps` installs the Debian package wrk")


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's Chromium, driven by Playwright in the browser tests."""
    path = Path("/usr/bin/chromium")
    require_tool(path.is_file(), str(path), "`make system-deps` installs the Debian package chromium")
    return path


@pytest.fixture()
def page(browser, server):
    """A fresh desktop-sized page on the module's `server` fixture (base URL first), closed after the test."""
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    page.goto(server[0])
    yield page
    context.close()


@pytest.fixture(scope="session")
def browser(chromium):
    """One headless Chromium for the session's browser tests (each test opens its own context)."""
    from browser_env import launch

    with launch(chromium) as launched:
        yield launched


@pytest.fixture(scope="session")
def fashion_dir() -> Path:
    """Debian's dataset-fashion-mnist IDX files (installed by `make test`)."""
    require_tool((FASHION_DIR / "train-images-idx3-ubyte.gz").is_file(), str(FASHION_DIR),
                 "`make system-deps` installs the Debian package dataset-fashion-mnist")
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
            "select.latency_budget_ms=10000", "export.parity_images=300",
            # outlier exposure stays on, as in production, on a small negatives set written into tiny_data_dir
            "negatives.train_per_family=20", "negatives.val_per_family=10", "ood.heldout_samples=20",
            # one-epoch models on 600 digits miss the production refusal target (tests/test_select_ood.py gates it)
            "select.min_negative_refusal=0.0"]


# --- OCR service: a small real CNN exported to ONNX (trained once, cached under .cache/test-models/) ---
@pytest.fixture(scope="session")
def service_model_dir(mnist_splits) -> Path:
    """Folder with model.onnx + spec.json of a small CNN trained briefly on real MNIST."""
    from service_model import trained_model_dir

    return trained_model_dir(mnist_splits)


@pytest.fixture(scope="session")
def ood_model_dir(mnist_splits) -> Path:
    """Folder of a small CNN whose graph also outputs the not-a-digit score, its spec holding the threshold."""
    from service_model import ood_model_dir as build

    return build(mnist_splits)


@pytest.fixture()
def client(tmp_path, service_model_dir):
    """The real app in process (ONNX Runtime, SQLite feedback in tmp_path), admin token `service_client.TOKEN`."""
    from service_client import make_client

    with make_client(tmp_path, service_model_dir) as c:
        yield c


@pytest.fixture()
def models(tmp_path, service_model_dir) -> dict[str, Path]:
    """Model folders for swaps: versions 1 and 2, a NaN-producing and a corrupt model, and the symlink
    `current` (pointing at v1) that a deployment repoints."""
    from service_model import copy_model, corrupt_model, nan_model

    v1 = copy_model(service_model_dir, tmp_path / "v1", "1")
    v2 = copy_model(service_model_dir, tmp_path / "v2", "2")
    current = tmp_path / "current"
    current.symlink_to(v1)
    return {"v1": v1, "v2": v2, "current": current, "nan": nan_model(tmp_path / "nan", v1),
            "corrupt": corrupt_model(tmp_path / "corrupt", v1)}


# --- a real PostgreSQL server (Debian package `postgresql`), one per test session ---
@pytest.fixture(scope="session")
def postgres():
    """A running throwaway PostgreSQL (`tests/pg_server.py`); skipped locally when it is not installed."""
    from pg_server import find_bin_dir, postgres_server

    bin_dir = find_bin_dir()
    require_tool(bin_dir is not None, "PostgreSQL", "`make system-deps` installs the Debian package postgresql")
    with postgres_server(bin_dir) as server:
        yield server
