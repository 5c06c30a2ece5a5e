"""Not-a-digit detection: generated negatives, held-out families, detector scores and figures, outlier exposure."""

from __future__ import annotations

import copy
import os

import numpy as np
import pytest

from cnn_ocr.data import heldout
from cnn_ocr.data.hershey import AMBIGUOUS_LETTERS, HersheyError, letter_glyphs, parse_jhf, symbol_glyphs
from cnn_ocr.data.negatives import FAMILIES, build, load_negatives, write_negatives
from cnn_ocr.data.raw_store import CacheError
from cnn_ocr.ood import metrics
from cnn_ocr.ood.scores import Mahalanobis, energy, msp
from cnn_ocr.preprocess import MNIST_MEAN, MNIST_STD, to_model_input


@pytest.fixture(scope="module")
def small_negatives(project_params, tiny_splits):
    """Six drawings per family and split, from the tiny slice's training digits."""
    p = project_params.negatives.model_copy(update={"train_per_family": 6, "val_per_family": 3})
    return p, build(p, tiny_splits.train_x)


def test_negatives_are_seeded_model_inputs_of_every_family(small_negatives, tiny_splits):
    p, first = small_negatives
    again = build(p, tiny_splits.train_x)
    for split in ("train", "val"):
        assert np.array_equal(first[split].x, again[split].x) and np.array_equal(first[split].family, again[split].family)
        assert first[split].x.dtype == np.uint8 and first[split].x.shape[1:] == (28, 28)
        assert np.bincount(first[split].family, minlength=len(FAMILIES)).min() > 0
    x = to_model_input(first["train"].x)
    assert x.dtype == np.float32 and x.shape[1:] == (1, 28, 28)
    assert x.min() >= -MNIST_MEAN / MNIST_STD - 1e-6 and x.max() <= (1 - MNIST_MEAN) / MNIST_STD + 1e-6
    other = build(p.model_copy(update={"seed": p.seed + 1}), tiny_splits.train_x)
    assert not np.array_equal(other["train"].x, first["train"].x)
    assert not np.array_equal(first["train"].x[:3], first["val"].x[:3])  # validation negatives are other drawings


def test_no_ambiguous_letter_is_a_negative_or_scored():
    letters = {g.name.split(":", 1)[1] for g in letter_glyphs()}
    assert letters and not letters & AMBIGUOUS_LETTERS
    assert not set(heldout.HANDWRITING_LETTERS) & AMBIGUOUS_LETTERS
    assert {"A", "k", "W"} <= letters and len(symbol_glyphs()) > 50


def test_jhf_records_parse_into_strokes():
    # glyph 1, 5 vertices (margins + 4 points): a stroke of two points, pen up, a stroke of one point
    glyphs = parse_jhf("    1  5JZRFRT RNK\n")
    assert glyphs == [[[(0.0, -12.0), (0.0, 2.0)], [(-4.0, -7.0)]]]


def test_missing_hershey_font_names_the_package(tmp_path):
    with pytest.raises(HersheyError, match="hershey-fonts-data"):
        letter_glyphs(tmp_path)


def test_negatives_version_is_written_verified_and_loaded(project_params, tiny_splits, tmp_path):
    data = project_params.data.model_copy(update={"processed_dir": tmp_path})
    p = project_params.negatives.model_copy(update={"train_per_family": 2, "val_per_family": 2})
    folder = write_negatives(p, data, tiny_splits.train_x)
    loaded = load_negatives(p.version, data)
    assert folder.name == p.version and len(loaded["train"].x) == 2 * len(FAMILIES)
    assert not [f for f in tmp_path.iterdir() if f.name.startswith(".")]  # nothing half-written left behind
    np.save(folder / "val_x.npy", np.zeros((1, 28, 28), np.uint8))
    with pytest.raises(CacheError):
        load_negatives(p.version, data)


