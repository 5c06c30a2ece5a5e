"""The detector at registration and the refusal gate of `ocr select`, on real small runs in a temporary
sqlite MLflow store: every registered family's graph outputs the not-a-digit score, its threshold is fitted
on the validation digits, and a candidate missing the refusal targets on the validation negatives is not
promoted."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cnn_ocr import registry, select
from cnn_ocr.config import load_params
from cnn_ocr.ood.registration import DIGITS_REFUSED, NEGATIVES_REFUSED
from cnn_ocr.ood.scores import DETECTORS
from cnn_ocr.registry import CHALLENGER, PRODUCTION, REGISTERED_MODEL


def _onnx(folder):
    import onnxruntime as ort

    return ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])


def test_refusal_gate_on_constructed_figures():
    sel = load_params().select.model_copy(update={"min_negative_refusal": 0.95, "max_digit_refusal": 0.01})
    ok = {"val_accuracy": 0.99, "inference_ms_per_image": 1.0, DIGITS_REFUSED: 0.01, NEGATIVES_REFUSED: 0.95}
    assert select.promotion_gate(ok, None, None, sel).passed
    few = select.promotion_gate({**ok, NEGATIVES_REFUSED: 0.9}, None, None, sel)
    assert not few.passed and "90.00% of the validation negatives" in few.reason
    many = select.promotion_gate({**ok, DIGITS_REFUSED: 0.02}, None, None, sel)
    assert not many.passed and "2.00% of the validation digits" in many.reason
    unscored = {k: v for k, v in ok.items() if k not in (DIGITS_REFUSED, NEGATIVES_REFUSED)}
    refused = select.promotion_gate(unscored, None, None, sel)
    assert not refused.passed and "select.unscored=allow" in refused.reason
    assert select.promotion_gate(unscored, None, None, sel.model_copy(update={"unscored": "allow"})).passed


def test_svm_graph_outputs_the_msp_of_its_calibrated_probabilities(tiny_splits, tmp_path):
    from cnn_ocr.export import export_model
    from cnn_ocr.models import build
    from cnn_ocr.ood.graph import Detector, onnx_scores
    from cnn_ocr.preprocess import to_model_input
    from cnn_ocr.spec import read_spec

    params = load_params()
    svm = build("svm", params.models.svm)
    x = to_model_input(tiny_splits.train_x).reshape(len(tiny_splits.train_x), -1)
    svm.fit(x, tiny_splits.train_y)
    svm.calibrate(to_model_input(tiny_splits.val_x).reshape(len(tiny_splits.val_x), -1), tiny_splits.val_y)
    res = export_model(svm, "svm", val=(tiny_splits.val_x, tiny_splits.val_y), test_images=tiny_splits.test_x,
                       dest=tmp_path / "svm", model_block={"name": "t"}, detector=Detector("msp", 0.0),
                       max_digit_refusal=0.05)
    spec = read_spec(tmp_path / "svm")
    assert spec.ood is not None and spec.ood.detector == "msp" and spec.ood.threshold == res.ood.threshold
    flat = to_model_input(tiny_splits.test_x).reshape(len(tiny_splits.test_x), -1)
    ours = onnx_scores(tmp_path / "svm" / "model.onnx", tiny_splits.test_x)
    assert np.allclose(ours, svm.predict_proba(flat).max(1), atol=1e-5)
    val_refused = np.mean(onnx_scores(tmp_path / "svm" / "model.onnx", tiny_splits.val_x) < spec.ood.threshold)
    assert 0.0 < spec.ood.threshold < 1.0 and val_refused <= 0.05


def test_ensemble_graph_outputs_the_members_mean_energy(tiny_splits, tmp_path):
    import torch

    from cnn_ocr.export import export_model
    from cnn_ocr.models import build
    from cnn_ocr.models.ensemble import Ensemble
    from cnn_ocr.ood.graph import Detector, onnx_scores
    from cnn_ocr.ood.scores import energy
    from cnn_ocr.preprocess import to_model_input

    params = load_params()
    members = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        members.append(build("base_cnn", params.models.base_cnn).eval())
    model = Ensemble(members).eval()
    res = export_model(model, "ensemble", val=(tiny_splits.val_x, tiny_splits.val_y), test_images=tiny_splits.test_x,
                       dest=tmp_path / "ens", model_block={"name": "t"}, detector=Detector("energy", 0.0),
                       max_digit_refusal=0.05)
    with torch.no_grad():
        x = torch.from_numpy(to_model_input(tiny_splits.test_x[:50]))
        expected = np.mean([energy(m(x).numpy()) for m in members], axis=0)
    assert res.ood is not None and res.ood.detector == "energy"
    assert np.allclose(onnx_scores(tmp_path / "ens" / "model.onnx", tiny_splits.test_x[:50]), expected, rtol=1e-4)


def test_views_move_the_digit_as_named_and_one_network_and_its_views_export_as_one_graph(tiny_splits, tmp_path):
    """A `View` shifts right / down by its (dx, dy) and the ensemble of a network and its views averages the
    probabilities over them (the views in one batch); exported with the MSP detector it matches PyTorch."""
    import torch

    from cnn_ocr.export import export_model
    from cnn_ocr.models import build
    from cnn_ocr.models.ensemble import Ensemble, with_views
    from cnn_ocr.ood.graph import Detector, onnx_scores
    from cnn_ocr.preprocess import to_model_input

    torch.manual_seed(0)
    net = build("base_cnn", load_params().models.base_cnn).eval()
    img = np.zeros((1, 28, 28), np.uint8)
    img[0, 8:20, 12:15] = 255
    img[0, 8:11, 12:18] = 255
    model = Ensemble(with_views([net], [(1, 0, 0), (0, -2, 0)])).eval()  # one pixel right, two pixels up
    moved = [img, np.roll(img, 1, axis=2), np.roll(img, -2, axis=1)]
    with torch.no_grad():
        expected = torch.stack([torch.softmax(net(torch.from_numpy(to_model_input(m))), 1) for m in moved]).mean(0)
        got = torch.softmax(model(torch.from_numpy(to_model_input(img))), 1)
        plain = torch.softmax(net(torch.from_numpy(to_model_input(img))), 1)
    assert torch.allclose(got, expected, atol=1e-5) and not torch.allclose(got, plain, atol=1e-3)

    rotated = Ensemble(with_views([net], [(0, 0, 6), (0, 0, -6)])).eval()
    res = export_model(rotated, "ensemble", val=(tiny_splits.val_x, tiny_splits.val_y),
                       test_images=tiny_splits.test_x, dest=tmp_path / "tta", model_block={"name": "t"},
                       detector=Detector("msp", 0.0), max_digit_refusal=0.05)
    assert res.parity.max_abs_diff <= 1e-4
    with torch.no_grad():
        x = torch.from_numpy(to_model_input(tiny_splits.test_x[:50]))
        probs = torch.stack([torch.softmax(m(x), 1) for m in rotated.members]).mean(0)  # one member at a time
    assert np.allclose(onnx_scores(tmp_path / "tta" / "model.onnx", tiny_splits.test_x[:50]),
                       probs.max(1).values.numpy(), atol=1e-5)


def test_an_ensemble_of_one_run_needs_views():
    from cnn_ocr.config import ConfigError

    with pytest.raises(ConfigError, match="averages nothing without ensemble.views"):
        load_params(overrides=["ensemble.members=1"])
    assert load_params(overrides=["ensemble.members=1", "ensemble.views=[[0, 0, 6]]"]).ensemble.views == [(0, 0, 6)]


@pytest.fixture()
def cnn_run(tracking_uri, tiny_splits, tiny_overrides):
    """A base CNN trained one epoch with outlier exposure (the default) on the tiny slice."""
    from cnn_ocr.train import train_model

    params = load_params(overrides=tiny_overrides)
    assert params.models.base_cnn.outlier_exposure.enabled
    return params, train_model("base_cnn", params, splits=tiny_splits)


def test_registration_carries_the_detector_and_the_gate_blocks_a_candidate_that_misses_it(cnn_run, tmp_path):
    params, run = cnn_run
    info, created = select.register_run(run.run_id, params)
    assert created and info.tags["ood_detector"] == params.ood.detector
    negatives_refused, digits_refused = float(info.tags[NEGATIVES_REFUSED]), float(info.tags[DIGITS_REFUSED])
    assert 0.0 <= negatives_refused < 1.0 and digits_refused <= params.ood.max_digit_refusal  # one tiny epoch

    folder = registry.download_onnx(info, tmp_path / "registered")
    spec = json.loads((folder / "spec.json").read_text())
    assert spec["ood"]["detector"] == info.tags["ood_detector"]
    assert spec["ood"]["threshold"] == pytest.approx(float(info.tags["ood_threshold"]))
    assert [o.name for o in _onnx(folder).get_outputs()] == ["logits", "ood_score"]

    # a target above what the candidate refuses: not promoted, challenger with the reason
    strict = params.select.model_copy(update={"min_negative_refusal": negatives_refused + 0.01})
    gated = select.promote(info, strict)
    assert gated.alias == CHALLENGER and "validation negatives" in gated.reason
    assert registry.alias_version(REGISTERED_MODEL, PRODUCTION) is None
    # selection with the same target does not promote either; with a target it meets, it does
    blocked = params.model_copy(update={"select": strict})
    outcome, _ = select.select_production(blocked)
    assert outcome.alias == CHALLENGER and registry.alias_version(REGISTERED_MODEL, PRODUCTION) is None
    lenient = params.select.model_copy(update={"min_negative_refusal": negatives_refused})
    outcome, _ = select.select_production(params.model_copy(update={"select": lenient}))
    assert outcome.alias == PRODUCTION and outcome.version.version == info.version


def test_auto_registers_the_detector_that_refuses_the_most_validation_negatives(cnn_run, tiny_splits):
    from cnn_ocr.ood.graph import framework_scores
    from cnn_ocr.ood.metrics import fit_threshold, refusal_rate
    from cnn_ocr.ood.registration import build_detector, candidates, validation_negatives
    from cnn_ocr.tracking.reading import load_model

    params, run = cnn_run
    params = params.model_copy(update={"ood": params.ood.model_copy(update={"detector": "auto"})})
    model, negatives = load_model(run.run_id), validation_negatives(params)
    refused = {}
    for name in DETECTORS:  # each detector set explicitly, measured as the gate would at 1 % of the digits refused
        fixed = params.model_copy(update={"ood": params.ood.model_copy(update={"detector": name})})
        detector = build_detector(model, "base_cnn", fixed, tiny_splits)
        assert detector.name == name
        threshold = fit_threshold(framework_scores(model, "base_cnn", detector, tiny_splits.val_x),
                                  params.ood.max_digit_refusal)
        refused[name] = refusal_rate(framework_scores(model, "base_cnn", detector, negatives), threshold)
    chosen = build_detector(model, "base_cnn", params, tiny_splits).name
    assert refused[chosen] == max(refused.values()), refused
    # an ensemble cannot carry Mahalanobis, the SVM only has its probabilities
    assert candidates("ensemble", params) == ("msp", "energy") and candidates("svm", params) == ("msp",)
