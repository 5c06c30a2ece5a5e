"""Data tests on the real MNIST: shapes, labels, class counts, split hygiene, versions, determinism."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from cnn_ocr.data import data_version, load_version
from cnn_ocr.data.prepare import prepare
from cnn_ocr.data.raw_store import load_raw

pytestmark = pytest.mark.data

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def _digests(images: np.ndarray) -> set[bytes]:
    return {hashlib.sha1(img.tobytes()).digest() for img in images}


def test_raw_mnist_shapes_labels_and_class_counts(prepared_data):
    raw = load_raw(prepared_data.raw_dir, "mnist")
    assert raw.train_x.shape == (60000, 28, 28) and raw.train_x.dtype == np.uint8
    assert raw.test_x.shape == (10000, 28, 28) and raw.test_x.dtype == np.uint8
    assert set(np.unique(raw.train_y)) == set(range(10)) == set(np.unique(raw.test_y))
    assert np.bincount(raw.train_y, minlength=10).tolist() == MNIST_TRAIN_COUNTS
    assert np.bincount(raw.test_y, minlength=10).tolist() == MNIST_TEST_COUNTS
    assert raw.train_x.max() == 255 and raw.train_x.min() == 0


def test_v2_splits_sizes_and_no_train_test_overlap(mnist_splits):
    s = mnist_splits
    assert (len(s.train_x), len(s.val_x), len(s.test_x)) == (55000, 5000, 10000)
    assert s.train_y.dtype == np.int64 and s.train_x.dtype == np.uint8
    train = _digests(s.train_x)
    shared_test = len(train & _digests(s.test_x))
    shared_val = len(train & _digests(s.val_x))
    print(f"exact duplicates shared with train: test={shared_test}, val={shared_val}")
    # MNIST has no byte-identical image in both its train and test sets; the val split is carved disjointly.
    assert shared_test == 0
    assert shared_val == 0
    assert (np.bincount(s.train_y, minlength=10) + np.bincount(s.val_y, minlength=10)).tolist() == MNIST_TRAIN_COUNTS


def test_v3_contains_v2_training_images_plus_augmented_copies(prepared_data, mnist_splits):
    v3 = load_version("v3.0", prepared_data)
    n = len(mnist_splits.train_x)
    copies = v3.meta["augment"]["copies"]
    assert len(v3.train_x) == n * (copies + 1)
    np.testing.assert_array_equal(v3.train_x[:n], mnist_splits.train_x)
    np.testing.assert_array_equal(v3.train_y, np.tile(mnist_splits.train_y, copies + 1))
    aug = v3.train_x[n : 2 * n]
    changed = np.mean(np.any(aug != mnist_splits.train_x, axis=(1, 2)))
    assert changed > 0.99, "augmented copies should differ from their originals"
    # Digits stay digits: ink mass is preserved within a loose factor.
    ratio = aug.reshape(n, -1).sum(1) / np.maximum(mnist_splits.train_x.reshape(n, -1).sum(1), 1)
    assert 0.6 < np.median(ratio) < 1.4
    np.testing.assert_array_equal(v3.val_x, mnist_splits.val_x)
    np.testing.assert_array_equal(v3.test_x, mnist_splits.test_x)


def test_prepare_is_deterministic_and_param_sensitive(prepared_data, tmp_path):
    one_copy = prepared_data.augment.model_copy(update={"copies": 1})
    a = prepared_data.model_copy(update={"processed_dir": tmp_path / "a", "augment": one_copy})
    b = a.model_copy(update={"processed_dir": tmp_path / "b"})
    c = a.model_copy(update={"processed_dir": tmp_path / "c", "split_seed": a.split_seed + 1})
    for p in (a, b, c):
        prepare(p)
    for version in ("v2.0", "v3.0"):
        ha, hb, hc = (data_version(version, p).content_hash for p in (a, b, c))
        assert ha == hb, f"{version} differs between two identical runs"
        assert ha != hc, f"{version} did not change with the split seed"
        files_a = sorted((tmp_path / "a" / version).iterdir())
        for f in files_a:
            assert f.read_bytes() == (tmp_path / "b" / version / f.name).read_bytes(), f.name


def test_project_versions_match_their_checksums(prepared_data):
    for version in ("v2.0", "v3.0"):
        ver = data_version(version, prepared_data, verify=True)
        meta = json.loads((ver.path / "meta.json").read_text())
        assert meta["content_hash"] == ver.content_hash
        assert ver.as_tags()["data_version"] == version


def test_feedback_version_flows_into_training_data(prepared_data, tmp_path):
    """A correction stored by the service becomes a data version that training includes through a param."""
    from cnn_ocr.data import load_training_data
    from cnn_ocr.feedback import FeedbackStore, PredictionRecord, export_feedback

    processed = tmp_path / "processed"
    processed.mkdir()
    (processed / "v2.0").symlink_to((prepared_data.processed_dir / "v2.0").resolve())
    image = np.zeros((28, 28), np.uint8)
    image[6:22, 12:16] = 255
    store = FeedbackStore(tmp_path / "feedback.db")
    store.record_predictions([PredictionRecord("p1", "digit", image, 7, 0.6, "ok", "OCR-Production-Model", "3")])
    store.add_feedback("p1", 1)
    store.close()
    name, _, count = export_feedback(tmp_path / "feedback.db", processed)
    assert (name, count) == ("feedback-1", 1)

    data = prepared_data.model_copy(update={"processed_dir": processed, "extra_train_versions": [name]})
    plain = load_version("v2.0", data)
    combined = load_training_data("v2.0", data)
    assert len(combined.train_x) == len(plain.train_x) + 1
    np.testing.assert_array_equal(combined.train_x[-1], image)
    assert combined.train_y[-1] == 1
    assert combined.version.name == "v2.0+feedback-1"
    assert combined.version.content_hash != plain.version.content_hash
    np.testing.assert_array_equal(combined.test_x, plain.test_x)