def _package(path) -> None:
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{path} is missing: `make system-deps` installs the Debian package")
        pytest.skip(f"{path} is not installed")


@pytest.mark.parametrize(("name", "path"), [("fashion", heldout.FASHION_DIR), ("handwriting", heldout.HANDWRITING_DIR),
                                            ("pictograms", heldout.AWESOME_TTF)])
def test_heldout_families_load_through_the_preprocessing(name, path):
    _package(path)
    fam = heldout.LOADERS[name](30, seed=1)
    assert fam.total == 30 and fam.x.dtype == np.uint8 and fam.x.shape[1:] == (28, 28) and len(fam.x) >= 15
    assert np.array_equal(heldout.LOADERS[name](30, seed=1).x, fam.x)


def test_missing_heldout_package_is_named(tmp_path):
    with pytest.raises(heldout.HeldoutError, match="fonts-dkg-handwriting"):
        heldout.handwriting(3, folder=tmp_path / "none")


def test_auroc_and_fpr_on_constructed_scores():
    digits, others = np.arange(10, 20.0), np.arange(0, 10.0)
    assert metrics.auroc(digits, others) == 1.0 and metrics.auroc(others, digits) == 0.0
    assert metrics.auroc(np.ones(5), np.ones(7)) == 0.5
    assert metrics.fpr_at_tpr(digits, others) == 0.0
    assert metrics.fpr_at_tpr(np.arange(100.0), np.arange(100.0)) == pytest.approx(0.96)
    assert metrics.auroc([1.0, 3.0], [2.0]) == 0.5


def test_threshold_refuses_at_most_the_allowed_share_of_validation_digits():
    scores = np.random.default_rng(0).normal(size=1000)
    threshold = metrics.fit_threshold(scores, 0.01)
    assert metrics.refusal_rate(scores, threshold) <= 0.01
    assert metrics.refusal_rate(scores, np.nextafter(threshold, np.inf)) > 0.01  # the highest such threshold
    assert metrics.refusal_rate(np.array([5.0]), threshold, refused_before=3) == 0.75


def test_ece_and_reliability_on_constructed_probabilities():
    sure = np.tile(np.eye(10)[0], (4, 1))
    assert metrics.ece(sure, np.zeros(4, int)) == 0.0
    assert metrics.ece(sure, np.array([0, 0, 1, 1])) == pytest.approx(0.5)
    bins = metrics.reliability(sure, np.array([0, 0, 1, 1]), 15)
    assert len(bins) == 15 and bins[-1]["count"] == 4 and bins[-1]["accuracy"] == 0.5


def test_scores_rank_confident_and_near_inputs_higher():
    logits = np.array([[10.0, 0, 0], [1.0, 1.0, 1.0]])
    assert msp(logits)[0] > msp(logits)[1] and msp(logits)[1] == pytest.approx(1 / 3)
    assert energy(logits) == pytest.approx([10 + np.log(1 + 2 * np.exp(-10)), 1 + np.log(3)])
    rng = np.random.default_rng(0)
    feats = np.concatenate([rng.normal(0, 1, (200, 4)), rng.normal(8, 1, (200, 4))])
    maha = Mahalanobis.fit(feats, np.repeat([0, 1], 200))
    near, far = maha.score(np.array([[0.0] * 4, [8.0] * 4])), maha.score(np.array([[30.0] * 4]))
    assert near.min() > far.max() and near.max() == pytest.approx(0.0, abs=0.2)


