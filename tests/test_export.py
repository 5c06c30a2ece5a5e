"""ONNX export: the file contract, temperature calibration, ONNX Runtime parity for every family, loud failure."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cnn_ocr import export
from cnn_ocr.config import load_params
from cnn_ocr.models import build
from cnn_ocr.preprocess import to_model_input

SPEC_KEYS = {"format_version", "input_name", "output_name", "labels", "temperature", "preprocessing", "model"}
MODEL_KEYS = {"name", "version", "family", "run_id", "alias", "test_accuracy", "data_version", "trained_at"}


def _quick_torch(family: str, splits, steps: int = 30):
    """A CNN trained for a few Adam steps on the tiny slice (enough to be far from uniform)."""
    import torch

    params = load_params(overrides=["models.improved_cnn.conv_filters=[8, 8, 16, 16]",
                                    "models.improved_cnn.dense_units=[32, 16]"])
    torch.manual_seed(0)
    net = build(family, getattr(params.models, family))
    x, y = torch.from_numpy(to_model_input(splits.train_x)), torch.from_numpy(splits.train_y)
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    net.train()
    for i in range(steps):
        idx = slice((i * 64) % 600, (i * 64) % 600 + 64)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
        opt.step()
    return net.eval()


def _fitted_svm(splits, **overrides):
    params = load_params()
    model = build("svm", params.models.svm.model_copy(update=overrides))
    flat = lambda a: to_model_input(a).reshape(len(a), -1)  # noqa: E731
    model.fit(flat(splits.train_x), splits.train_y)
    model.calibrate(flat(splits.val_x), splits.val_y)
    return model


def _ort(path, images):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(["logits"], {"input": to_model_input(images)})[0]


@pytest.mark.parametrize("family", ["base_cnn", "improved_cnn"])
def test_cnn_export_meets_the_file_contract(family, tiny_splits, tmp_path):
    import onnx

    net = _quick_torch(family, tiny_splits)
    block = {"run_id": "abc", "test_accuracy": 0.5, "data_version": "v2.0", "name": "OCR-Production-Model"}
    res = export.export_model(net, family, val=(tiny_splits.val_x, tiny_splits.val_y),
                              test_images=tiny_splits.test_x, dest=tmp_path / "out", model_block=block)
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["model.onnx", "spec.json"]  # one self-contained file, no external weights
    model = onnx.load(str(tmp_path / "out" / "model.onnx"))
    assert {o.domain: o.version for o in model.opset_import}[""] == 17
    (inp,), (out,) = model.graph.input, model.graph.output
    assert (inp.name, out.name) == ("input", "logits")
    assert inp.type.tensor_type.shape.dim[0].dim_param  # symbolic (dynamic) batch axis
    assert [d.dim_value for d in inp.type.tensor_type.shape.dim[1:]] == [1, 28, 28]
    for batch in (1, 7):
        assert _ort(tmp_path / "out" / "model.onnx", tiny_splits.test_x[:batch]).shape == (batch, 10)

    spec = json.loads((tmp_path / "out" / "spec.json").read_text())
    assert set(spec) == SPEC_KEYS and set(spec["model"]) == MODEL_KEYS
    assert spec["labels"] == list(range(10)) and spec["format_version"] == 1
    assert spec["model"]["family"] == family and spec["model"]["run_id"] == "abc"
    assert spec["preprocessing"]["mean"] == 0.1307 and spec["preprocessing"]["std"] == 0.3081
    assert spec["temperature"] == pytest.approx(res.temperature) and res.temperature > 0
    assert res.val_nll_after <= res.val_nll_before + 1e-9  # the fitted temperature never hurts validation NLL
    assert res.parity.ok and res.parity.n_images == len(tiny_splits.test_x)
    assert res.parity.max_abs_diff < 1e-4 and res.parity.mismatched_predictions == 0


@pytest.mark.parametrize("overrides", [{}, {"scaling": "standard", "pca_components": 20, "pca_whiten": True},
                                       {"scaling": "minmax", "gamma": "scale"}])
def test_svm_onnx_graph_reproduces_the_calibrated_probabilities(overrides, tiny_splits, tmp_path):
    import onnx

    svm = _fitted_svm(tiny_splits, **overrides)
    res = export.export_model(svm, "svm", val=(tiny_splits.val_x, tiny_splits.val_y), test_images=tiny_splits.test_x,
                              dest=tmp_path / "svm", model_block={})
    assert res.temperature == 1.0  # the SVM is calibrated inside the graph
    logp = _ort(tmp_path / "svm" / "model.onnx", tiny_splits.test_x)
    proba = np.exp(logp.astype(np.float64))
    expected = svm.predict_proba(to_model_input(tiny_splits.test_x).reshape(len(tiny_splits.test_x), -1))
    np.testing.assert_allclose(proba, expected, atol=1e-6)
    assert (proba.argmax(1) == svm.predict(to_model_input(tiny_splits.test_x).reshape(-1, 784))).all()
    model = onnx.load(str(tmp_path / "svm" / "model.onnx"))
    assert {n.domain for n in model.graph.node} <= {""}  # standard operators only


def test_parity_mismatch_fails_loudly_and_leaves_no_files(tiny_splits, tmp_path, monkeypatch):
    net = _quick_torch("base_cnn", tiny_splits, steps=5)
    real = export.onnx_probabilities

    def drifted(path, images, temperature):
        p = real(path, images, temperature)
        p[:, 0] += 1e-3  # what a wrong graph or a preprocessing drift would look like
        return p

    monkeypatch.setattr(export, "onnx_probabilities", drifted)
    with pytest.raises(export.ExportError, match="parity failed"):
        export.export_model(net, "base_cnn", val=(tiny_splits.val_x, tiny_splits.val_y),
                            test_images=tiny_splits.test_x, dest=tmp_path / "out", model_block={})
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == []


def test_parity_detects_a_different_model(tiny_splits, tmp_path):
    a = _quick_torch("base_cnn", tiny_splits, steps=5)
    b = _quick_torch("base_cnn", tiny_splits, steps=25)
    path = export.export_onnx(a, "base_cnn", tmp_path / "a.onnx")
    with pytest.raises(export.ExportError, match="different predictions|max"):
        export.check_parity(path, b, "base_cnn", tiny_splits.test_x, temperature=1.0)


def test_unsupported_model_is_a_clear_error(tmp_path):
    with pytest.raises(export.ExportError, match="unknown model family"):
        export.export_onnx(object(), "resnet", tmp_path / "x.onnx")
    with pytest.raises(export.ExportError, match="CalibratedSVM"):
        export.export_onnx(object(), "svm", tmp_path / "x.onnx")