@pytest.fixture(scope="module")
def oe_model(project_params, tiny_splits, small_negatives):
    """A tiny base CNN trained with outlier exposure on 600 digits and the drawn negatives."""
    import torch

    from cnn_ocr import families
    from cnn_ocr.fit import torch_loop

    p = project_params.negatives.model_copy(update={"train_per_family": 60, "val_per_family": 20})
    negs = build(p, tiny_splits.train_x)
    fp = project_params.models.base_cnn.model_copy(update={
        "epochs": 8, "max_train_samples": None, "batch_size": 64,
        "outlier_exposure": project_params.models.base_cnn.outlier_exposure.model_copy(update={"enabled": True})})

    def t(x):
        return torch.from_numpy(to_model_input(x))

    with torch_loop.seeded(0, "cpu"):
        model = families.get("base_cnn").build(fp)
        torch_loop.fit(model, (t(tiny_splits.train_x), torch.from_numpy(tiny_splits.train_y)),
                       (t(tiny_splits.val_x), torch.from_numpy(tiny_splits.val_y)), fp, seed=0,
                       negatives=t(negs["train"].x))
    return model.eval(), negs


@pytest.mark.parametrize("augment", [True, False])
def test_negatives_go_through_the_digits_resampling(project_params, tiny_splits, small_negatives, augment):
    """With augmentation on, the negatives of a batch are resampled like its digits; a crisp negative beside
    resampled digits would let the network tell them apart by the resampling's blur alone."""
    import torch
    from torch import nn

    from cnn_ocr.fit import torch_loop

    class Recorder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear, self.batches = nn.Linear(28 * 28, 10), []

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.training:
                self.batches.append(x.detach().clone())
            return self.linear(x.flatten(1))

    base = project_params.models.improved_cnn
    fp = base.model_copy(update={
        "epochs": 1, "batch_size": 32, "epoch_samples": None, "patience": None, "ema_decay": None,
        "augment": base.augment.model_copy(update={"enabled": augment}),
        "outlier_exposure": base.outlier_exposure.model_copy(update={"enabled": True})})
    negatives = torch.from_numpy(to_model_input(small_negatives[1]["train"].x))
    model = Recorder()
    torch_loop.fit(model, (torch.from_numpy(to_model_input(tiny_splits.train_x[:64])),
                           torch.from_numpy(tiny_splits.train_y[:64].astype(np.int64))),
                   (torch.from_numpy(to_model_input(tiny_splits.val_x[:32])),
                    torch.from_numpy(tiny_splits.val_y[:32].astype(np.int64))), fp, seed=0, negatives=negatives)
    halves = [b[len(b) // 2:].flatten(1) for b in model.batches]
    assert len(halves) == 2 and all(len(h) == 32 for h in halves)
    stored = negatives.flatten(1)
    exact = [bool((torch.cdist(h, stored).min(1).values < 1e-5).all()) for h in halves]
    assert exact == [not augment] * 2  # every row a stored negative as it is, or none left unresampled
    resampled = [bool((torch.cdist(h, stored).min(1).values > 1e-3).all()) for h in halves]
    assert resampled == [augment] * 2


@pytest.mark.parametrize("head_convs", [0, 1])
def test_head_mode_refits_only_the_head_on_frozen_features(project_params, tiny_splits, oe_model, head_convs):
    """`mode: head`: the schedule trains on digits alone (the same weights as without outlier exposure), then only
    the dense head and the last `head_convs` conv layers are re-fitted with negatives: the layers before them stay
    exactly as they were, the rest moves, and the validation negatives are refused far more often at the same
    digit refusal."""
    import torch

    from cnn_ocr import families
    from cnn_ocr.fit import torch_loop
    from cnn_ocr.ood.report import model_outputs

    base = project_params.models.base_cnn
    head_oe = base.outlier_exposure.model_copy(update={"enabled": True, "mode": "head", "head_epochs": 3,
                                                       "head_lr": 0.003, "head_convs": head_convs})

    def t(x):
        return torch.from_numpy(to_model_input(x))

    negs = oe_model[1]  # the drawings the joint model trained on
    train = (t(tiny_splits.train_x), torch.from_numpy(tiny_splits.train_y))
    val = (t(tiny_splits.val_x), torch.from_numpy(tiny_splits.val_y))

    def trained(oe, model=None, **kw):
        fp = base.model_copy(update={"epochs": 6, "max_train_samples": None, "batch_size": 64, "outlier_exposure": oe})
        with torch_loop.seeded(0, "cpu"):
            model = model or families.get("base_cnn").build(fp)
            result = torch_loop.fit(model, train, val, fp, seed=0, negatives=t(negs["train"].x), **kw)
        return model.eval(), result

    plain, plain_fit = trained(head_oe.model_copy(update={"enabled": False}))
    states: list[dict] = []
    head, head_fit = trained(head_oe, on_checkpoint=lambda s: states.append(copy.deepcopy(s)))
    assert [s["epoch"] for s in states] == [1, 2, 3, 4, 5, 6]  # checkpoints of the schedule's epochs
    for state in (states[2], states[-1]):  # interrupted in the schedule, or in the head phase: the same weights
        again, again_fit = trained(head_oe, resume=state)
        assert all(torch.equal(v, head.state_dict()[k]) for k, v in again.state_dict().items())
        assert again_fit.history == [dict(r, epoch_time_s=a["epoch_time_s"]) for r, a in
                                     zip(head_fit.history, again_fit.history, strict=True)]
    before, after = plain.state_dict(), head.state_dict()
    moved = [k for k in before if not torch.equal(before[k], after[k])]
    # base CNN features: conv (0), relu, pool, conv (3), relu, pool
    assert {k.rsplit(".", 1)[0] for k in moved} == {"features.3", "classifier.1", "classifier.4"} - (
        {"features.3"} if head_convs == 0 else set())
    assert all(q.requires_grad for q in head.parameters())  # the freeze is undone
    assert (head_fit.epochs_run, head_fit.head_epochs, len(head_fit.history)) == (9, 3, 9)
    assert [r["epoch"] for r in head_fit.history] == list(range(1, 10)) and plain_fit.epochs_run == 6

    def refused(model):
        threshold = metrics.fit_threshold(msp(model_outputs(model, tiny_splits.val_x).logits), 0.05)
        return metrics.refusal_rate(msp(model_outputs(model, negs["val"].x).logits), threshold)

    assert refused(head) >= refused(plain) + 0.2, (refused(head), refused(plain))
    with pytest.raises(ValueError, match="head_convs is 3 but the model has 2 conv layers"):
        trained(head_oe.model_copy(update={"head_convs": 3}))
    with pytest.raises(ValueError, match="mode head needs a model with `features` and `classifier`"):
        trained(head_oe, torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)))


def test_outlier_exposure_refuses_letters_and_scribbles_but_not_digits(oe_model, tiny_splits, project_params):
    """Fresh drawings (a seed training never used) at the threshold fitted on validation digits. A model trained
    on 600 digits reliably reaches these levels (measured: letters ~0.6, scribbles ~0.75, digits ~0.07)."""
    from cnn_ocr.data.hershey import letter_glyphs, symbol_glyphs
    from cnn_ocr.data.negatives import Sources, generate
    from cnn_ocr.ood.report import model_outputs

    model, negs = oe_model
    threshold = metrics.fit_threshold(msp(model_outputs(model, tiny_splits.val_x).logits), 0.05)
    src = Sources(tiny_splits.train_x, letter_glyphs(), symbol_glyphs())
    p = project_params.negatives

    def refused(images: np.ndarray) -> float:
        return metrics.refusal_rate(msp(model_outputs(model, images).logits), threshold)

    assert refused(generate("letters", 30, 999, p, src)) >= 0.4
    assert refused(generate("scribbles", 30, 999, p, src)) >= 0.5
    assert refused(tiny_splits.test_x) <= 0.12
    assert refused(negs["val"].x) >= 0.5


def test_training_run_logs_detector_figures(project_params, tiny_overrides, tracking_uri, tmp_path):
    import mlflow

    from cnn_ocr.config import load_params
    from cnn_ocr.train import train_model

    params = load_params(overrides=[*tiny_overrides, "negatives.train_per_family=8", "negatives.val_per_family=8",
                                    "ood.heldout_samples=20", "models.base_cnn.outlier_exposure.enabled=true",
                                    f"data.processed_dir={tmp_path / 'processed'}"])
    from cnn_ocr.data.prepare import write_version  # the tiny slice, in this test's own folder
    from cnn_ocr.data.versions import load_version
    tiny = load_version("v2.0", load_params(overrides=tiny_overrides).data)
    arrays = {k: getattr(tiny, k) for k in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")}
    write_version(tmp_path / "processed" / "v2.0", arrays, {"name": "v2.0", "description": "tiny", "dataset": "mnist"})
    result = train_model("base_cnn", params, experiment="ood-test")
    run = mlflow.get_run(result.run_id)
    for key in ("ood_threshold", "ood_mnist_test_refused", "ood_msp_auroc_val_negatives",
                "ood_mahalanobis_refused_val_negatives", "ood_energy_ece_accepted"):
        assert key in run.data.metrics
    assert 0.0 <= run.data.metrics["ood_mnist_test_refused"] <= 1.0
    artifacts = {a.path for a in mlflow.artifacts.list_artifacts(run_id=result.run_id, artifact_path="plots")}
    assert "plots/reliability.png" in artifacts


@pytest.mark.parametrize("name", ["msp", "energy", "mahalanobis"])
def test_exported_graph_carries_the_score_and_the_spec_its_threshold(oe_model, tiny_splits, tmp_path, name):
    import onnxruntime as ort

    from cnn_ocr.export import export_model
    from cnn_ocr.ood.graph import Detector, onnx_scores
    from cnn_ocr.ood.report import model_outputs
    from cnn_ocr.ood.scores import Mahalanobis
    from cnn_ocr.spec import ONNX_FILE, read_spec

    model, negs = oe_model
    train = model_outputs(model, tiny_splits.train_x)
    maha = Mahalanobis.fit(train.features, tiny_splits.train_y)
    numpy_score = {"msp": lambda o: msp(o.logits), "energy": lambda o: energy(o.logits),
                   "mahalanobis": lambda o: maha.score(o.features)}[name]
    threshold = metrics.fit_threshold(numpy_score(model_outputs(model, tiny_splits.val_x)), 0.05)
    detector = Detector(name, threshold, mahalanobis=maha if name == "mahalanobis" else None)
    images = np.concatenate([tiny_splits.test_x[:100], negs["val"].x[:50]])
    export_model(model, "base_cnn", val=(tiny_splits.val_x, tiny_splits.val_y), test_images=images,
                 dest=tmp_path / "m", model_block={"name": "t"}, detector=detector)
    spec = read_spec(tmp_path / "m")
    assert spec.ood is not None and (spec.ood.detector, spec.ood.threshold) == (name, pytest.approx(threshold))
    session = ort.InferenceSession(str(tmp_path / "m" / ONNX_FILE), providers=["CPUExecutionProvider"])
    spec.check_session(session)
    ours = spec.ood_scores(session, images)
    assert np.allclose(ours, onnx_scores(tmp_path / "m" / ONNX_FILE, images))
    expected = numpy_score(model_outputs(model, images))
    assert np.allclose(ours, expected, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(expected).max())))


def test_ood_benchmark_smoke(mnist_splits, tmp_path):
    import json

    from benchmarks import __main__ as bench_cli

    assert bench_cli.main(["ood", "--smoke", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "ood.json").read_text())
    assert data["mode"] == "smoke" and set(data["figures"]["models"]) == {"plain", "outlier_exposure"}
    for model in data["figures"]["models"].values():
        assert set(model["detectors"]) == {"msp", "energy", "mahalanobis"}
        assert 0.0 <= model["detectors"]["energy"]["mnist_test_refused"] <= 1.0
    assert data["figures"]["best"]["detector"] in {"msp", "energy", "mahalanobis"} and len(data["targets"]) == 6
